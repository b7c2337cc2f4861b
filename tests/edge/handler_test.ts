/**
 * The edge handler called in-process (the same function `deno serve` runs): routes, formats,
 * inline and stored sessions, the per-request cap, signatures, replays and model mismatches.
 * @module
 */

import assert from "node:assert/strict";
import { createEdgeHandler, edgeBackend, edgeOptionsFromEnv } from "../../src/edge/handler.ts";
import { decodeEdgeResponse, encodeEdgeBody } from "../../src/edge/protocol.ts";
import { STATE_MEDIA_TYPE } from "../../src/state/mod.ts";
import { loadModel } from "../../src/load.ts";
import { decodeSession, encodeSession } from "../../src/state/codec.ts";
import { MemorySessionStore } from "../../src/state/memory_store.ts";

const model = loadModel(undefined, { backend: "cpu" });
const SECRET = "edge test secret";

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name: `edge handler: ${name}`, sanitizeOps: false, sanitizeResources: false, fn });

function post(body: unknown, format: "json" | "msgpack" = "json", headers: HeadersInit = {}) {
  const bytes = encodeEdgeBody(body as Record<string, unknown>, format);
  return new Request("http://edge/v1/generate", {
    method: "POST",
    headers: {
      "content-type": format === "json" ? "application/json" : STATE_MEDIA_TYPE,
      ...headers,
    },
    body: bytes as Uint8Array<ArrayBuffer>,
  });
}

async function ok(res: Response): Promise<Record<string, unknown>> {
  if (res.status !== 200) assert.fail(`status ${res.status}: ${await res.text()}`);
  return await decodeEdgeResponse(res);
}

async function error(res: Response, status: number): Promise<{ code: string; param: string }> {
  const text = await res.text();
  assert.equal(res.status, status, text);
  assert.match(res.headers.get("content-type") ?? "", /json/);
  return JSON.parse(text).error;
}

test("backend: cpu without navigator.gpu, else auto; an explicit choice wins", () => {
  assert.equal(edgeBackend(undefined, false), "cpu");
  assert.equal(edgeBackend(undefined, true), "auto");
  assert.equal(edgeBackend("webgpu", false), "webgpu");
  return Promise.resolve();
});

test("options from the environment, with bad values named", () => {
  const env: Record<string, string> = {
    TNL_BACKEND: "cpu",
    TNL_STORE: "redis://127.0.0.1:6379",
    TNL_MAX_TOKENS_PER_REQUEST: "16",
    TNL_STATE_SECRET: "s",
    TNL_STORE_TTL_MS: "60000",
    TNL_QUANTIZE: "int8",
  };
  const o = edgeOptionsFromEnv((k) => env[k]);
  assert.equal(o.backend, "cpu");
  assert.equal(o.quantize, "int8");
  assert.equal(o.store, "redis://127.0.0.1:6379");
  assert.equal(o.maxTokensPerRequest, 16);
  assert.equal(o.stateSecret, "s");
  assert.equal(o.storeOptions?.ttlMs, 60000);
  assert.throws(
    () => edgeOptionsFromEnv((k) => (k === "TNL_BACKEND" ? "tpu" : undefined)),
    /TNL_BACKEND/,
  );
  assert.throws(
    () => edgeOptionsFromEnv((k) => (k === "TNL_QUANTIZE" ? "int4" : undefined)),
    /TNL_QUANTIZE: expected none or int8, got int4/,
  );
  assert.throws(
    () => edgeOptionsFromEnv((k) => (k === "TNL_MAX_TOKENS_PER_REQUEST" ? "many" : undefined)),
    /TNL_MAX_TOKENS_PER_REQUEST/,
  );
  return Promise.resolve();
});

