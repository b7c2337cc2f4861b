/**
 * The prefix-state cache on the CPU backend: cached starts equal cold ones bit for bit, the byte
 * budget evicts the least recently used states, states of another model are never used, and
 * concurrent requests sharing a prefix capture it once.
 */

import assert from "node:assert/strict";
import { DEFAULT_MODEL_DIR, loadModel } from "../../src/load.ts";
import { stateBytes } from "../../src/model/state.ts";
import { MemorySessionStore } from "../../src/state/memory_store.ts";
import { PrefixCache } from "../../src/sessions/mod.ts";
import {
  assertSameState,
  cacheFor,
  checkCachedEqualsCold,
  heldOutTokens,
  run,
} from "./prefix_support.ts";

// A small chunk keeps the prompts short; the rule is the same at any chunk.
const model = await loadModel(DEFAULT_MODEL_DIR, { backend: "cpu", engine: { prefillChunk: 64 } });
const engine = model.engine();
const text = await heldOutTokens(model);
const greedy = { temperature: 0 };

Deno.test("prefix cache (cpu): cached and cold continuations are identical, states bit for bit", async () => {
  await checkCachedEqualsCold(model, engine, { prefix: 200, tails: [10, 75] }, true);
});

Deno.test("prefix cache (cpu): the captured state is the cold prefill's state at the boundary", async () => {
  const cache = cacheFor(model, engine);
  const prompt = text.subarray(0, 140); // consumes 139: captures 128
  await run(engine, prompt, greedy, cache, 1);
  const plan = await cache.plan(text.subarray(0, 130));
  assert.equal(plan.hit?.position, 128);
  const cold = engine.newSession();
  for await (
    const _ of engine.generate({ session: cold, prompt: text.subarray(0, 129), maxTokens: 0 })
  ) {
    // consume the prompt only
  }
  assertSameState(plan.hit!.state, cold.state, "boundary state");
});

Deno.test("prefix cache (cpu): the byte budget evicts the least recently used states", async () => {
  const one = stateBytes(model.config);
  const cache = cacheFor(model, engine, Math.floor(one * 2.5));
  const prompts = [0, 1000, 2000].map((o) => text.subarray(o, o + 70)); // each captures 64
  for (const p of prompts) await run(engine, p, greedy, cache, 1);
  const s = cache.stats();
  assert.equal(s.captures, 3);
  assert.equal(s.evictions, 1);
  assert.equal(s.entries, 2);
  assert.ok(s.bytes <= cache.maxBytes, `${s.bytes} ≤ ${cache.maxBytes}`);
  assert.equal((await cache.plan(prompts[0])).hit, null, "the oldest is gone");
  assert.equal((await cache.plan(prompts[2])).hit?.position, 64);
  // Using the middle one makes the newest the least recently used.
  assert.equal((await cache.plan(prompts[1])).hit?.position, 64);
  await run(engine, text.subarray(3000, 3070), greedy, cache, 1);
  assert.equal((await cache.plan(prompts[2])).hit, null);
  assert.equal((await cache.plan(prompts[1])).hit?.position, 64);
  // A budget below one state keeps nothing.
  const tiny = cacheFor(model, engine, one - 1);
  await run(engine, prompts[0], greedy, tiny, 1);
  assert.equal(tiny.stats().entries, 0);
  assert.equal(tiny.stats().bytes, 0);
});

Deno.test("prefix cache (cpu): a prefix cached under another model fingerprint is never used", async () => {
  const prompt = text.subarray(0, 140);
  // In memory: the key names the fingerprint, the backend and the chunk.
  const ours = cacheFor(model, engine);
  await run(engine, prompt, greedy, ours, 1);
  for (
    const other of [
      { modelFingerprint: "0".repeat(64), backend: model.backend.kind, chunk: 64 },
      { modelFingerprint: model.fingerprint, backend: "webgpu", chunk: 64 },
      { modelFingerprint: model.fingerprint, backend: model.backend.kind, chunk: 32 },
    ]
  ) {
    const keysA = await ours.keys(prompt, 128);
    const keysB = await new PrefixCache(other).keys(prompt, 128);
    assert.notDeepEqual(keysA.at(-1), keysB.at(-1), JSON.stringify(other));
  }
  // Shared through a store: a state written for another model under our key is refused.
  const store = new MemorySessionStore();
  const codec = {
    config: model.config,
    modelFingerprint: model.fingerprint,
    tokenizerFingerprint: model.tokenizer.fingerprint,
  };
  const identity = {
    modelFingerprint: model.fingerprint,
    backend: model.backend.kind,
    chunk: engine.prefillChunk,
  };
  const forged = new PrefixCache({
    ...identity,
    shared: { store, codec: { ...codec, modelFingerprint: "f".repeat(64) } },
  });
  await run(engine, prompt, greedy, forged, 1);
  await waitFor(async () => (await store.size()) === 1);
  const reader = new PrefixCache({ ...identity, shared: { store, codec } });
  assert.equal((await reader.plan(prompt)).hit, null, "another model's state is a miss");
  // The same prefix written with our fingerprint is found, and gives the cold tokens.
  const writer = new PrefixCache({ ...identity, shared: { store, codec } });
  await store.delete((await store.ids!({ limit: 10 }))[0]);
  await run(engine, prompt, greedy, writer, 1);
  await waitFor(async () => (await store.size()) === 1);
  const fresh = new PrefixCache({ ...identity, shared: { store, codec } });
  const warm = await run(engine, text.subarray(0, 150), greedy, fresh);
  const cold = await run(engine, text.subarray(0, 150), greedy, null);
  assert.equal(warm.cached, 128);
  assert.equal(fresh.stats().sharedHits, 1);
  assert.deepEqual(warm.tokens, cold.tokens);
  assertSameState(warm.state, cold.state, "shared start");
});

Deno.test("prefix cache (cpu): concurrent requests sharing a prefix capture it once", async () => {
  const cache = cacheFor(model, engine);
  const prefix = text.subarray(8000, 8200);
  const prompts = [0, 1, 2].map((i) => {
    const p = new Int32Array(230);
    p.set(prefix);
    p.set(text.subarray(9000 + 40 * i, 9030 + 40 * i), 200);
    return p;
  });
  const cold = await Promise.all(prompts.map((p) => run(engine, p, greedy, null)));
  const warm = await Promise.all(prompts.map((p) => run(engine, p, greedy, cache)));
  warm.forEach((w, i) => {
    assert.deepEqual(w.tokens, cold[i].tokens, `request ${i}`);
    assertSameState(w.state, cold[i].state, `request ${i}`);
  });
  assert.equal(cache.stats().captures, 1, "one capture of the shared boundary");
  const next = await run(engine, prompts[2], greedy, cache);
  assert.equal(next.cached, 192);
  assert.deepEqual(next.tokens, cold[2].tokens);
});

Deno.test("prefix cache (cpu): bad options are refused", () => {
  const id = { modelFingerprint: "x", backend: "cpu" };
  assert.throws(() => new PrefixCache({ ...id, chunk: 0 }), /chunk/);
  assert.throws(() => new PrefixCache({ ...id, chunk: 64, maxBytes: -1 }), /maxBytes/);
});

async function waitFor(ok: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await ok()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error("timed out waiting");
}
