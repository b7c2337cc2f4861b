/**
 * State encodings through the server: `state_encoding` on the requests that keep state (and the
 * server's `stateEncoding` default), the `Accept` parameter and `?encoding=` of
 * `GET /v1/sessions/:id/state`, imports in every encoding, and the visibility of a lossy state in
 * the session's info (it never passes for exact, even saved again in f32). Bad names are 400s.
 * @module
 */

import assert from "node:assert/strict";
import { decodeSession, sessionSummary } from "../../src/state/codec.ts";
import { isExactEncoding, STATE_ENCODINGS } from "../../src/state/encodings.ts";
import { AppContext } from "../../src/http/context.ts";
import { MemorySessionStore } from "../../src/state/memory_store.ts";
import { cpuModel, expectError, jsonOf, post, testApp } from "../http/support.ts";

const model = await cpuModel();
const { app } = await testApp({ model });
const codec = {
  config: model.config,
  modelFingerprint: model.fingerprint,
  tokenizerFingerprint: model.tokenizer.fingerprint,
};

type Json = Record<string, unknown>;
type App = typeof app;
const text = (b: Json) => (b.choices as { text: string }[])[0].text;

async function getState(a: App, id: string, headers: HeadersInit = {}, query = "") {
  const res = await a.request(`/v1/sessions/${id}/state${query}`, { headers });
  assert.equal(res.status, 200, await res.clone().text());
  return { res, bytes: new Uint8Array(await res.arrayBuffer()) };
}

function putState(a: App, id: string, bytes: Uint8Array) {
  return a.request(`/v1/sessions/${id}/state`, {
    method: "PUT",
    headers: { "content-type": "application/vnd.msgpack" },
    body: bytes as Uint8Array<ArrayBuffer>,
  });
}

async function info(a: App, id: string): Promise<Json> {
  return await jsonOf(await a.request(`/v1/sessions/${id}`));
}

async function sha256(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  return `"${Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("")}"`;
}

Deno.test("state encodings: a round trip through the server in each encoding", async () => {
  const greedy = { temperature: 0, max_tokens: 6 };
  const ref = await jsonOf(await post(app, "/v1/sessions", { prompt: "ROMEO:" }), 201);
  const want = text(
    await jsonOf(await post(app, `/v1/sessions/${ref.id}/completions`, greedy)),
  );
  for (const encoding of STATE_ENCODINGS) {
    const exact = isExactEncoding(encoding);
    const s = await jsonOf(
      await post(app, "/v1/sessions", { prompt: "ROMEO:", state_encoding: encoding }),
      201,
    );
    assert.equal(s.state_encoding, encoding);
    assert.equal(s.state_exact, exact, encoding);
    assert.equal(s.state_lossy, exact ? null : encoding);
    const { res, bytes } = await getState(app, s.id as string);
    assert.equal(res.headers.get("x-state-encoding"), encoding);
    assert.equal(res.headers.get("x-state-lossy"), exact ? null : encoding);
    const snap = await decodeSession(bytes, codec);
    assert.equal(snap.encoding, encoding);
    assert.equal(snap.state.position, s.position);

    // Imported into another server (its default: f32), and continued there.
    const other = await testApp({ model });
    const imported = await jsonOf(await putState(other.app, "moved", bytes), 201);
    assert.equal(imported.state_encoding, "f32");
    assert.equal(imported.state_exact, exact, encoding);
    const out = await jsonOf(
      await post(other.app, "/v1/sessions/moved/completions", greedy),
    );
    if (exact) assert.equal(text(out), want, encoding);
    // Saved again in f32 after the continuation: still not exact when it came from a lossy state.
    const after = await info(other.app, "moved");
    assert.equal(after.state_encoding, "f32");
    assert.equal(after.state_exact, exact, encoding);
    assert.equal(after.state_lossy, exact ? null : encoding);
    const { bytes: again } = await getState(other.app, "moved");
    assert.equal((await decodeSession(again, codec)).lossy, exact ? null : encoding);
  }
});

