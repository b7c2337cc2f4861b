import assert from "node:assert/strict";
import { openStore, StoreError } from "../../src/state/mod.ts";
import { bytesOf, sameBytes } from "./store_suite.ts";

Deno.test("openStore: memory, fs:DIR, kv, kv:PATH", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tnl_open_store_" });
  try {
    const specs = ["memory", `fs:${dir}/fs`, `kv:${dir}/db.sqlite`, "kv::memory:"];
    for (const spec of specs) {
      const s = await openStore(spec, { ttlMs: 60_000, maxSessions: 10, sweepIntervalMs: 0 });
      assert.equal(s.kind, spec.split(":")[0]);
      await s.put("a", bytesOf(70_000, 1), { generation: 2 });
      sameBytes(await s.get("a"), bytesOf(70_000, 1), spec);
      assert.equal(await s.size(), 1);
      await s.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("openStore: bad specs are refused with the spec named", async () => {
  for (
    const spec of [
      "",
      "mem",
      "fs:",
      "kv:",
      "redis:",
      "redis://",
      "redis://host:1/abc",
      "http://x",
      "FS:/tmp",
    ]
  ) {
    await assert.rejects(
      openStore(spec),
      (e: unknown) =>
        e instanceof StoreError && e.code === "invalid_input" &&
        e.message.includes(JSON.stringify(spec)),
      spec,
    );
  }
  await assert.rejects(openStore("memory", { ttlMs: -5 }), StoreError);
});