test("health, 404, 405, 415, a bad field is a 400 naming it", async () => {
  const h = createEdgeHandler({ loaded: model });
  const health = await h(new Request("http://edge/health"));
  const hb = await health.json();
  assert.equal(hb.status, "ok");
  assert.equal(hb.backend, "cpu");
  assert.equal(hb.max_tokens_per_request, 64);
  assert.ok(health.headers.get("x-request-id"));
  await error(await h(new Request("http://edge/nope")), 404);
  const m = await h(new Request("http://edge/v1/generate"));
  await error(m, 405);
  assert.equal(m.headers.get("allow"), "POST");
  await error(
    await h(
      new Request("http://edge/v1/generate", {
        method: "POST",
        body: "x",
        headers: { "content-type": "text/plain" },
      }),
    ),
    415,
  );
  assert.equal((await error(await h(post({ max_tokens: -1 })), 400)).param, "max_tokens");
  assert.equal((await error(await h(post({ temperature: "hot" })), 400)).param, "temperature");
  assert.equal((await error(await h(post({ state: "***" })), 400)).param, "state");
  assert.equal((await error(await h(post({ stream: true })), 400)).param, "stream");
  assert.equal((await error(await h(post({ session: "s_1" })), 400)).param, "session");
  await error(
    await h(
      new Request("http://edge/v1/generate", {
        method: "POST",
        body: "{",
        headers: { "content-type": "application/json" },
      }),
    ),
    400,
  );
  const big = createEdgeHandler({ loaded: model, maxBodyBytes: 100 });
  await error(await big(post({ prompt: "x".repeat(200) })), 413);
});

test("inline: JSON carries the state in base64, msgpack as bin; Accept picks the answer", async () => {
  const h = createEdgeHandler({ loaded: model });
  const j = await h(post({ prompt: "ROMEO:", max_tokens: 4, temperature: 0 }));
  assert.match(j.headers.get("content-type")!, /application\/json/);
  const raw = JSON.parse(await j.clone().text());
  assert.equal(typeof raw.state, "string");
  const jb = await decodeEdgeResponse(j);
  assert.ok(jb.state instanceof Uint8Array);
  assert.equal(jb.object, "tnl.generation");
  assert.equal(jb.generation, 1);
  assert.equal((jb.tokens as number[]).length, 4);

  const m = await h(post({ prompt: "ROMEO:", max_tokens: 4, temperature: 0 }, "msgpack"));
  assert.equal(m.headers.get("content-type"), STATE_MEDIA_TYPE);
  const mb = await decodeEdgeResponse(m);
  assert.equal(mb.text, jb.text);
  const asJson = await h(
    post({ prompt: "ROMEO:", max_tokens: 1 }, "msgpack", { accept: "application/json" }),
  );
  assert.match(asJson.headers.get("content-type")!, /json/);
  const asMsgpack = await h(
    post({ prompt: "ROMEO:", max_tokens: 1 }, "json", { accept: STATE_MEDIA_TYPE }),
  );
  assert.equal(asMsgpack.headers.get("content-type"), STATE_MEDIA_TYPE);
  await asJson.body?.cancel();
  await asMsgpack.body?.cancel();

  // Continue from the returned state (msgpack bytes in JSON as base64 and back).
  const next = await ok(await h(post({ state: jb.state, max_tokens: 4 }, "msgpack")));
  assert.equal(next.session, jb.session);
  assert.equal(next.generation, 2);
  const one = await ok(await h(post({ prompt: "ROMEO:", max_tokens: 8, temperature: 0 })));
  assert.equal(String(jb.text) + String(next.text), one.text);
});

test("the cap: continue and remaining_tokens; the user's own limit ends without continue", async () => {
  const h = createEdgeHandler({ loaded: model, maxTokensPerRequest: 5 });
  const r = await ok(await h(post({ prompt: "ROMEO:", max_tokens: 12, temperature: 0 })));
  assert.equal(r.finish_reason, "length");
  assert.equal(r.continue, true);
  assert.equal(r.remaining_tokens, 7);
  assert.equal((r.tokens as number[]).length, 5);
  const last = await ok(await h(post({ prompt: "ROMEO:", max_tokens: 5, temperature: 0 })));
  assert.equal(last.continue, false);
  assert.equal(last.remaining_tokens, 0);
});

