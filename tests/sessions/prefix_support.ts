/**
 * The prefix-cache check shared by the CPU and WebGPU tests: a request that starts from a cached
 * prefix gives the tokens (and, where asked, the bit-identical final state) of a cold start.
 * @module
 */

import assert from "node:assert/strict";
import type { Engine } from "../../src/engine/engine.ts";
import type { SamplingParams } from "../../src/engine/sampler.ts";
import type { ModelState } from "../../src/model/state.ts";
import { generateOnSession, PrefixCache } from "../../src/sessions/mod.ts";
import type { TnlModel } from "../../src/load.ts";

/** Held-out Shakespeare, tokenized (far longer than any prompt here). */
export async function heldOutTokens(model: TnlModel): Promise<Int32Array> {
  const text = await Deno.readTextFile(
    new URL("../../bench/data/shakespeare_heldout.txt", import.meta.url),
  );
  return model.tokenizer.encode(text);
}

/** A cache for this model's engine. */
export function cacheFor(model: TnlModel, engine: Engine, maxBytes?: number): PrefixCache {
  return new PrefixCache({
    modelFingerprint: model.fingerprint,
    backend: model.backend.kind,
    chunk: engine.prefillChunk,
    maxBytes,
  });
}

/** What one generation gave. */
export interface Outcome {
  tokens: number[];
  state: ModelState;
  promptTokens: number;
  cached: number;
}

/** Generate on a new session (through `cache` when given) and keep its final state. */
export async function run(
  engine: Engine,
  prompt: Int32Array,
  sampling: SamplingParams,
  cache: PrefixCache | null,
  maxTokens = 8,
): Promise<Outcome> {
  const session = engine.newSession();
  const r = await generateOnSession(
    engine,
    { session, prompt, sampling, maxTokens, stopAtEos: false },
    { prefixCache: cache },
  );
  const tokens: number[] = [];
  let promptTokens = -1;
  for await (const ev of r.events) {
    if (ev.type === "token") tokens.push(...ev.tokens);
    else {
      if (ev.finishReason === "error") throw ev.error;
      promptTokens = ev.usage.promptTokens;
    }
  }
  return { tokens, state: session.state, promptTokens, cached: r.cachedTokens };
}

/** Two states equal bit for bit. */
export function assertSameState(a: ModelState, b: ModelState, what: string): void {
  assert.equal(a.position, b.position, `${what}: position`);
  a.layers.forEach((l, i) =>
    assert.deepEqual(
      new Uint32Array(l.buffer, l.byteOffset, l.length),
      new Uint32Array(b.layers[i].buffer, b.layers[i].byteOffset, b.layers[i].length),
      `${what}: layer ${i}`,
    )
  );
}

/**
 * For greedy and seeded sampling: a prompt run cold, then through the cache (capturing its last
 * boundary), then again (a hit), and a second prompt sharing the prefix with another tail (a hit):
 * every cached run gives the cold run's tokens and prompt count, and (`bitExact`) its final state.
 */
export async function checkCachedEqualsCold(
  model: TnlModel,
  engine: Engine,
  lengths: { prefix: number; tails: [number, number] },
  bitExact: boolean,
  maxTokens = 8,
): Promise<void> {
  const text = await heldOutTokens(model);
  const C = engine.prefillChunk;
  const prefix = text.subarray(0, lengths.prefix);
  const prompts = lengths.tails.map((n, i) => {
    const p = new Int32Array(lengths.prefix + n);
    p.set(prefix);
    p.set(text.subarray(5000 + i * 500, 5000 + i * 500 + n), lengths.prefix);
    return p;
  });
  const boundary = Math.floor((prompts[0].length - 1) / C) * C;
  assert.ok(boundary >= C && boundary <= lengths.prefix, "the test's boundary is in the prefix");
  const samplings: SamplingParams[] = [
    { temperature: 0 },
    { temperature: 0.9, topK: 40, topP: 0.95, seed: 7 },
  ];
  for (const sampling of samplings) {
    const what = JSON.stringify(sampling);
    const cache = cacheFor(model, engine);
    const cold = await Promise.all(prompts.map((p) => run(engine, p, sampling, null, maxTokens)));
    const first = await run(engine, prompts[0], sampling, cache, maxTokens);
    assert.equal(first.cached, 0, what);
    assert.equal(cache.stats().captures, 1, `${what}: the last boundary is captured`);
    const again = await run(engine, prompts[0], sampling, cache, maxTokens);
    const other = await run(engine, prompts[1], sampling, cache, maxTokens);
    assert.equal(again.cached, boundary, what);
    assert.equal(other.cached, Math.min(boundary, Math.floor((prompts[1].length - 1) / C) * C));
    for (
      const [warm, base, name] of [
        [first, cold[0], "capturing run"],
        [again, cold[0], "cached run"],
        [other, cold[1], "other tail"],
      ] as const
    ) {
      assert.deepEqual(warm.tokens, base.tokens, `${what}: ${name} tokens`);
      assert.equal(warm.promptTokens, base.promptTokens, `${what}: ${name} prompt tokens`);
      if (bitExact) assertSameState(warm.state, base.state, `${what}: ${name}`);
    }
    const s = cache.stats();
    assert.equal(s.hits, 2, what);
    assert.equal(s.tokensSkipped, again.cached + other.cached, what);
  }
}
