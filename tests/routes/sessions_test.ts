import assert from "node:assert/strict";
import { decodeSession, encodeSession } from "../../src/state/codec.ts";
import { readSse } from "../../src/http/sse.ts";
import { envelope, pack, payloadObject } from "../state/support.ts";
import {
  cpuModel,
  expectError,
  jsonOf,
  post,
  sseChunks,
  testApp,
  waitFor,
} from "../http/support.ts";

const model = await cpuModel();
const { app, ctx, logs } = await testApp();
const codec = {
  config: model.config,
  modelFingerprint: model.fingerprint,
  tokenizerFingerprint: model.tokenizer.fingerprint,
};

type Json = Record<string, unknown>;
const text = (b: Json) => (b.choices as { text: string }[])[0].text;

async function stateOf(a: typeof app, id: string): Promise<Uint8Array> {
  const res = await a.request(`/v1/sessions/${id}/state`);
  assert.equal(res.status, 200);
  return new Uint8Array(await res.arrayBuffer());
}

function putState(
  a: typeof app,
  id: string,
  bytes: Uint8Array,
  type = "application/vnd.msgpack",
  ifMatch?: string,
) {
  return a.request(`/v1/sessions/${id}/state`, {
    method: "PUT",
    headers: { "content-type": type, ...(ifMatch ? { "if-match": ifMatch } : {}) },
    body: bytes as Uint8Array<ArrayBuffer>,
  });
}

Deno.test("sessions: create empty, with a prompt, with messages, with an id", async () => {
  const empty = await jsonOf(await post(app, "/v1/sessions", ""), 201);
  assert.equal(empty.object, "session");
  assert.equal(empty.position, 0);
  assert.equal(empty.tokens, 0);
  assert.equal(empty.pending, false);
  assert.equal(empty.generation, 1);
  assert.equal(empty.model, "tnl-shakespeare-6m");
  const n = model.tokenizer.encode("ROMEO:").length;
  const res = await post(app, "/v1/sessions", { prompt: "ROMEO:" });
  assert.match(res.headers.get("location") ?? "", /^\/v1\/sessions\/s_/);
  assert.match(res.headers.get("etag") ?? "", /^"[0-9a-f]{64}"$/);
  const withPrompt = await jsonOf(res, 201);
  assert.equal(withPrompt.tokens, n);
  assert.equal(withPrompt.position, n - 1); // the last prompt token waits as the pending one
  assert.equal(withPrompt.pending, true);
  const chat = await jsonOf(
    await post(app, "/v1/sessions", { messages: [{ role: "user", content: "Hi" }] }),
    201,
  );
  assert.equal(chat.tokens, model.tokenizer.encode("user: Hi\n\n").length);
  const named = await jsonOf(await post(app, "/v1/sessions", { id: "my-session_1" }), 201);
  assert.equal(named.id, "my-session_1");
  await expectError(await post(app, "/v1/sessions", { id: "my-session_1" }), 409);
  await expectError(await post(app, "/v1/sessions", { id: "no spaces" }), 400, "id");
  await expectError(await post(app, "/v1/sessions", { prompt: 3 }), 400, "prompt");
  await expectError(await post(app, "/v1/sessions", "[1]"), 400, null);
  const info = await jsonOf(await app.request(`/v1/sessions/${withPrompt.id}`));
  assert.equal(withPrompt.busy, false);
  assert.deepEqual(info, withPrompt);
});