test("signed states: unsigned or tampered is 401; another model is 422", async () => {
  const m = await model;
  const h = createEdgeHandler({ loaded: model, stateSecret: SECRET });
  const r = await ok(await h(post({ prompt: "ROMEO:", max_tokens: 2 })));
  const state = r.state as Uint8Array;
  const codec = {
    config: m.config,
    modelFingerprint: m.fingerprint,
    tokenizerFingerprint: m.tokenizer.fingerprint,
  };
  const snap = await decodeSession(state, { ...codec, secret: SECRET });
  const unsigned = await encodeSession(snap, codec);
  assert.equal(
    (await error(await h(post({ state: unsigned }, "msgpack")), 401)).code,
    "state_signature",
  );
  const tampered = state.slice();
  tampered[tampered.length - 5] ^= 1;
  await error(await h(post({ state: tampered }, "msgpack")), 401);
  const other = await encodeSession(snap, {
    ...codec,
    modelFingerprint: "0".repeat(64),
    secret: SECRET,
  });
  assert.equal(
    (await error(await h(post({ state: other }, "msgpack")), 422)).code,
    "state_mismatch",
  );
  await error(await h(post({ state: new Uint8Array([1, 2, 3]) }, "msgpack")), 400);
});

test("replays with a store: the same state twice or an old one is a 409, the latest goes on", async () => {
  const replay = new MemorySessionStore();
  const h = createEdgeHandler({ loaded: model, stateSecret: SECRET, replayStore: replay });
  const g1 = await ok(await h(post({ prompt: "ROMEO:", max_tokens: 2 })));
  const g2 = await ok(await h(post({ state: g1.state, max_tokens: 2 }, "msgpack")));
  const again = await error(await h(post({ state: g1.state, max_tokens: 2 }, "msgpack")), 409);
  assert.equal(again.code, "state_replayed");
  const g3 = await ok(await h(post({ state: g2.state, max_tokens: 2 }, "msgpack")));
  assert.equal(g3.generation, 3);
  assert.match((await error(await h(post({ state: g2.state }, "msgpack")), 409)).code, /replayed/);
  assert.match(
    JSON.stringify(await error(await h(post({ state: g1.state }, "msgpack")), 409)),
    /stale/,
  );
  // Without a replay store the handler cannot tell: an old state resumes as it was (a fork).
  const free = createEdgeHandler({ loaded: model, stateSecret: SECRET });
  const fork = await ok(await free(post({ state: g1.state, max_tokens: 2 }, "msgpack")));
  assert.equal(fork.generation, 2);
});

test("stored sessions: a new one is kept, continued by id; 404 for an unknown id", async () => {
  const store = new MemorySessionStore();
  const h = createEdgeHandler({ loaded: model, store, maxTokensPerRequest: 4 });
  const a = await ok(await h(post({ prompt: "ROMEO:", max_tokens: 10, temperature: 0 })));
  assert.equal(a.state, undefined);
  assert.equal(a.continue, true);
  const b = await ok(await h(post({ session: a.session, max_tokens: 6 })));
  const c = await ok(await h(post({ session: a.session, max_tokens: 2 })));
  assert.equal(c.generation, 3);
  assert.equal(c.continue, false);
  const uncapped = createEdgeHandler({ loaded: model, maxTokensPerRequest: 0 });
  const one = await ok(await uncapped(post({ prompt: "ROMEO:", max_tokens: 10, temperature: 0 })));
  assert.equal(String(a.text) + String(b.text) + String(c.text), one.text);
  await error(await h(post({ session: "s_unknown", max_tokens: 1 })), 404);
  // store: false keeps a new session inline even with a store.
  const inline = await ok(await h(post({ prompt: "A", max_tokens: 1, store: false })));
  assert.ok(inline.state instanceof Uint8Array);
});
