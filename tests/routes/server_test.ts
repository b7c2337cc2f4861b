import assert from "node:assert/strict";
import type { TnlModel } from "../../src/load.ts";
import { memoryLogger } from "../../src/http/logger.ts";
import { startServer } from "../../routes/server.ts";
import { readSse, SseParser } from "../../src/http/sse.ts";
import { MemorySessionStore } from "../../src/state/memory_store.ts";
import { cpuModel, waitFor } from "../http/support.ts";

const model = await cpuModel();

function postJson(url: string, body: unknown, signal?: AbortSignal): Promise<Response> {
  return fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    signal,
  });
}

Deno.test("server: /health is 503 while the model promise is pending, 200 after", async () => {
  let resolve!: (m: TnlModel) => void;
  const pending = new Promise<TnlModel>((r) => (resolve = r));
  const logger = memoryLogger();
  const srv = await startServer(pending, {
    port: 0,
    hostname: "127.0.0.1",
    logger,
    handleSignals: false,
  });
  try {
    const h = await fetch(`${srv.url}/health`);
    assert.equal(h.status, 503);
    assert.equal(h.headers.get("retry-after"), "1");
    await h.body?.cancel();
    resolve(model);
    await srv.ctx.ready;
    const ok = await fetch(`${srv.url}/health`);
    assert.equal(ok.status, 200);
    assert.equal((await ok.json()).model, "tnl-shakespeare-6m");
  } finally {
    await srv.shutdown(1000);
  }
  assert.ok(logger.records.some((r) => r.msg === "stopped"));
});

Deno.test("server: Deno.serve's request.signal reads aborted once the client disconnects", async () => {
  let seen = false;
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (req) => {
    const t0 = Date.now();
    while (!req.signal.aborted && Date.now() - t0 < 5000) {
      await new Promise((r) => setTimeout(r, 10));
    }
    seen = req.signal.aborted;
    return new Response("late");
  });
  const ac = new AbortController();
  const p = fetch(`http://127.0.0.1:${server.addr.port}/`, { signal: ac.signal }).catch(() => null);
  await new Promise((r) => setTimeout(r, 100));
  ac.abort();
  await p;
  await waitFor(() => seen, 5000, "request.signal aborted");
  await server.shutdown();
});

Deno.test("server: clients that disconnect mid-request free their slots and sessions", async () => {
  const logger = memoryLogger();
  const srv = await startServer(model, {
    port: 0,
    hostname: "127.0.0.1",
    logger,
    handleSignals: false,
  });
  const engine = srv.ctx.serving!.engine;
  try {
    // Streaming: read two chunks, then go away.
    const ac = new AbortController();
    const res = await postJson(`${srv.url}/v1/completions`, {
      prompt: "ROMEO:",
      max_tokens: 5000,
      stream: true,
    }, ac.signal);
    const reader = res.body!.getReader();
    await reader.read();
    await reader.read();
    ac.abort();
    await reader.cancel().catch(() => {});
    await waitFor(
      () => engine.stats().running === 0 && srv.ctx.busy.size === 0,
      10_000,
      "stream freed",
    );
    // Non-streaming: go away while it generates.
    const ac2 = new AbortController();
    const p = postJson(`${srv.url}/v1/chat/completions`, {
      messages: [{ role: "user", content: "x" }],
      max_tokens: 5000,
    }, ac2.signal).catch(() => null);
    await waitFor(() => engine.stats().running === 1, 10_000, "running");
    ac2.abort();
    await p;
    await waitFor(
      () => engine.stats().running === 0 && srv.ctx.busy.size === 0,
      10_000,
      "request freed",
    );
    await waitFor(
      () => logger.records.filter((r) => r.finish === "cancelled").length === 2,
      5000,
      "logs",
    );
    const stats = engine.stats();
    assert.equal(stats.queueDepth, 0);
    const metrics = await (await fetch(`${srv.url}/metrics`)).text();
    assert.match(metrics, /^tnl_running_sequences 0$/m);
    assert.match(metrics, /^tnl_queue_depth 0$/m);
    assert.match(metrics, /^tnl_sessions_busy 0$/m);
  } finally {
    await srv.shutdown(1000);
  }
});

Deno.test("server: shutdown lets running requests finish within the grace period", async () => {
  const store = new MemorySessionStore();
  const srv = await startServer(model, {
    port: 0,
    hostname: "127.0.0.1",
    store,
    logger: memoryLogger(),
    handleSignals: false,
  });
  const res = await postJson(`${srv.url}/v1/completions`, {
    prompt: "ROMEO:",
    max_tokens: 20,
    stream: true,
  });
  const reader = res.body!.getReader();
  await reader.read();
  const stopping = srv.shutdown(30_000);
  // The running stream completes normally.
  const parser = new SseParser();
  const events: string[] = [];
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    events.push(...parser.push(new TextDecoder().decode(value)));
  }
  assert.equal(events.at(-1), "[DONE]");
  const fin = JSON.parse(events.at(-2)!);
  assert.equal(fin.choices[0].finish_reason, "length");
  await stopping;
  await srv.finished;
  await assert.rejects(fetch(`${srv.url}/health`));
  // The store was closed.
  await assert.rejects(store.get("x"));
});

Deno.test("server: after the grace period running requests are cancelled and end cleanly", async () => {
  const srv = await startServer(model, {
    port: 0,
    hostname: "127.0.0.1",
    logger: memoryLogger(),
    handleSignals: false,
  });
  const res = await postJson(`${srv.url}/v1/completions`, {
    prompt: "ROMEO:",
    max_tokens: 20_000,
    stream: true,
  });
  const body = res.body!;
  const t0 = Date.now();
  const [events] = await Promise.all([readSse(body), srv.shutdown(300)]);
  assert.ok(Date.now() - t0 < 10_000);
  assert.equal(events.at(-1), "[DONE]");
  const fin = JSON.parse(events.at(-2)!);
  assert.equal(fin.choices[0].finish_reason, "length");
  assert.equal(srv.ctx.serving!.engine.stats().running, 0);
});