Deno.test("sessions: continue, delete, 404s", async () => {
  const s = await jsonOf(await post(app, "/v1/sessions", { prompt: "KING:" }), 201);
  const id = s.id as string;
  const a = await jsonOf(
    await post(app, `/v1/sessions/${id}/completions`, { max_tokens: 5, temperature: 0 }),
  );
  assert.equal(a.session, id);
  assert.equal((a.usage as Json).prompt_tokens, 0);
  const chunks = await sseChunks(
    await post(app, `/v1/sessions/${id}/completions`, { max_tokens: 3, stream: true }),
  );
  assert.ok(chunks.every((c) => c.session === id));
  const info = await jsonOf(await app.request(`/v1/sessions/${id}`));
  assert.equal(info.generation, 3);
  assert.equal(info.tokens, (s.tokens as number) + 8);
  await expectError(
    await post(app, `/v1/sessions/${id}/completions`, { session: "other" }),
    400,
    "session",
  );
  const del = await jsonOf(await app.request(`/v1/sessions/${id}`, { method: "DELETE" }));
  assert.deepEqual(del, { id, object: "session.deleted", deleted: true });
  await expectError(await app.request(`/v1/sessions/${id}`), 404);
  await expectError(await app.request(`/v1/sessions/${id}`, { method: "DELETE" }), 404);
  await expectError(await app.request(`/v1/sessions/${id}/state`), 404);
  await expectError(await post(app, `/v1/sessions/${id}/completions`, {}), 404);
  await expectError(await app.request(`/v1/sessions/bad%20id`), 404);
});

Deno.test("sessions: state export is msgpack with an ETag; If-None-Match gives 304", async () => {
  const s = await jsonOf(await post(app, "/v1/sessions", { prompt: "ROMEO:" }), 201);
  const res = await app.request(`/v1/sessions/${s.id}/state`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "application/vnd.msgpack");
  const etag = res.headers.get("etag")!;
  const bytes = new Uint8Array(await res.arrayBuffer());
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  assert.equal(etag, `"${Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("")}"`);
  const snap = await decodeSession(bytes, codec);
  assert.equal(snap.id, s.id);
  assert.equal(snap.state.position, s.position);
  const again = await app.request(`/v1/sessions/${s.id}/state`, {
    headers: { "if-none-match": etag },
  });
  assert.equal(again.status, 304);
  await again.body?.cancel();
});

Deno.test("sessions: import rewrites the id (fork), keeps generations growing, 201 then 200", async () => {
  const s = await jsonOf(await post(app, "/v1/sessions", { prompt: "ROMEO:" }), 201);
  await jsonOf(
    await post(app, `/v1/sessions/${s.id}/completions`, { max_tokens: 3, temperature: 0 }),
  );
  const bytes = await stateOf(app, s.id as string);
  const created = await jsonOf(await putState(app, "fork-1", bytes), 201);
  assert.equal(created.id, "fork-1");
  assert.equal(created.generation, 2);
  assert.equal(created.busy, false);
  // Over an existing id, another session's state needs If-Match with the stored ETag.
  await expectError(await putState(app, "fork-1", bytes), 409, "state");
  const etag = (await app.request("/v1/sessions/fork-1/state")).headers.get("etag")!;
  const replaced = await jsonOf(await putState(app, "fork-1", bytes, undefined, etag), 200);
  assert.equal(replaced.generation, 3); // above the stored one
  assert.equal(replaced.busy, false);
  // Both continue identically.
  const a = await jsonOf(
    await post(app, `/v1/sessions/${s.id}/completions`, { max_tokens: 5, temperature: 0 }),
  );
  const b = await jsonOf(
    await post(app, `/v1/sessions/fork-1/completions`, { max_tokens: 5, temperature: 0 }),
  );
  assert.equal(text(a), text(b));
  await expectError(await putState(app, "bad id!", bytes), 400, "id");
  await expectError(await putState(app, "x", bytes, "application/json"), 415);
  await expectError(await putState(app, "x", new Uint8Array(0)), 400);
  await expectError(await putState(app, "x", new Uint8Array([0x93, 1, 2, 3])), 400);
  await expectError(await putState(app, "x", bytes.slice(0, bytes.length - 100)), 400);
});

