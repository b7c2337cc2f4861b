import assert from "node:assert/strict";
import { toHttpError } from "../../src/http/errors.ts";
import { MemorySessionStore } from "../../src/state/memory_store.ts";
import { StoreError } from "../../src/state/errors.ts";
import { bytesOf, storeSuite } from "./store_suite.ts";

storeSuite("memory store", (opts) => Promise.resolve(new MemorySessionStore(opts)), {
  eviction: "lru",
});

Deno.test("memory store: byte budget evicts the least recently used, refuses oversized states", async () => {
  const s = new MemorySessionStore({ maxBytes: 1000 });
  await s.put("a", bytesOf(400, 1));
  await s.put("b", bytesOf(400, 2));
  await s.get("a");
  await s.put("c", bytesOf(400, 3));
  assert.equal(s.bytes, 800);
  assert.equal(await s.get("b"), null);
  assert.ok(await s.get("a"));
  assert.ok(await s.get("c"));
  await assert.rejects(
    s.put("d", bytesOf(1001, 4)),
    (e: unknown) =>
      e instanceof StoreError && e.code === "payload_too_large" && toHttpError(e).status === 413,
  );
  // Overwrites are accounted once.
  await s.put("a", bytesOf(100, 5));
  assert.equal(s.bytes, 500);
  await s.close();
  await assert.rejects(
    s.get("a"),
    (e: unknown) => e instanceof StoreError && e.code === "backend_unavailable",
  );
});

Deno.test("memory store: keeps a copy, or the caller's array when it hands it over (adopt)", async () => {
  const s = new MemorySessionStore();
  const copied = bytesOf(64, 1), adopted = bytesOf(64, 2);
  await s.put("a", copied);
  await s.put("b", adopted, { adopt: true });
  copied[0] ^= 0xff;
  assert.notEqual((await s.get("a"))![0], copied[0], "a later change of the caller's array");
  assert.equal((await s.getEntry("b"))!.bytes, adopted);
  await s.close();
});

Deno.test("memory store: bad options are refused", () => {
  assert.throws(() => new MemorySessionStore({ maxBytes: 0 }), StoreError);
  assert.throws(() => new MemorySessionStore({ ttlMs: -1 }), StoreError);
  assert.throws(() => new MemorySessionStore({ maxSessions: 1.5 }), StoreError);
});
