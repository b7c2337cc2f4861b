import assert from "node:assert/strict";
import type { TnlModel } from "../../src/load.ts";
import { StoreError } from "../../src/state/errors.ts";
import { MemorySessionStore } from "../../src/state/memory_store.ts";
import type { SessionStore } from "../../src/state/store.ts";
import {
  cpuModel,
  expectError,
  jsonOf,
  post,
  sseChunks,
  testApp,
  waitFor,
} from "../http/support.ts";

Deno.test("errors: bad JSON bodies are 400s with a null param", async () => {
  const { app } = await testApp();
  for (const body of ["", "{", "nul", "[]", "3", '"x"', '{"prompt": }']) {
    for (const path of ["/v1/completions", "/v1/chat/completions"]) {
      await expectError(await post(app, path, body), 400, null);
    }
  }
  const res = await app.request("/v1/completions", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]),
  });
  await expectError(res, 400, null);
});

Deno.test("errors: JSON routes take only application/json bodies (415 otherwise)", async () => {
  // A text/plain body is a CORS "simple request": no preflight, so any web page could send it.
  const { app } = await testApp({ options: { maxTokensLimit: 1 } });
  const body = JSON.stringify({ prompt: "A", messages: [{ role: "user", content: "A" }] });
  const paths = [
    "/v1/completions",
    "/v1/chat/completions",
    "/v1/sessions",
    "/v1/sessions/x/completions",
  ];
  for (const path of paths) {
    for (
      const type of [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        null,
      ]
    ) {
      const res = await app.request(path, {
        method: "POST",
        headers: type === null ? {} : { "content-type": type },
        body: new TextEncoder().encode(body),
      });
      const e = await expectError(res, 415, "content-type");
      assert.equal(e.code, "unsupported_media_type");
      assert.equal(e.type, "invalid_request_error");
    }
  }
  for (const type of ["application/json", "Application/JSON; charset=utf-8"]) {
    const res = await app.request("/v1/completions", {
      method: "POST",
      headers: { "content-type": type },
      body: JSON.stringify({ prompt: "A", max_tokens: 1 }),
    });
    assert.equal(res.status, 200, await res.text());
  }
});

Deno.test("errors: unknown routes and methods are 404s in the OpenAI shape", async () => {
  const { app } = await testApp();
  for (
    const [method, path] of [
      ["GET", "/"],
      ["GET", "/v1/nothing"],
      ["GET", "/v1/completions"],
      ["DELETE", "/v1/models"],
      ["POST", "/v1/sessions/x/unknown"],
    ]
  ) {
    const e = await expectError(await app.request(path, { method }), 404, null);
    assert.equal(e.code, "route_not_found");
  }
  const e = await expectError(await app.request("/v1/models/gpt-4"), 404, "model");
  assert.equal(e.code, "model_not_found");
  assert.equal(
    (await jsonOf(await app.request("/v1/models/tnl-shakespeare-6m"))).id,
    "tnl-shakespeare-6m",
  );
});

Deno.test("errors: 413 over the body limit, declared or streamed, without reading it all", async () => {
  const { app } = await testApp({ options: { maxBodyBytes: 1024 } });
  const big = JSON.stringify({ prompt: "x".repeat(2000) });
  const e = await expectError(await post(app, "/v1/completions", big), 413, null);
  assert.equal(e.code, "payload_too_large");
  // No Content-Length, an endless body: refused once 1 KiB has been read.
  let pulled = 0;
  const endless = new ReadableStream<Uint8Array>({
    pull(c) {
      pulled++;
      c.enqueue(new TextEncoder().encode('{"prompt":"' + "y".repeat(256)));
    },
  });
  const res = await app.request("/v1/completions", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: endless,
    // @ts-ignore: duplex is needed for a stream body
    duplex: "half",
  });
  await expectError(res, 413);
  assert.ok(pulled < 20, `read ${pulled} chunks`);
  const state = await app.request("/v1/sessions/x/state", {
    method: "PUT",
    headers: { "content-type": "application/vnd.msgpack" },
    body: new Uint8Array(5000),
  });
  await expectError(state, 413);
});