Deno.test("sessions: a state for another model is a 422, a bad signature a 401", async () => {
  const s = await jsonOf(await post(app, "/v1/sessions", { prompt: "A" }), 201);
  const snap = await decodeSession(await stateOf(app, s.id as string), codec);
  const other = await encodeSession(snap, { ...codec, modelFingerprint: "0".repeat(64) });
  const e = await expectError(await putState(app, "x", other), 422);
  assert.equal(e.code, "state_mismatch");
  const signed = await encodeSession(snap, { ...codec, secret: "s3cret" });
  assert.equal((await expectError(await putState(app, "x", signed), 401)).code, "state_signature");
  // A server with a secret refuses unsigned states and states signed with another secret.
  const secured = await testApp({ options: { stateSecret: "s3cret" } });
  await jsonOf(await putState(secured.app, "x", signed), 201);
  const unsigned = await encodeSession(snap, codec);
  await expectError(await putState(secured.app, "y", unsigned), 401);
  const wrong = await encodeSession(snap, { ...codec, secret: "other" });
  await expectError(await putState(secured.app, "y", wrong), 401);
  // Its exports are signed with its secret.
  const exported = await stateOf(secured.app, "x");
  await decodeSession(exported, { ...codec, secret: "s3cret" });
  await assert.rejects(decodeSession(exported, codec));
});

async function resumeCase(sampling: Json, N = 24, k = 10): Promise<void> {
  const prompt = "ROMEO:";
  // Whole: one request of N tokens.
  const whole = await jsonOf(await post(app, "/v1/sessions", { prompt }), 201);
  const w = await jsonOf(
    await post(app, `/v1/sessions/${whole.id}/completions`, { ...sampling, max_tokens: N }),
  );
  const wholeSnap = await decodeSession(await stateOf(app, whole.id as string), codec);
  // Split: k tokens, export, import into another app (another store), N - k more.
  const split = await jsonOf(await post(app, "/v1/sessions", { prompt }), 201);
  const a = await jsonOf(
    await post(app, `/v1/sessions/${split.id}/completions`, { ...sampling, max_tokens: k }),
  );
  const other = await testApp();
  await jsonOf(await putState(other.app, "resumed", await stateOf(app, split.id as string)), 201);
  const rest: Json = { max_tokens: N - k };
  if (sampling.temperature !== undefined) rest.temperature = sampling.temperature;
  const b = await jsonOf(await post(other.app, `/v1/sessions/resumed/completions`, rest));
  const splitSnap = await decodeSession(await stateOf(other.app, "resumed"), codec);
  assert.deepEqual(Array.from(splitSnap.tokens!), Array.from(wholeSnap.tokens!));
  assert.equal(text(a) + text(b), text(w));
  assert.deepEqual(splitSnap.state.layers, wholeSnap.state.layers);
}

Deno.test("sessions: resume exactness, greedy (export after 10, import elsewhere, 14 more)", async () => {
  await resumeCase({ temperature: 0 });
});

Deno.test("sessions: resume exactness, seeded sampling at temperature 0.9", async () => {
  await resumeCase({ temperature: 0.9, seed: 1234 });
});

Deno.test("sessions: a busy session is a 409 for every other request on it", async () => {
  const s = await jsonOf(await post(app, "/v1/sessions", { prompt: "ROMEO:" }), 201);
  const id = s.id as string;
  const res = await post(app, `/v1/sessions/${id}/completions`, { max_tokens: 500, stream: true });
  const reader = res.body!.getReader();
  await reader.read();
  const busy = await jsonOf(await app.request(`/v1/sessions/${id}`));
  assert.equal(busy.busy, true);
  await expectError(await post(app, `/v1/sessions/${id}/completions`, { max_tokens: 1 }), 409);
  await expectError(await post(app, "/v1/completions", { prompt: "a", session: id }), 409);
  await expectError(await post(app, "/v1/chat/completions", { messages: [], session: id }), 409);
  await expectError(await app.request(`/v1/sessions/${id}`, { method: "DELETE" }), 409);
  await expectError(await putState(app, id, await stateOf(app, id)), 409);
  await reader.cancel();
  await waitFor(() => ctx.busy.size === 0 && ctx.serving!.engine.stats().running === 0);
  // The cancelled request left the stored session as it was.
  const after = await jsonOf(await app.request(`/v1/sessions/${id}`));
  assert.equal(after.generation, s.generation);
  assert.equal(after.tokens, s.tokens);
  await jsonOf(await post(app, `/v1/sessions/${id}/completions`, { max_tokens: 1 }));
});

