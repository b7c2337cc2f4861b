import assert from "node:assert/strict";
import { MemorySessionStore } from "../../src/state/memory_store.ts";
import { decodeSession } from "../../src/state/codec.ts";
import { cpuModel, expectError, jsonOf, post, testApp } from "../http/support.ts";

const model = await cpuModel();
const codec = {
  config: model.config,
  modelFingerprint: model.fingerprint,
  tokenizerFingerprint: model.tokenizer.fingerprint,
};

Deno.test("session manager: two processes on one store never lose a write (compare-and-set → 409)", async () => {
  const store = new MemorySessionStore();
  const a = await testApp({ store });
  const b = await testApp({ store });
  const s = await jsonOf(await post(a.app, "/v1/sessions", { prompt: "ROMEO:" }), 201);
  const id = s.id as string;
  // A's request is long (400 tokens, hundreds of ms even on a fast machine) so that B's one-token
  // request, started once A's is under way, saves first however loaded the machine is.
  const slow = post(a.app, `/v1/sessions/${id}/completions`, { max_tokens: 400, temperature: 0 });
  await new Promise((r) => setTimeout(r, 50));
  // "Process" B (its own busy set) continues the same session meanwhile and saves first.
  await jsonOf(
    await post(b.app, `/v1/sessions/${id}/completions`, { max_tokens: 1, temperature: 0 }),
  );
  const e = await expectError(await slow, 409);
  assert.equal(e.code, "conflict");
  const info = await jsonOf(await a.app.request(`/v1/sessions/${id}`));
  assert.equal(info.generation, 2);
  assert.equal(info.tokens, (s.tokens as number) + 1);
});

Deno.test("session manager: a cached live session is not used once another process has written", async () => {
  const store = new MemorySessionStore();
  const a = await testApp({ store });
  const b = await testApp({ store });
  const s = await jsonOf(await post(a.app, "/v1/sessions", { prompt: "KING:" }), 201);
  const id = s.id as string;
  const step = async (app: typeof a.app, n: number) =>
    await jsonOf(
      await post(app, `/v1/sessions/${id}/completions`, { max_tokens: n, temperature: 0 }),
    );
  await step(a.app, 2); // A caches the live session
  await step(b.app, 3); // B writes a newer generation
  await step(a.app, 4); // A must decode B's state, not reuse its cached object
  const snap = await decodeSession(
    new Uint8Array(await (await a.app.request(`/v1/sessions/${id}/state`)).arrayBuffer()),
    codec,
  );
  assert.equal(snap.generation, 4);
  assert.equal(snap.tokens!.length, (s.tokens as number) + 9);
  // Same tokens as one uninterrupted greedy run.
  const c = await testApp();
  const w = await jsonOf(await post(c.app, "/v1/sessions", { prompt: "KING:" }), 201);
  await jsonOf(
    await post(c.app, `/v1/sessions/${w.id}/completions`, { max_tokens: 9, temperature: 0 }),
  );
  const whole = await decodeSession(
    new Uint8Array(await (await c.app.request(`/v1/sessions/${w.id}/state`)).arrayBuffer()),
    codec,
  );
  assert.deepEqual(Array.from(snap.tokens!), Array.from(whole.tokens!));
});

Deno.test("session manager: bytes it wrote and a memory store kept are not hashed again", async () => {
  const { app, ctx } = await testApp();
  let hashed = 0;
  const digest = ctx.codec.digest.bind(ctx.codec);
  ctx.codec.digest = (b) => (hashed++, digest(b));
  const s = await jsonOf(await post(app, "/v1/sessions", { prompt: "ROMEO:" }), 201);
  for (let i = 0; i < 3; i++) {
    await jsonOf(
      await post(app, `/v1/sessions/${s.id}/completions`, { max_tokens: 2, temperature: 0 }),
    );
  }
  const res = await app.request(`/v1/sessions/${s.id}/state`);
  assert.equal(res.status, 200);
  assert.ok(res.headers.get("etag"));
  await res.arrayBuffer();
  assert.equal(hashed, 0, "every digest was known from the write");
  // Bytes the store copied (not the array this manager wrote) are hashed, once per array.
  const { app: other, ctx: otherCtx } = await testApp({ store: new MemorySessionStore() });
  let otherHashed = 0;
  const d2 = otherCtx.codec.digest.bind(otherCtx.codec);
  otherCtx.codec.digest = (b) => (otherHashed++, d2(b));
  const bytes = new Uint8Array(
    await (await app.request(`/v1/sessions/${s.id}/state`)).arrayBuffer(),
  );
  await otherCtx.store.put(s.id as string, bytes, { generation: 5 });
  await jsonOf(
    await post(other, `/v1/sessions/${s.id}/completions`, { max_tokens: 1, temperature: 0 }),
  );
  assert.equal(otherHashed, 1);
});
