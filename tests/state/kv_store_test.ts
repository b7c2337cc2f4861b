import assert from "node:assert/strict";
import { KV_CHUNK_BYTES, KvSessionStore } from "../../src/state/kv_store.ts";
import { StoreError } from "../../src/state/errors.ts";
import { bytesOf, sameBytes, storeSuite } from "./store_suite.ts";

const dirs: string[] = [];
async function tempPath(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "tnl_kv_store_" });
  dirs.push(dir);
  return `${dir}/sessions.sqlite`;
}
globalThis.addEventListener("unload", () => {
  for (const d of dirs) {
    try {
      Deno.removeSync(d, { recursive: true });
    } catch {
      // already gone
    }
  }
});

storeSuite(
  "kv store",
  async (opts) => KvSessionStore.open(await tempPath(), { ...opts, sweepIntervalMs: 0 }),
  { eviction: "written" },
);

async function keys(path: string, prefix: Deno.KvKey): Promise<Deno.KvKey[]> {
  const kv = await Deno.openKv(path);
  const out: Deno.KvKey[] = [];
  for await (const e of kv.list({ prefix })) out.push(e.key);
  kv.close();
  return out;
}

Deno.test("kv store: states over 64 KiB are chunked under a generation key; old chunks go", async () => {
  const path = await tempPath();
  const s = await KvSessionStore.open(path, { sweepIntervalMs: 0 });
  const big = bytesOf(1_000_000, 1);
  await s.put("big", big, { generation: 1 });
  const k1 = await keys(path, ["tnl", "session", "big"]);
  const chunks1 = k1.filter((k) => k[3] === "gen");
  assert.equal(chunks1.length, Math.ceil(1_000_000 / KV_CHUNK_BYTES));
  assert.ok(k1.some((k) => k[3] === "head"));
  sameBytes(await s.get("big"), big, "1 MB");
  await s.put("big", bytesOf(700_000, 2), { generation: 2 });
  const chunks2 = (await keys(path, ["tnl", "session", "big"])).filter((k) => k[3] === "gen");
  assert.equal(chunks2.length, Math.ceil(700_000 / KV_CHUNK_BYTES));
  assert.notEqual(chunks2[0][4], chunks1[0][4], "a new generation key");
  assert.deepEqual(await keys(path, ["tnl", "gc"]), [], "no garbage records left");
  await s.delete("big");
  assert.deepEqual(await keys(path, ["tnl", "session"]), []);
  assert.deepEqual(await keys(path, ["tnl", "order"]), []);
  await s.close();
});

Deno.test("kv store: a crash between chunk writes and the flip leaves the old state readable", async () => {
  const path = await tempPath();
  const s = await KvSessionStore.open(path, { sweepIntervalMs: 0, pendingMaxAgeMs: 0 });
  const old = bytesOf(300_000, 1);
  await s.put("c", old, { generation: 1 });
  // Simulate a writer that wrote its gc record and some chunks of a new generation, then died.
  const kv = await Deno.openKv(path);
  await kv.set(["tnl", "gc", "crashed-gen"], { id: "c", after: 0 });
  for (let i = 0; i < 3; i++) {
    await kv.set(["tnl", "session", "c", "gen", "crashed-gen", i], bytesOf(KV_CHUNK_BYTES, 9));
  }
  kv.close();
  sameBytes(await s.get("c"), old, "old state");
  assert.equal((await s.getEntry("c"))!.generation, 1);
  // The sweep removes the abandoned chunks, and only those.
  assert.equal(await s.sweep(), 1);
  const gens = new Set((await keys(path, ["tnl", "session", "c", "gen"])).map((k) => k[4]));
  assert.equal(gens.size, 1);
  assert.ok(!gens.has("crashed-gen"));
  sameBytes(await s.get("c"), old, "still the old state");
  await s.close();
});

Deno.test("kv store: damaged chunks fail the SHA-256 check", async () => {
  const path = await tempPath();
  const s = await KvSessionStore.open(path, { sweepIntervalMs: 0 });
  await s.put("d", bytesOf(100_000, 1));
  const kv = await Deno.openKv(path);
  const head = (await kv.get<{ gen: string }>(["tnl", "session", "d", "head"])).value!;
  await kv.set(["tnl", "session", "d", "gen", head.gen, 0], bytesOf(KV_CHUNK_BYTES, 2));
  kv.close();
  await assert.rejects(
    s.get("d"),
    (e: unknown) => e instanceof StoreError && e.code === "internal",
  );
  await s.close();
});

Deno.test("kv store: TTL is also set on the records (expireIn) and read back as expiry", async () => {
  const path = await tempPath();
  const s = await KvSessionStore.open(path, { sweepIntervalMs: 0, ttlMs: 100 });
  await s.put("t", bytesOf(100_000, 1));
  assert.ok(await s.get("t"));
  await new Promise((r) => setTimeout(r, 250));
  assert.equal(await s.get("t"), null);
  assert.equal(await s.size(), 0);
  assert.equal(await s.delete("t"), false);
  await s.close();
});

Deno.test("kv store: operations after close fail as backend_unavailable", async () => {
  const s = await KvSessionStore.open(await tempPath(), { sweepIntervalMs: 0 });
  await s.close();
  await assert.rejects(
    s.get("a"),
    (e: unknown) => e instanceof StoreError && e.code === "backend_unavailable",
  );
});