Deno.test("sessions: no rollback by replay: an older state over its id is a 409, If-Match rules", async () => {
  const s = await jsonOf(
    await post(app, "/v1/sessions", { id: "replay-1", prompt: "ROMEO:" }),
    201,
  );
  const old = await stateOf(app, "replay-1");
  const oldTag = (await app.request("/v1/sessions/replay-1/state")).headers.get("etag")!;
  // The session's own latest state goes back in (idempotent), and as a new id (a fork).
  await jsonOf(await putState(app, "replay-1", old), 200);
  await jsonOf(await putState(app, "replay-1-fork", old), 201);
  await jsonOf(
    await post(app, "/v1/sessions/replay-1/completions", { max_tokens: 3, temperature: 0 }),
  );
  const info = await jsonOf(await app.request("/v1/sessions/replay-1"));
  // The older state of the same session is refused, and the stored session is unchanged.
  const e = await expectError(await putState(app, "replay-1", old), 409, "state");
  assert.equal(e.code, "state_replayed");
  assert.match(e.message, /stale/);
  assert.deepEqual(await jsonOf(await app.request("/v1/sessions/replay-1")), info);
  // A stale If-Match is a 412; so is If-Match for an id that does not exist.
  const stale = await expectError(await putState(app, "replay-1", old, undefined, oldTag), 412);
  assert.equal(stale.code, "precondition_failed");
  await expectError(await putState(app, "replay-absent", old, undefined, oldTag), 412);
  // With the current ETag the caller says what it replaces: the rollback is deliberate.
  const tag = (await app.request("/v1/sessions/replay-1/state")).headers.get("etag")!;
  const back = await jsonOf(await putState(app, "replay-1", old, undefined, tag), 200);
  assert.equal(back.position, s.position);
  assert.ok((back.generation as number) > (info.generation as number));
});

Deno.test("sessions: a stream whose generation fails ends with an error event and [DONE], logged", async () => {
  // Finite but huge state values decode, and the next step overflows to NaN: that request fails
  // alone (the engine's error), the stream still ends with [DONE] and its log line has the error.
  const s = await jsonOf(await post(app, "/v1/sessions", { prompt: "ROMEO:" }), 201);
  const snap = await decodeSession(await stateOf(app, s.id as string), codec);
  for (const l of snap.state.layers) l.fill(3e38);
  snap.id = "overflow-1";
  await jsonOf(await putState(app, "overflow-1", await encodeSession(snap, codec)), 201);
  const before = await jsonOf(await app.request("/v1/sessions/overflow-1"));
  const res = await post(app, "/v1/sessions/overflow-1/completions", {
    max_tokens: 5,
    stream: true,
    temperature: 0,
  }, { headers: { "x-request-id": "overflow-stream" } });
  assert.equal(res.status, 200);
  const events = await readSse(res.body!);
  assert.equal(events.at(-1), "[DONE]");
  const err = JSON.parse(events.at(-2)!).error;
  assert.equal(typeof err.message, "string");
  await waitFor(() => logs.some((l) => l.id === "overflow-stream" && l.msg === "request"));
  const line = logs.find((l) => l.id === "overflow-stream" && l.msg === "request")!;
  assert.equal(typeof line.error, "string");
  assert.ok((line.error_status as number) >= 400);
  // The session keeps its last good state.
  assert.deepEqual(await jsonOf(await app.request("/v1/sessions/overflow-1")), before);
});

