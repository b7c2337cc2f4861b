/**
 * The behaviour every `SessionStore` must have, as a suite each store's test file runs with its own
 * factory: round trip, overwrite, delete, TTL, eviction, compare-and-set, concurrent writers, ids.
 * @module
 */

import { toHttpError } from "../../src/http/errors.ts";
import assert from "node:assert/strict";
import { StoreConflictError, StoreError } from "../../src/state/errors.ts";
import type { SessionStore, StoreOptions } from "../../src/state/store.ts";

/** Opens a fresh, empty store with the given options. */
export type StoreFactory = (opts: StoreOptions) => Promise<SessionStore>;

/** Options of the suite. */
export interface SuiteOptions {
  /** Skip every test (with the reason in the name) when set. */
  ignore?: string | false;
  /** Eviction order: "lru" (reads count as use) or "written" (last write only). */
  eviction: "lru" | "written";
}

/** Deterministic bytes of a given length and seed. */
export function bytesOf(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

/** Sleep `ms`. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Equal byte arrays (without printing megabytes on failure). */
export function sameBytes(a: Uint8Array | null, b: Uint8Array | null, msg = ""): void {
  assert.ok(a !== null && b !== null, `${msg}: null`);
  assert.equal(a.length, b.length, `${msg}: length`);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) assert.fail(`${msg}: differs at byte ${i}`);
}