Deno.test("errors: 429 with Retry-After when the queue is full", async () => {
  const { app, ctx } = await testApp({ engine: { maxQueue: 1, maxBatch: 1 } });
  const engine = ctx.serving!.engine;
  const ac = new AbortController();
  const r1 = post(app, "/v1/completions", { prompt: "a", max_tokens: 2000 }, { signal: ac.signal });
  await waitFor(() => engine.stats().running === 1, 10_000, "running 1");
  const r2 = post(app, "/v1/completions", { prompt: "b", max_tokens: 2000 }, { signal: ac.signal });
  await waitFor(() => engine.stats().queueDepth === 1, 10_000, "queue 1");
  const res = await post(app, "/v1/completions", { prompt: "c", max_tokens: 1 });
  assert.equal(res.headers.get("retry-after"), "1");
  const e = await expectError(res, 429, null);
  assert.equal(e.type, "rate_limit_error");
  ac.abort();
  for (const r of await Promise.all([r1, r2])) {
    assert.equal(r.status, 499);
    await r.body?.cancel();
  }
  await waitFor(() => engine.stats().running === 0 && engine.stats().queueDepth === 0);
  assert.equal(ctx.busy.size, 0);
});

Deno.test("errors: 503 with Retry-After while the model loads; 200 once it has", async () => {
  let resolve!: (m: TnlModel) => void;
  const pending = new Promise<TnlModel>((r) => (resolve = r));
  const { app, ctx } = await testApp({ model: pending });
  const h = await app.request("/health");
  assert.equal(h.status, 503);
  assert.equal(h.headers.get("retry-after"), "1");
  assert.deepEqual(await h.json(), { status: "loading" });
  for (const [path, body] of [["/v1/completions", { prompt: "a" }], ["/v1/chat/completions", {}]]) {
    const r = await post(app, path as string, body);
    assert.equal(r.headers.get("retry-after"), "1");
    assert.equal((await expectError(r, 503)).code, "model_loading");
  }
  await expectError(await app.request("/v1/models"), 503);
  await expectError(await app.request("/v1/sessions/x"), 503);
  const m = await app.request("/metrics");
  assert.match(await m.text(), /^tnl_model_ready 0$/m);
  resolve(await cpuModel());
  await ctx.ready;
  const ok = await jsonOf(await app.request("/health"));
  assert.equal(ok.status, "ok");
  assert.equal(ok.model, "tnl-shakespeare-6m");
  assert.equal(ok.backend, "cpu");
  assert.equal(typeof ok.device, "string");
});

Deno.test("errors: a model that failed to load gives 503s", async () => {
  const failing = Promise.reject(new Error("no such model"));
  const { app, ctx } = await testApp({ model: failing });
  await ctx.ready.catch(() => {});
  const h = await app.request("/health");
  assert.equal(h.status, 503);
  assert.equal((await h.json()).status, "error");
  assert.equal(
    (await expectError(await post(app, "/v1/completions", { prompt: "a" }), 503)).code,
    "model_unavailable",
  );
});

/** A store whose backend is down (every call fails with 503-class StoreError). */
function downStore(): SessionStore {
  const fail = () =>
    Promise.reject(new StoreError("redis", "backend_unavailable", "connection refused"));
  return {
    kind: "redis",
    get: fail,
    getEntry: fail,
    put: fail,
    delete: fail,
    size: fail,
    close: () => Promise.resolve(),
  };
}

Deno.test("errors: an unavailable store is a 503 with Retry-After; new completions still answer", async () => {
  const { app, logs } = await testApp({ store: downStore() });
  for (
    const r of [
      await app.request("/v1/sessions/abc"),
      await post(app, "/v1/completions", { prompt: "a", session: "abc", max_tokens: 1 }),
      await post(app, "/v1/sessions", {}),
      await app.request("/v1/sessions/abc/state"),
    ]
  ) {
    assert.equal(r.headers.get("retry-after"), "1");
    assert.equal((await expectError(r, 503)).code, "backend_unavailable");
  }
  const body = await jsonOf(await post(app, "/v1/completions", { prompt: "a", max_tokens: 2 }));
  assert.equal(body.session, null);
  assert.ok(logs.some((l) => l.msg === "session not stored"));
  const m = await (await app.request("/metrics")).text();
  assert.doesNotMatch(m, /^tnl_sessions /m);
});

