import assert from "node:assert/strict";
import { FsSessionStore, sessionFileName, sessionIdOfFile } from "../../src/state/fs_store.ts";
import { StoreConflictError, StoreError } from "../../src/state/errors.ts";
import { bytesOf, sameBytes, storeSuite } from "./store_suite.ts";

const dirs: string[] = [];
storeSuite("fs store", async (opts) => {
  const dir = await Deno.makeTempDir({ prefix: "tnl_fs_store_" });
  dirs.push(dir);
  return FsSessionStore.open(dir, { ...opts, sweepIntervalMs: 0 });
}, { eviction: "written" });

async function tempStore(opts = {}): Promise<[FsSessionStore, string]> {
  const dir = await Deno.makeTempDir({ prefix: "tnl_fs_store_" });
  dirs.push(dir);
  return [await FsSessionStore.open(dir, { sweepIntervalMs: 0, ...opts }), dir];
}

Deno.test("fs store: file names are base32 of validated ids, reversible, distinct by case", () => {
  assert.equal(sessionFileName("a"), "me.tnls");
  assert.equal(sessionFileName("abc"), "mfrgg.tnls");
  assert.notEqual(sessionFileName("Ab"), sessionFileName("aB"));
  for (const id of ["a", "s_Zm9vYmFy-_", "X".repeat(128), "0"]) {
    const name = sessionFileName(id);
    assert.match(name, /^[a-z2-7]+\.tnls$/);
    assert.ok(name.length + ".tmp-".length + 16 + 1 + 16 <= 255); // .tmp-<writer>-<random>
    assert.equal(sessionIdOfFile(name), id);
  }
  assert.throws(() => sessionFileName("../x"), StoreError);
  assert.equal(sessionIdOfFile("me.tnls.tmp-00"), null);
  assert.equal(sessionIdOfFile(".lock"), null);
  assert.equal(sessionIdOfFile("mf.tnls"), null); // not canonical base32 of an id
});

Deno.test("fs store: leftover temporaries are ignored, then swept when old", async () => {
  const [s, dir] = await tempStore({ tmpMaxAgeMs: 60_000 });
  await s.put("a", bytesOf(100, 1), { generation: 1 });
  const name = sessionFileName("a");
  // A crash mid-write leaves a partial temporary next to the entry.
  const tmp = `${dir}/${name}.tmp-deadbeefdeadbeef`;
  await Deno.writeFile(tmp, bytesOf(37, 2));
  sameBytes(await s.get("a"), bytesOf(100, 1), "old state still read");
  assert.equal(await s.size(), 1);
  assert.equal(await s.sweep(), 0);
  assert.ok(await Deno.stat(tmp));
  const old = new Date(Date.now() - 3_600_000);
  await Deno.utime(tmp, old, old);
  assert.equal(await s.sweep(), 1);
  await assert.rejects(Deno.stat(tmp), Deno.errors.NotFound);
  // A temporary for an id that was never completed is not a session either.
  await Deno.writeFile(`${dir}/${sessionFileName("b")}.tmp-0123`, bytesOf(10, 3));
  assert.equal(await s.get("b"), null);
  assert.equal(await s.size(), 1);
  await s.close();
});

Deno.test("fs store: temporaries left by a crashed writer are removed at open, live ones kept", async () => {
  const [live, dir] = await tempStore({ tmpMaxAgeMs: 3_600_000 });
  const name = sessionFileName("a");
  // A live store's write in progress: its temporary carries its writer token.
  const writer = [...Deno.readDirSync(dir)].find((e) => e.name.startsWith(".writer-"))!.name;
  const liveTmp = `${dir}/${name}.tmp-${writer.slice(".writer-".length)}-00000000000000aa`;
  await Deno.writeFile(liveTmp, bytesOf(50, 1));
  // A crashed writer: its lock file is there but nobody holds the lock; and older-style names.
  await Deno.writeFile(`${dir}/.writer-0123456789abcdef`, new Uint8Array());
  const orphans = [
    `${dir}/${name}.tmp-0123456789abcdef-00000000000000bb`,
    `${dir}/${sessionFileName("b")}.tmp-fedcba9876543210-00000000000000cc`, // no lock file
    `${dir}/${name}.tmp-deadbeefdeadbeef`, // the format before writer tokens
  ];
  for (const p of orphans) await Deno.writeFile(p, bytesOf(900_000, 2));
  // Fresh files: the age-based sweep alone would keep them for an hour.
  const [next] = [await FsSessionStore.open(dir, { sweepIntervalMs: 0, tmpMaxAgeMs: 3_600_000 })];
  for (const p of orphans) await assert.rejects(Deno.stat(p), Deno.errors.NotFound, p);
  await assert.rejects(Deno.stat(`${dir}/.writer-0123456789abcdef`), Deno.errors.NotFound);
  assert.ok(await Deno.stat(liveTmp), "the live store's temporary is kept");
  assert.ok(await Deno.stat(`${dir}/${writer}`), "the live store's lock file is kept");
  // Both stores still write; closing removes a store's lock file, and then its leftovers go too.
  await live.put("a", bytesOf(10, 3), { generation: 1 });
  await next.put("b", bytesOf(10, 4), { generation: 1 });
  await live.close();
  await assert.rejects(Deno.stat(`${dir}/${writer}`), Deno.errors.NotFound);
  assert.equal(await next.removeOrphans(), 1);
  await assert.rejects(Deno.stat(liveTmp), Deno.errors.NotFound);
  sameBytes(await next.get("a"), bytesOf(10, 3), "entries are untouched");
  await next.close();
  const left = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  assert.deepEqual(left, [".lock", sessionFileName("a"), sessionFileName("b")].sort());
});