Deno.test("state encodings: the server default, overridden per request, on every route that keeps state", async () => {
  const q8 = await testApp({ model, options: { stateEncoding: "q8+deflate" } });
  const s = await jsonOf(await post(q8.app, "/v1/sessions", { prompt: "ROMEO:" }), 201);
  assert.equal(s.state_encoding, "q8+deflate");
  assert.equal(s.state_exact, false);
  const c = await jsonOf(
    await post(q8.app, "/v1/completions", { prompt: "ROMEO:", max_tokens: 2 }),
  );
  assert.equal((await info(q8.app, c.session as string)).state_encoding, "q8+deflate");
  const f = await jsonOf(
    await post(q8.app, "/v1/completions", {
      prompt: "ROMEO:",
      max_tokens: 2,
      state_encoding: "f32+deflate",
    }),
  );
  const fi = await info(q8.app, f.session as string);
  assert.equal(fi.state_encoding, "f32+deflate");
  assert.equal(fi.state_exact, true);
  const chat = await jsonOf(
    await post(app, "/v1/chat/completions", {
      messages: [{ role: "user", content: "hi" }],
      max_tokens: 2,
      state_encoding: "bf16",
    }),
  );
  assert.equal((await info(app, chat.session as string)).state_encoding, "bf16");
  // Continuing it without the field saves in the server's default; it stays marked lossy.
  await jsonOf(
    await post(app, "/v1/chat/completions", {
      session: chat.session,
      messages: [{ role: "user", content: "and?" }],
      max_tokens: 2,
    }),
  );
  const ci = await info(app, chat.session as string);
  assert.equal(ci.state_encoding, "f32");
  assert.equal(ci.state_lossy, "bf16");
  assert.equal(ci.state_exact, false);
  assert.throws(
    () =>
      new AppContext({
        model,
        store: new MemorySessionStore(),
        options: { stateEncoding: "q4" as "q8" },
      }),
    /stateEncoding: "q4" is not one of f32, f32\+deflate, bf16, bf16\+deflate, q8, q8\+deflate/,
  );
});

Deno.test("state encodings: an unknown state_encoding is a 400 naming the field", async () => {
  const s = await jsonOf(await post(app, "/v1/sessions", {}), 201);
  const cases: [string, Json][] = [
    ["/v1/sessions", { state_encoding: "q4" }],
    ["/v1/completions", { prompt: "a", state_encoding: "F32" }],
    ["/v1/chat/completions", { messages: [{ role: "user", content: "a" }], state_encoding: 8 }],
    [`/v1/sessions/${s.id}/completions`, { state_encoding: "bf16+zstd" }],
  ];
  for (const [path, body] of cases) {
    const e = await expectError(await post(app, path, body), 400, "state_encoding");
    assert.match(
      e.message,
      /^state_encoding: .* is not a state encoding \(one of f32, f32\+deflate, bf16, bf16\+deflate, q8, q8\+deflate\)/,
    );
  }
  // Nothing was saved by the refused continuation.
  assert.equal((await info(app, s.id as string)).generation, s.generation);
});