Deno.test("errors: unexpected failures are 500s without details; logged with the request id", async () => {
  const { app, ctx, logs } = await testApp();
  const engine = ctx.serving!.engine;
  const original = engine.generate;
  engine.generate = () => {
    throw new Error("secret internal detail");
  };
  try {
    const res = await post(app, "/v1/completions", { prompt: "a" }, {
      headers: { "x-request-id": "my-request-1" },
    });
    assert.equal(res.headers.get("x-request-id"), "my-request-1");
    const text = await res.clone().text();
    assert.doesNotMatch(text, /secret|at |\.ts/);
    const e = await expectError(res, 500, null);
    assert.equal(e.type, "server_error");
    assert.match(e.message, /my-request-1/);
    assert.ok(logs.some((l) => l.id === "my-request-1" && String(l.error).includes("secret")));
    assert.equal(ctx.busy.size, 0);
  } finally {
    engine.generate = original;
  }
});

Deno.test("errors: the request timeout returns what was generated, or a 503 when nothing was", async () => {
  const { app, ctx } = await testApp({ options: { requestTimeoutMs: 400 } });
  // The end-of-text token banned, so the timeout, not a sampled stop, ends the generation.
  const noStop = { [String(ctx.serving!.engine.config.eosTokenId)]: -100 };
  const body = await jsonOf(
    await post(app, "/v1/completions", { prompt: "a", max_tokens: 5000, logit_bias: noStop }),
  );
  const [c] = body.choices as { finish_reason: string }[];
  assert.equal(c.finish_reason, "length");
  const n = (body.usage as { completion_tokens: number }).completion_tokens;
  assert.ok(n > 0 && n < 5000, `${n} tokens`);
  // The stream form ends with a finish chunk too.
  const chunks = await sseChunks(
    await post(app, "/v1/completions", {
      prompt: "a",
      max_tokens: 5000,
      stream: true,
      logit_bias: noStop,
    }),
  );
  assert.equal((chunks.at(-1)!.choices as { finish_reason: string }[])[0].finish_reason, "length");
  const quick = await testApp({ options: { requestTimeoutMs: 1 } });
  const r = await post(quick.app, "/v1/completions", { prompt: "a".repeat(3000), max_tokens: 5 });
  if (r.status === 503) {
    assert.equal(r.headers.get("retry-after"), "1");
    assert.equal((await expectError(r, 503)).code, "timeout");
  } else {
    await r.body?.cancel(); // a very fast machine: finished before the timer fired
  }
  await waitFor(() => ctx.serving!.engine.stats().running === 0);
});

Deno.test("errors: a client that goes away frees its slot (non-streaming and streaming)", async () => {
  const { app, ctx, logs } = await testApp({ store: new MemorySessionStore() });
  const engine = ctx.serving!.engine;
  const ac = new AbortController();
  const r = post(app, "/v1/completions", { prompt: "a", max_tokens: 5000 }, { signal: ac.signal });
  await waitFor(() => engine.stats().running === 1, 10_000, "running");
  ac.abort();
  const res = await r;
  assert.equal(res.status, 499);
  await res.body?.cancel();
  await waitFor(() => engine.stats().running === 0 && ctx.busy.size === 0, 10_000, "freed");
  const s = await post(app, "/v1/chat/completions", {
    messages: [{ role: "user", content: "x" }],
    max_tokens: 5000,
    stream: true,
  });
  const reader = s.body!.getReader();
  await reader.read();
  await reader.read();
  await reader.cancel();
  await waitFor(() => engine.stats().running === 0 && ctx.busy.size === 0, 10_000, "freed");
  await waitFor(() =>
    logs.filter((l) => l.msg === "request" && l.finish === "cancelled").length === 2
  );
  assert.ok(logs.some((l) => l.status === 499));
});
