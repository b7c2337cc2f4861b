/**
 * `continueSession`: the text and tokens of a generation continued over capped requests equal one
 * uncapped request's, greedy and with seeded sampling, with stop strings, in both formats, inline
 * and stored; retries of busy and unavailable answers; errors as `EdgeClientError`.
 * @module
 */

import assert from "node:assert/strict";
import {
  continueSession,
  type ContinueSessionOptions,
  EdgeClientError,
  samplingFields,
} from "../../src/edge/client.ts";
import { createEdgeHandler } from "../../src/edge/handler.ts";
import { loadModel } from "../../src/load.ts";
import { MemorySessionStore } from "../../src/state/memory_store.ts";

const model = loadModel(undefined, { backend: "cpu" });
const capped = createEdgeHandler({ loaded: model, maxTokensPerRequest: 7 });
const uncapped = createEdgeHandler({ loaded: model, maxTokensPerRequest: 0 });

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name: `edge client: ${name}`, sanitizeOps: false, sanitizeResources: false, fn });

async function collect(
  fetch: (r: Request) => Promise<Response>,
  prompt: string,
  opts: ContinueSessionOptions,
) {
  let text = "";
  const tokens: number[] = [];
  let requests = 0;
  let last: Uint8Array | undefined;
  let finish = "";
  for await (const c of continueSession("http://edge", prompt, { ...opts, fetch })) {
    text += c.text;
    tokens.push(...c.tokens);
    requests++;
    last = c.state;
    finish = c.finishReason;
  }
  return { text, tokens, requests, state: last, finish };
}

test("sampling fields go out in snake case", () => {
  assert.deepEqual(samplingFields({ temperature: 0.5, topK: 4, topP: 0.9, minP: 0.1, seed: 3 }), {
    temperature: 0.5,
    top_k: 4,
    top_p: 0.9,
    min_p: 0.1,
    seed: 3,
  });
  assert.deepEqual(samplingFields({ logitBias: new Map([[5, -100]]) }), {
    logit_bias: { 5: -100 },
  });
  return Promise.resolve();
});

for (const format of ["msgpack", "json"] as const) {
  for (
    const [label, sampling] of [
      ["greedy", { temperature: 0 }],
      ["seeded", { temperature: 0.9, topK: 40, seed: 1234 }],
      ["seeded with penalties", { temperature: 1, seed: 7, repetitionPenalty: 1.3 }],
    ] as const
  ) {
    test(`${format}, ${label}: 60 tokens over capped requests equal one request`, async () => {
      const opts = { maxTokens: 60, sampling, format };
      const a = await collect(capped, "ROMEO:", opts);
      const b = await collect(uncapped, "ROMEO:", opts);
      assert.equal(a.requests, 9);
      assert.equal(b.requests, 1);
      assert.deepEqual(a.tokens, b.tokens);
      assert.equal(a.text, b.text);
      assert.equal(a.tokens.length, 60);
    });
  }
}

test("stop strings across the cuts: the same text, ending at the stop", async () => {
  for (const stop of [["KING"], ["\n\n"], ["man, sir"]]) {
    const opts = { maxTokens: 200, sampling: { temperature: 0 }, stop };
    const a = await collect(capped, "KING RICHARD III:", opts);
    const b = await collect(uncapped, "KING RICHARD III:", opts);
    assert.equal(a.text, b.text, `stop ${JSON.stringify(stop)}`);
    assert.equal(a.finish, b.finish);
    assert.equal(a.finish, "stop");
    assert.ok(a.requests > 1);
  }
});

test("partial UTF-8 characters and stop matches held across cuts of 1 and 2 tokens", async () => {
  // Byte-fallback pieces 0xC3 and 0xA9 boosted: "é" spans two tokens, often split by a cut.
  const sampling = { temperature: 1, topK: 2, seed: 1, logitBias: { 198: 99, 172: 100 } };
  const one = await collect(uncapped, "ROMEO:", { maxTokens: 24, sampling });
  assert.ok(one.text.includes("é"), JSON.stringify(one.text));
  for (const cap of [1, 2]) {
    const h = createEdgeHandler({ loaded: model, maxTokensPerRequest: cap });
    const a = await collect(h, "ROMEO:", { maxTokens: 24, sampling });
    assert.equal(a.requests, 24 / cap);
    assert.equal(a.text, one.text, `cap ${cap}`);
    const stop = ["man, sir"];
    const s1 = await collect(h, "KING RICHARD III:", {
      maxTokens: 60,
      sampling: { temperature: 0 },
      stop,
    });
    const s0 = await collect(uncapped, "KING RICHARD III:", {
      maxTokens: 60,
      sampling: { temperature: 0 },
      stop,
    });
    assert.equal(s1.text, s0.text);
    assert.equal(s1.finish, "stop");
  }
});

test("a session goes on later from its last state, still equal to one run", async () => {
  const first = await collect(capped, "JULIET:", {
    maxTokens: 10,
    sampling: { temperature: 0.8, seed: 2 },
  });
  const rest = await collect(capped, "", { maxTokens: 20, state: first.state });
  const one = await collect(uncapped, "JULIET:", {
    maxTokens: 30,
    sampling: { temperature: 0.8, seed: 2 },
  });
  assert.equal(first.text + rest.text, one.text);
});

test("stored sessions: the loop carries the id", async () => {
  const store = new MemorySessionStore();
  const h = createEdgeHandler({ loaded: model, store, maxTokensPerRequest: 6 });
  const opts = { maxTokens: 25, sampling: { temperature: 0 } };
  let session = "";
  let n = 0;
  let text = "";
  for await (
    const c of continueSession("http://edge/v1/generate", "ROMEO:", { ...opts, fetch: h })
  ) {
    assert.equal(c.state, undefined);
    session ||= c.session;
    assert.equal(c.session, session);
    assert.equal(c.request, n++);
    text += c.text;
  }
  assert.equal(n, 5);
  assert.equal(text, (await collect(uncapped, "ROMEO:", opts)).text);
  assert.equal(await store.size(), 1);
});

test("retries 409 with Retry-After and 503; other errors throw EdgeClientError", async () => {
  let calls = 0;
  const flaky = async (r: Request) => {
    calls++;
    if (calls === 1) return new Response("{}", { status: 503, headers: { "retry-after": "1" } });
    if (calls === 2) return new Response("{}", { status: 409, headers: { "retry-after": "1" } });
    return await capped(r);
  };
  const out = await collect(flaky, "ROMEO:", { maxTokens: 3, retryDelayMs: 1 });
  assert.equal(out.tokens.length, 3);
  assert.equal(calls, 3);
  await assert.rejects(
    collect(capped, "ROMEO:", { maxTokens: 3, sampling: { temperature: -1 } }),
    (e: unknown) => e instanceof EdgeClientError && e.status === 400 && e.param === "temperature",
  );
  const busy = () =>
    Promise.resolve(new Response("{}", { status: 409, headers: { "retry-after": "0" } }));
  await assert.rejects(
    collect(busy, "x", { retries: 2, retryDelayMs: 1 }),
    (e: unknown) => e instanceof EdgeClientError && e.status === 409,
  );
});
