import assert from "node:assert/strict";
import { jsonOf, testApp } from "../http/support.ts";

Deno.test("health: 200 with model, backend and device; request id echoed", async () => {
  const { app } = await testApp();
  const res = await app.request("/health", { headers: { "x-request-id": "abc-123" } });
  assert.equal(res.headers.get("x-request-id"), "abc-123");
  const body = await jsonOf(res);
  assert.equal(body.status, "ok");
  assert.equal(body.model, "tnl-shakespeare-6m");
  assert.equal(body.backend, "cpu");
  assert.match(body.device as string, /cpu/);
  assert.equal(body.running, 0);
  // A malformed request id is replaced by a generated one.
  const bad = await app.request("/health", { headers: { "x-request-id": "has spaces\tand tabs" } });
  assert.match(bad.headers.get("x-request-id")!, /^req_[A-Za-z0-9_-]+$/);
  await bad.body?.cancel();
});

Deno.test("health: CORS when enabled (preflight and headers)", async () => {
  const { app } = await testApp({ options: { cors: "https://example.com" } });
  const pre = await app.request("/v1/completions", {
    method: "OPTIONS",
    headers: { origin: "https://example.com", "access-control-request-method": "POST" },
  });
  assert.equal(pre.status, 204);
  assert.equal(pre.headers.get("access-control-allow-origin"), "https://example.com");
  assert.match(pre.headers.get("access-control-allow-methods")!, /POST/);
  const res = await app.request("/health");
  assert.equal(res.headers.get("access-control-allow-origin"), "https://example.com");
  await res.body?.cancel();
  const off = await testApp();
  const r2 = await off.app.request("/health");
  assert.equal(r2.headers.get("access-control-allow-origin"), null);
  await r2.body?.cancel();
});

Deno.test("health: one structured log line per request", async () => {
  const { app, logs } = await testApp();
  await (await app.request("/health", { headers: { "x-request-id": "log-me" } })).body?.cancel();
  const line = logs.find((l) => l.id === "log-me")!;
  assert.equal(line.msg, "request");
  assert.equal(line.level, "info");
  assert.equal(line.method, "GET");
  assert.equal(line.path, "/health");
  assert.equal(line.status, 200);
  assert.equal(typeof line.ms, "number");
});