Deno.test("fs store: damaged files and foreign files are not sessions", async () => {
  const [s, dir] = await tempStore();
  await s.put("a", bytesOf(100, 1));
  const path = `${dir}/${sessionFileName("a")}`;
  const full = await Deno.readFile(path);
  await Deno.writeFile(path, full.subarray(0, full.length - 1));
  assert.equal(await s.get("a"), null, "truncated file");
  await Deno.writeFile(path, bytesOf(200, 2));
  assert.equal(await s.get("a"), null, "garbage file");
  await Deno.writeFile(`${dir}/notes.txt`, new TextEncoder().encode("hi"));
  assert.equal(await s.size(), 0);
  await s.close();
});

Deno.test("fs store: entries persist across instances; compare-and-set holds across them", async () => {
  const [s1, dir] = await tempStore();
  const s2 = await FsSessionStore.open(dir, { sweepIntervalMs: 0 });
  await s1.put("p", bytesOf(1000, 1), { generation: 4 });
  assert.equal((await s2.getEntry("p"))!.generation, 4);
  // Two "processes" race to write generation 5 over 4: one wins.
  const r = await Promise.allSettled([
    s1.put("p", bytesOf(1000, 2), { generation: 5, expectGeneration: 4 }),
    s2.put("p", bytesOf(1000, 3), { generation: 5, expectGeneration: 4 }),
    s1.put("p", bytesOf(1000, 4), { generation: 5, expectGeneration: 4 }),
    s2.put("p", bytesOf(1000, 5), { generation: 5, expectGeneration: 4 }),
  ]);
  assert.equal(r.filter((x) => x.status === "fulfilled").length, 1);
  for (const x of r) if (x.status === "rejected") assert.ok(x.reason instanceof StoreConflictError);
  await s1.close();
  await s2.close();
  const s3 = await FsSessionStore.open(dir, { sweepIntervalMs: 0 });
  assert.equal((await s3.getEntry("p"))!.generation, 5);
  // No temporaries are left behind by finished or refused writes.
  const names = [];
  for await (const e of Deno.readDir(dir)) if (!e.name.startsWith(".writer-")) names.push(e.name);
  assert.deepEqual(names.sort(), [".lock", sessionFileName("p")].sort());
  await s3.close();
});

Deno.test("fs store: expired files are swept; max sessions applies at open", async () => {
  const [s, dir] = await tempStore();
  await s.put("e", bytesOf(10, 1), { ttlMs: 50 });
  for (const id of ["k1", "k2", "k3"]) {
    await s.put(id, bytesOf(10, 2));
    await new Promise((r) => setTimeout(r, 10));
  }
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(await s.sweep(), 1);
  await s.close();
  const s2 = await FsSessionStore.open(dir, { sweepIntervalMs: 0, maxSessions: 2 });
  assert.equal(await s2.size(), 2);
  assert.equal(await s2.get("k1"), null);
  await s2.close();
});

Deno.test("fs store: an unusable directory fails as backend_unavailable", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tnl_fs_store_" });
  dirs.push(dir);
  const file = `${dir}/plain-file`;
  await Deno.writeFile(file, new Uint8Array(1));
  await assert.rejects(
    FsSessionStore.open(`${file}/sub`),
    (e: unknown) => e instanceof StoreError && e.code === "backend_unavailable",
  );
});

globalThis.addEventListener("unload", () => {
  for (const d of dirs) {
    try {
      Deno.removeSync(d, { recursive: true });
    } catch {
      // already gone
    }
  }
});