Deno.test("sessions: GET /v1/sessions lists sessions in pages, only with the admin token", async () => {
  // Off without a token: the route does not exist.
  const off = await expectError(await app.request("/v1/sessions"), 404);
  assert.equal(off.code, "route_not_found");
  const TOKEN = "adm1n-t0ken";
  const admin = await testApp({ options: { adminToken: TOKEN } });
  const get = (q = "", auth: string | null = `Bearer ${TOKEN}`) =>
    admin.app.request(`/v1/sessions${q}`, {
      headers: auth === null ? {} : { authorization: auth },
    });
  for (const auth of [null, "Bearer wrong", `Basic ${TOKEN}`, TOKEN, `Bearer ${TOKEN}x`]) {
    const res = await get("", auth);
    assert.equal(res.headers.get("www-authenticate"), 'Bearer realm="tnl-edge admin"');
    const e = await expectError(res, 401, "authorization");
    assert.equal(e.code, "invalid_admin_token");
  }
  assert.deepEqual(await jsonOf(await get()), {
    object: "list",
    data: [],
    first_id: null,
    last_id: null,
    has_more: false,
  });
  const ids = ["list-c", "list-a", "list-b"];
  for (const id of ids) {
    await jsonOf(await post(admin.app, "/v1/sessions", { id, prompt: "A B" }), 201);
  }
  await jsonOf(
    await post(admin.app, "/v1/sessions/list-b/completions", { max_tokens: 2, temperature: 0 }),
  );
  const all = await jsonOf(await get());
  const data = all.data as Json[];
  assert.deepEqual(data.map((d) => d.id), ["list-a", "list-b", "list-c"]);
  for (const d of data) {
    const one = await jsonOf(await admin.app.request(`/v1/sessions/${d.id}`));
    assert.deepEqual(d, one); // position, tokens, busy, state_bytes, updated: as GET :id says
    assert.ok((d.state_bytes as number) > 0);
  }
  assert.equal(data[1].position, (data[0].position as number) + 2);
  // Paging: limit and after (last_id of a page is the next page's after).
  const p1 = await jsonOf(await get("?limit=2"));
  assert.deepEqual((p1.data as Json[]).map((d) => d.id), ["list-a", "list-b"]);
  assert.equal(p1.has_more, true);
  const p2 = await jsonOf(await get(`?limit=2&after=${p1.last_id}`));
  assert.deepEqual((p2.data as Json[]).map((d) => d.id), ["list-c"]);
  assert.equal(p2.has_more, false);
  // A session in use says so.
  const res = await post(admin.app, "/v1/sessions/list-a/completions", {
    max_tokens: 500,
    stream: true,
  });
  const reader = res.body!.getReader();
  await reader.read();
  assert.equal(((await jsonOf(await get("?limit=1"))).data as Json[])[0].busy, true);
  await reader.cancel();
  for (
    const [q, param] of [["?limit=0", "limit"], ["?limit=1001", "limit"], ["?limit=x", "limit"], [
      "?after=a%20b",
      "after",
    ], ["?offset=3", "offset"]]
  ) {
    await expectError(await get(q), 400, param);
  }
  await waitFor(() => admin.ctx.busy.size === 0 && admin.ctx.serving!.engine.stats().running === 0);
});

Deno.test("sessions: a state the server could not run or save is a 400 naming the field", async () => {
  const s = await jsonOf(await post(app, "/v1/sessions", { prompt: "ROMEO: a" }), 201);
  const bytes = await stateOf(app, s.id as string);
  const cases: [string, (p: Record<string, unknown>) => void][] = [
    ["state.generation", (p) => (p.generation = 2 ** 53 - 1)],
    ["state.rng.counter", (p) => ((p.rng as Json).counter = 2 ** 53 - 2)],
    ["state.tokens", (p) => {
      p.tokens = null;
      p.generated = null;
    }],
    ["state.updatedAt", (p) => (p.updatedAt = 3e38)],
    ["state.sampling.topK", (p) => ((p.sampling as Json).topK = -5)],
    ["state.sampling.temperature", (p) => ((p.sampling as Json).temperature = "hot")],
  ];
  for (const [param, mod] of cases) {
    const p = payloadObject(bytes);
    mod(p);
    const e = await expectError(
      await putState(app, "named-400", await envelope(pack(p))),
      400,
      param,
    );
    assert.equal(e.code, "state_invalid");
  }
  // None of them stored anything: the id is free for a valid state.
  await jsonOf(await putState(app, "named-400", bytes), 201);
});