Deno.test("state encodings: GET state negotiates the encoding with Accept or ?encoding=", async () => {
  const s = await jsonOf(await post(app, "/v1/sessions", { prompt: "ROMEO: O, she doth" }), 201);
  const id = s.id as string;
  const plain = await getState(app, id);
  assert.equal(plain.res.headers.get("x-state-encoding"), "f32");
  assert.equal(plain.res.headers.get("vary"), "Accept");

  // Asking for the stored encoding gives the stored bytes.
  const same = await getState(app, id, { accept: "application/vnd.msgpack; encoding=f32" });
  assert.deepEqual(same.bytes, plain.bytes);
  assert.equal(same.res.headers.get("etag"), plain.res.headers.get("etag"));

  // Another encoding: decoded and encoded again, the ETag of the new bytes, the same state.
  const accept = 'application/json;q=0.5, application/vnd.msgpack; encoding="q8+deflate"';
  const q8 = await getState(app, id, { accept });
  assert.equal(q8.res.headers.get("content-type"), "application/vnd.msgpack");
  assert.equal(q8.res.headers.get("x-state-encoding"), "q8+deflate");
  assert.equal(q8.res.headers.get("x-state-lossy"), "q8+deflate");
  assert.equal(q8.res.headers.get("etag"), await sha256(q8.bytes));
  assert.ok(
    q8.bytes.length < plain.bytes.length / 3,
    `${q8.bytes.length} of ${plain.bytes.length}`,
  );
  const summary = sessionSummary(q8.bytes);
  assert.equal(summary.encoding, "q8+deflate");
  assert.equal(summary.generation, sessionSummary(plain.bytes).generation);
  const snap = await decodeSession(q8.bytes, codec);
  assert.equal(snap.lossy, "q8+deflate");
  assert.equal(snap.state.position, s.position);
  // The stored state is untouched.
  assert.equal((await info(app, id)).state_encoding, "f32");
  const notModified = await app.request(`/v1/sessions/${id}/state`, {
    headers: { accept, "if-none-match": q8.res.headers.get("etag")! },
  });
  assert.equal(notModified.status, 304);
  assert.equal(notModified.headers.get("x-state-encoding"), "q8+deflate");
  await notModified.body?.cancel();

  const bf = await getState(app, id, {}, "?encoding=bf16");
  assert.equal(bf.res.headers.get("x-state-encoding"), "bf16");
  assert.equal((await decodeSession(bf.bytes, codec)).encoding, "bf16");
  // The same in both places is fine; different ones, or unknown names, are 400s.
  await getState(app, id, { accept: "application/vnd.msgpack;encoding=bf16" }, "?encoding=bf16");
  const both = await app.request(`/v1/sessions/${id}/state?encoding=bf16`, {
    headers: { accept: "application/vnd.msgpack; encoding=q8" },
  });
  await expectError(both, 400, "encoding");
  const badAccept = await app.request(`/v1/sessions/${id}/state`, {
    headers: { accept: "application/vnd.msgpack; encoding=q4" },
  });
  assert.match(
    (await expectError(badAccept, 400, "Accept")).message,
    /^Accept: "q4" is not a state encoding/,
  );
  const badQuery = await app.request(`/v1/sessions/${id}/state?encoding=zip`);
  await expectError(badQuery, 400, "encoding");

  // The downloaded q8 state, imported: marked lossy in the new session's info.
  const moved = await jsonOf(await putState(app, `${id}-q8`, q8.bytes), 201);
  assert.equal(moved.state_exact, false);
  assert.equal(moved.state_lossy, "q8+deflate");
  // A lossy state downloaded as f32 stays marked lossy.
  const back = await getState(app, `${id}-q8`, {
    accept: "application/vnd.msgpack; encoding=f32+deflate",
  });
  assert.equal(back.res.headers.get("x-state-lossy"), "q8+deflate");
  assert.equal((await decodeSession(back.bytes, codec)).lossy, "q8+deflate");
});

Deno.test("state encodings: the operator listing shows each session's encoding", async () => {
  const a = await testApp({ model, options: { adminToken: "t" } });
  await jsonOf(await post(a.app, "/v1/sessions", { id: "exact", prompt: "a" }), 201);
  await jsonOf(
    await post(a.app, "/v1/sessions", { id: "small", prompt: "a", state_encoding: "q8" }),
    201,
  );
  const list = await jsonOf(
    await a.app.request("/v1/sessions", { headers: { authorization: "Bearer t" } }),
  );
  const rows = (list.data as Json[]).map((
    d,
  ) => [d.id, d.state_encoding, d.state_exact, d.state_lossy]);
  assert.deepEqual(rows, [["exact", "f32", true, null], ["small", "q8", false, "q8"]]);
});