/** Register the shared store tests under `name`. */
export function storeSuite(name: string, open: StoreFactory, so: SuiteOptions): void {
  const test = (title: string, fn: () => Promise<void>) =>
    Deno.test({
      name: `${name}: ${title}${so.ignore ? ` (skipped: ${so.ignore})` : ""}`,
      ignore: Boolean(so.ignore),
      fn,
    });

  async function withStore(
    opts: StoreOptions,
    fn: (s: SessionStore) => Promise<void>,
  ): Promise<void> {
    const s = await open(opts);
    try {
      await fn(s);
    } finally {
      await s.close();
    }
  }

  test("round trip, overwrite, delete", () =>
    withStore({}, async (s) => {
      assert.equal(await s.get("a"), null);
      assert.equal(await s.getEntry("a"), null);
      const a1 = bytesOf(1000, 1);
      await s.put("a", a1, { generation: 1 });
      sameBytes(await s.get("a"), a1, "a1");
      assert.equal((await s.getEntry("a"))!.generation, 1);
      const a2 = bytesOf(3000, 2);
      await s.put("a", a2, { generation: 2 });
      sameBytes(await s.get("a"), a2, "a2");
      assert.equal((await s.getEntry("a"))!.generation, 2);
      await s.put("b", new Uint8Array(0));
      assert.deepEqual(await s.getEntry("b"), { bytes: new Uint8Array(0), generation: -1 });
      assert.equal(await s.size(), 2);
      assert.equal(await s.delete("a"), true);
      assert.equal(await s.delete("a"), false);
      assert.equal(await s.get("a"), null);
      assert.equal(await s.size(), 1);
      // A caller reusing its buffer does not change what was stored.
      const buf = bytesOf(100, 3);
      await s.put("c", buf);
      buf.fill(0);
      sameBytes(await s.get("c"), bytesOf(100, 3), "copied");
    }));

  test("a 1 MB state round-trips", () =>
    withStore({}, async (s) => {
      const big = bytesOf(1_000_000, 9);
      await s.put("big", big, { generation: 5 });
      sameBytes(await s.get("big"), big, "big");
      const big2 = bytesOf(1_300_000, 10);
      await s.put("big", big2, { generation: 6 });
      sameBytes(await s.get("big"), big2, "big2");
    }));

  test("TTL expiry (store default and per write)", () =>
    withStore({ ttlMs: 150 }, async (s) => {
      await s.put("short", bytesOf(10, 1));
      await s.put("forever", bytesOf(10, 2), { ttlMs: 0 });
      await s.put("long", bytesOf(10, 3), { ttlMs: 60_000 });
      assert.ok(await s.get("short"));
      await sleep(400);
      assert.equal(await s.get("short"), null);
      assert.equal(await s.getEntry("short"), null);
      assert.ok(await s.get("forever"));
      assert.ok(await s.get("long"));
      assert.equal(await s.size(), 2);
      // Rewriting restarts the clock; an expired id can be written again.
      await s.put("short", bytesOf(10, 4));
      sameBytes(await s.get("short"), bytesOf(10, 4), "rewritten");
    }));

  test(`max sessions evicts the least recently ${so.eviction === "lru" ? "used" : "written"}`, () =>
    withStore({ maxSessions: 3 }, async (s) => {
      for (const id of ["a", "b", "c"]) {
        await s.put(id, bytesOf(10, id.charCodeAt(0)));
        await sleep(5);
      }
      if (so.eviction === "lru") assert.ok(await s.get("a"));
      await s.put("d", bytesOf(10, 4));
      assert.equal(await s.size(), 3);
      const gone = so.eviction === "lru" ? "b" : "a";
      assert.equal(await s.get(gone), null, `${gone} evicted`);
      for (const id of ["a", "b", "c", "d"]) {
        if (id !== gone) assert.ok(await s.get(id), `${id} kept`);
      }
      // Overwriting an existing id evicts nothing.
      await sleep(5);
      await s.put("d", bytesOf(10, 5));
      assert.equal(await s.size(), 3);
    }));

  test("compare-and-set on the generation", () =>
    withStore({}, async (s) => {
      await s.put("x", bytesOf(10, 1), { generation: 1, expectGeneration: null });
      await assert.rejects(
        s.put("x", bytesOf(10, 2), { generation: 1, expectGeneration: null }),
        (e: unknown) =>
          e instanceof StoreConflictError && e.code === "conflict" && e.actual === 1 &&
          toHttpError(e).status === 409,
      );
      await s.put("x", bytesOf(10, 3), { generation: 2, expectGeneration: 1 });
      await assert.rejects(
        s.put("x", bytesOf(10, 4), { generation: 3, expectGeneration: 1 }),
        (e: unknown) => e instanceof StoreConflictError && e.expected === 1 && e.actual === 2,
      );
      sameBytes(await s.get("x"), bytesOf(10, 3), "kept the winner");
      // Racing writers that all saw generation 2: exactly one wins.
      const results = await Promise.allSettled(
        Array.from({ length: 8 }, (_, i) =>
          s.put("x", bytesOf(5000, 100 + i), { generation: 3, expectGeneration: 2 })),
      );
      const won = results.map((r, i) => (r.status === "fulfilled" ? i : -1)).filter((i) =>
        i >= 0
      );
      assert.equal(won.length, 1, JSON.stringify(results.map((r) => r.status)));
      for (const r of results) {
        if (r.status === "rejected") {
          assert.ok(r.reason instanceof StoreConflictError, String(r.reason));
        }
      }
      sameBytes(await s.get("x"), bytesOf(5000, 100 + won[0]), "the winner's bytes");
      assert.equal((await s.getEntry("x"))!.generation, 3);
      // Deleted: only "no entry" matches.
      await s.delete("x");
      await s.put("x", bytesOf(10, 5), { generation: 1, expectGeneration: null });
    }));

  test("concurrent writers: the last complete write wins, never a mix", () =>
    withStore({}, async (s) => {
      const n = 6;
      const states = Array.from({ length: n }, (_, i) => bytesOf(200_000 + i * 70_001, 50 + i));
      await s.put("race", bytesOf(150_000, 49));
      const candidates = [bytesOf(150_000, 49), ...states];
      let reading = true;
      const reads: Promise<void>[] = [];
      for (let r = 0; r < 3; r++) {
        reads.push((async () => {
          while (reading) {
            const got = await s.get("race");
            assert.ok(got, "never absent while being overwritten");
            const match = candidates.some((c) =>
              c.length === got.length && c.every((b, i) => got[i] === b)
            );
            assert.ok(match, `a read returned ${got.length} bytes that are no complete write`);
            await sleep(0);
          }
        })());
      }
      await Promise.all(states.map((b, i) => s.put("race", b, { generation: i })));
      reading = false;
      await Promise.all(reads);
      const final = await s.getEntry("race");
      assert.ok(final);
      sameBytes(
        final.bytes,
        states[final.generation],
        "final is one complete write with its generation",
      );
    }));

  test("ids: sorted pages of live ids, after a cursor", () =>
    withStore({}, async (s) => {
      assert.ok(s.ids, "the store lists its ids");
      assert.deepEqual(await s.ids!({ limit: 10 }), []);
      const ids = ["b", "A", "a", "c_1", "c-2", "Z9"];
      for (const [i, id] of ids.entries()) await s.put(id, bytesOf(10, i));
      await s.put("gone", bytesOf(10, 9), { ttlMs: 1 });
      await s.put("deleted", bytesOf(10, 9));
      await s.delete("deleted");
      await sleep(20);
      const sorted = [...ids].sort();
      assert.deepEqual(await s.ids!({ limit: 100 }), sorted);
      assert.deepEqual(await s.ids!({ limit: 2 }), sorted.slice(0, 2));
      assert.deepEqual(await s.ids!({ limit: 2, after: sorted[1] }), sorted.slice(2, 4));
      assert.deepEqual(await s.ids!({ limit: 10, after: sorted[5] }), []);
      assert.deepEqual(await s.ids!({ limit: 10, after: "B" }), sorted.filter((x) => x > "B"));
    }));

  test("invalid and path-traversal ids are refused", () =>
    withStore({}, async (s) => {
      const bad = [
        "",
        "../x",
        "..",
        "a/b",
        "a\\b",
        "/etc/passwd",
        "a b",
        "x".repeat(129),
        "é",
        "a.b",
        "%2e%2e",
        "a\0b",
      ];
      for (const id of bad) {
        for (
          const op of [() => s.get(id), () =>
            s.getEntry(id), () =>
            s.put(id, new Uint8Array(1)), () =>
            s.delete(id)]
        ) {
          await assert.rejects(op(), (e: unknown) =>
            e instanceof StoreError && e.code === "invalid_input" && toHttpError(e).status === 400);
        }
      }
      const longest = "A_-9".repeat(32);
      await s.put(longest, bytesOf(10, 1));
      assert.ok(await s.get(longest));
      // Ids that differ only in case are different sessions.
      await s.put("Case", bytesOf(10, 2));
      await s.put("case", bytesOf(10, 3));
      sameBytes(await s.get("Case"), bytesOf(10, 2), "Case");
      sameBytes(await s.get("case"), bytesOf(10, 3), "case");
    }));
}
