/**
 * State encodings at the edge: `state_encoding` in the protocol, the handler's default
 * (`stateEncoding`, `TNL_STATE_ENCODING`), `continueSession`'s `stateEncoding` sent with every
 * request, inline and stored; responses say the encoding and whether the state is lossy; a bad
 * name is a 400 naming the field.
 * @module
 */

import assert from "node:assert/strict";
import { continueSession, EdgeClientError } from "../../src/edge/client.ts";
import { createEdgeHandler, edgeOptionsFromEnv } from "../../src/edge/handler.ts";
import { decodeEdgeResponse, encodeEdgeBody } from "../../src/edge/protocol.ts";
import { loadModel } from "../../src/load.ts";
import { decodeSession, encodeSession } from "../../src/state/codec.ts";
import { MemorySessionStore } from "../../src/state/memory_store.ts";

const model = await loadModel(undefined, { backend: "cpu" });
const codec = {
  config: model.config,
  modelFingerprint: model.fingerprint,
  tokenizerFingerprint: model.tokenizer.fingerprint,
};

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({
    name: `edge state encodings: ${name}`,
    sanitizeOps: false,
    sanitizeResources: false,
    fn,
  });

function post(body: Record<string, unknown>): Request {
  return new Request("http://edge/v1/generate", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: encodeEdgeBody(body, "json") as Uint8Array<ArrayBuffer>,
  });
}

test("continueSession with q8+deflate: every request's state in it, a fraction of f32's", async () => {
  const h = createEdgeHandler({ loaded: model, maxTokensPerRequest: 5 });
  const seen: Request[] = [];
  const fetch = (r: Request) => {
    seen.push(r.clone());
    return h(r);
  };
  const chunks = [];
  for await (
    const c of continueSession("http://edge", "ROMEO:", {
      maxTokens: 17,
      sampling: { temperature: 0 },
      stateEncoding: "q8+deflate",
      fetch,
    })
  ) chunks.push(c);
  assert.equal(chunks.length, 4);
  assert.equal(chunks.reduce((n, c) => n + c.tokens.length, 0), 17);
  for (const [i, c] of chunks.entries()) {
    assert.equal(c.stateEncoding, "q8+deflate");
    assert.equal(c.stateLossy, "q8+deflate");
    const d = await decodeSession(c.state!, codec);
    assert.equal(d.encoding, "q8+deflate");
    assert.equal(d.lossy, "q8+deflate");
    const body = await decodeEdgeResponse(
      new Response(await seen[i].arrayBuffer(), { headers: seen[i].headers }),
    );
    assert.equal(body.state_encoding, "q8+deflate", `request ${i}`);
    // The exact encoding of the same state, for scale.
    const f32 = await encodeSession(d, codec);
    assert.ok(c.state!.length < f32.length / 3, `${c.state!.length} of ${f32.length}`);
  }
});

test("the handler's default, overridden by the request; a lossy state stays marked", async () => {
  const h = createEdgeHandler({ loaded: model, maxTokensPerRequest: 0, stateEncoding: "bf16" });
  const a = await decodeEdgeResponse(await h(post({ prompt: "ROMEO:", max_tokens: 2 })));
  assert.equal(a.state_encoding, "bf16");
  assert.equal(a.state_lossy, "bf16");
  const b = await decodeEdgeResponse(
    await h(post({ state: a.state, max_tokens: 2, state_encoding: "f32" })),
  );
  assert.equal(b.state_encoding, "f32");
  assert.equal(b.state_lossy, "bf16");
  const d = await decodeSession(b.state as Uint8Array, codec);
  assert.equal(d.encoding, "f32");
  assert.equal(d.lossy, "bf16");
  // Exact from the start: null.
  const exact = createEdgeHandler({ loaded: model, maxTokensPerRequest: 0 });
  const e = await decodeEdgeResponse(await exact(post({ prompt: "ROMEO:", max_tokens: 2 })));
  assert.equal(e.state_encoding, "f32");
  assert.equal(e.state_lossy, null);
  assert.throws(
    () => createEdgeHandler({ loaded: model, stateEncoding: "q4" as "q8" }),
    /stateEncoding: expected one of f32, .*q8\+deflate, got q4/,
  );
});

test("stored sessions save in the requested encoding", async () => {
  const store = new MemorySessionStore();
  const h = createEdgeHandler({ loaded: model, store, maxTokensPerRequest: 4 });
  let id = "";
  for await (
    const c of continueSession("http://edge", "ROMEO:", {
      maxTokens: 9,
      sampling: { temperature: 0 },
      stateEncoding: "f32+deflate",
      fetch: h,
    })
  ) {
    assert.equal(c.state, undefined);
    assert.equal(c.stateEncoding, "f32+deflate");
    assert.equal(c.stateLossy, null);
    id = c.session;
  }
  const stored = await store.getEntry(id);
  assert.equal((await decodeSession(stored!.bytes, codec)).encoding, "f32+deflate");
});

test("a bad state_encoding is a 400 naming it; TNL_STATE_ENCODING is read and checked", async () => {
  const h = createEdgeHandler({ loaded: model });
  const res = await h(post({ prompt: "a", state_encoding: "q4" }));
  assert.equal(res.status, 400);
  const e = (await res.json()).error;
  assert.equal(e.param, "state_encoding");
  assert.match(e.message, /state_encoding: "q4" is not a state encoding \(one of f32, /);
  await assert.rejects(
    async () => {
      for await (
        const _ of continueSession("http://edge", "a", { stateEncoding: "zip" as "q8", fetch: h })
      ) { /* refused */ }
    },
    (err: unknown) => err instanceof EdgeClientError && err.param === "state_encoding",
  );
  assert.equal(
    edgeOptionsFromEnv((k) => (k === "TNL_STATE_ENCODING" ? "q8+deflate" : undefined))
      .stateEncoding,
    "q8+deflate",
  );
  assert.throws(
    () => edgeOptionsFromEnv((k) => (k === "TNL_STATE_ENCODING" ? "q4" : undefined)),
    /TNL_STATE_ENCODING: expected one of f32, f32\+deflate, bf16, bf16\+deflate, q8, q8\+deflate, got q4/,
  );
});
