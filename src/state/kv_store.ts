/**
 * A session store in Deno KV (`Deno.openKv`: a local SQLite file, `:memory:`, or a KV Connect URL;
 * needs `"unstable": ["kv"]`). KV values are limited to 64 KiB, so a state is written in chunks:
 *
 * ```
 * [...prefix, "session", id, "gen", g, i]   chunk i of write g (63 KiB each), immutable
 * [...prefix, "session", id, "head"]        { gen: g, chunks, bytes, sha256, generation,
 *                                             expiresAt, writtenAt }
 * [...prefix, "order", writtenAt, id]       { expiresAt }: sessions by last write, for eviction
 * [...prefix, "gc", g]                      { id, after }: chunks to delete unless g is a head
 * [...prefix, "lease", id]                  { owner, expiresAt }: the session's lease (`leases`)
 * ```
 *
 * A write puts its chunks under a fresh, random `g`, then flips the head in one atomic operation
 * that checks the head's versionstamp (retrying when another writer got in between), so a reader
 * sees the old state or the new one, never a mix: it reads the head, then the chunks of that `g`,
 * and checks the SHA-256 of the assembled bytes (chunks of a replaced `g` are deleted after the
 * flip; a reader that finds them gone reads the new head). Compare-and-set checks the generation
 * in the same atomic flip.
 *
 * Leases (`leases`): the lease record is read, then written in an atomic operation that checks its
 * versionstamp, so of two processes racing for it one wins; a record past its `expiresAt` counts
 * as absent (it also carries `expireIn`, but KV deletes expired keys lazily). Expiry uses this
 * machine's clock, so machines sharing a database need clocks within a fraction of the TTL.
 *
 * Crash safety: a `gc` record is set before the chunks are written and removed by the flip; the
 * flip sets one for the replaced `g`, removed once its chunks are deleted. A crash at any point
 * leaves a `gc` record, and `sweep()` (at open and every `sweepIntervalMs`) deletes chunks of
 * records older than their `after` time. With a TTL, chunks also carry `expireIn` as a safety net.
 * @module
 */

import { StoreConflictError, StoreError } from "./errors.ts";
import {
  checkStoreOptions,
  type IdsOptions,
  pageOfIds,
  type PutOptions,
  type SessionLeases,
  type StoredSession,
  type StoreOptions,
} from "./store.ts";
import { StoreBase } from "./store_base.ts";

/** Options of the Deno KV store. */
export interface KvStoreOptions extends StoreOptions {
  /** Key prefix (default `["tnl"]`). */
  prefix?: Deno.KvKeyPart[];
  /** Sweep period in ms (default 60,000; 0: only at open and when `sweep()` is called). */
  sweepIntervalMs?: number;
  /** How long an unfinished write may run before its chunks count as garbage (default 10 min). */
  pendingMaxAgeMs?: number;
}

/** Bytes per chunk: under the 64 KiB value limit. */
export const KV_CHUNK_BYTES = 63 * 1024;
/** Chunks per atomic commit: under the 800 KiB mutation limit. */
const CHUNKS_PER_COMMIT = 12;
/** Chunks outlive their head by this much when a TTL applies. */
const CHUNK_TTL_MARGIN_MS = 5 * 60_000;
const FLIP_ATTEMPTS = 100;
const READ_ATTEMPTS = 10;

interface Head {
  gen: string;
  chunks: number;
  bytes: number;
  sha256: string;
  generation: number;
  expiresAt: number;
  writtenAt: number;
}

function isHead(v: unknown): v is Head {
  const h = v as Head;
  return typeof h === "object" && h !== null && typeof h.gen === "string" &&
    Number.isSafeInteger(h.chunks) && Number.isSafeInteger(h.bytes) &&
    typeof h.sha256 === "string" &&
    Number.isSafeInteger(h.generation) && typeof h.expiresAt === "number" &&
    typeof h.writtenAt === "number";
}

const expired = (h: Head, now: number) => h.expiresAt > 0 && h.expiresAt <= now;

async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

function newGen(): string {
  const r = crypto.getRandomValues(new Uint8Array(8));
  return Date.now().toString(36) + "-" +
    Array.from(r, (b) => b.toString(16).padStart(2, "0")).join("");
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A session store in Deno KV. Open it with `KvSessionStore.open(path, opts)`. */
export class KvSessionStore extends StoreBase {
  /** Session leases (versionstamp-checked writes of an owner record with an expiry). */
  readonly leases: SessionLeases = {
    acquire: (id, owner, ttlMs) => this.#lease("acquire", id, owner, ttlMs),
    renew: (id, owner, ttlMs) => this.#lease("renew", id, owner, ttlMs),
    release: async (id, owner) => {
      await this.#lease("release", id, owner, 1);
    },
  };
  readonly #kv: Deno.Kv;
  readonly #p: Deno.KvKeyPart[];
  readonly #pendingMaxAgeMs: number;

  private constructor(kv: Deno.Kv, opts: KvStoreOptions) {
    super("kv", opts);
    this.#kv = kv;
    this.#p = opts.prefix ?? ["tnl"];
    this.#pendingMaxAgeMs = opts.pendingMaxAgeMs ?? 10 * 60_000;
  }

  /** Open the database at `path` (default: Deno's default KV location) and sweep it once. */
  static async open(path?: string, opts: KvStoreOptions = {}): Promise<KvSessionStore> {
    checkStoreOptions("kv", opts);
    let kv: Deno.Kv;
    try {
      kv = await Deno.openKv(path);
    } catch (e) {
      throw new StoreError(
        "kv",
        "backend_unavailable",
        `cannot open ${path ?? "the default database"}: ${(e as Error).message}`,
        { cause: e },
      );
    }
    const store = new KvSessionStore(kv, opts);
    try {
      await store.sweep();
    } catch (e) {
      kv.close();
      throw e;
    }
    store.sweepEvery(opts.sweepIntervalMs ?? 60_000, () => store.sweep());
    return store;
  }

  #headKey(id: string): Deno.KvKey {
    return [...this.#p, "session", id, "head"];
  }

  #genPrefix(id: string, gen: string): Deno.KvKey {
    return [...this.#p, "session", id, "gen", gen];
  }

  #orderKey(writtenAt: number, id: string): Deno.KvKey {
    return [...this.#p, "order", writtenAt, id];
  }

  #gcKey(gen: string): Deno.KvKey {
    return [...this.#p, "gc", gen];
  }

  /** Take, extend or give back a lease (see the module doc); false when another owner holds it. */
  async #lease(
    op: "acquire" | "renew" | "release",
    id: string,
    owner: string,
    ttlMs: number,
  ): Promise<boolean> {
    this.checkLease(id, owner, ttlMs);
    const key = [...this.#p, "lease", id];
    return await this.io("lease", async () => {
      for (let attempt = 0; attempt < FLIP_ATTEMPTS; attempt++) {
        const cur = await this.#kv.get<{ owner: string; expiresAt: number }>(key);
        const now = Date.now();
        const v = cur.value;
        const live = v !== null && typeof v === "object" && v.expiresAt > now;
        const ours = live && v.owner === owner;
        if (op === "release") {
          if (!ours) return true;
          if ((await this.#kv.atomic().check(cur).delete(key).commit()).ok) return true;
          continue;
        }
        if (live && !ours) return false;
        const ms = Math.ceil(ttlMs);
        const r = await this.#kv.atomic().check(cur)
          .set(key, { owner, expiresAt: now + ms }, { expireIn: ms })
          .commit();
        if (r.ok) return true;
        await sleep(Math.random() * Math.min(20, 1 + attempt));
      }
      throw new StoreError("kv", "backend_unavailable", `session "${id}": lease contention`);
    });
  }

  /** The entry under `id`, or null (absent or expired). */
  async getEntry(id: string): Promise<StoredSession | null> {
    this.checkId(id);
    return await this.io("read", async () => {
      for (let attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
        const head = await this.#kv.get(this.#headKey(id));
        if (head.value === null) return null;
        if (!isHead(head.value)) {
          throw new StoreError("kv", "internal", `session "${id}": malformed head record`);
        }
        const h = head.value;
        if (expired(h, Date.now())) return null;
        const out = new Uint8Array(h.bytes);
        let n = 0;
        let at = 0;
        let complete = true;
        for await (const e of this.#kv.list<Uint8Array>({ prefix: this.#genPrefix(id, h.gen) })) {
          const chunk = e.value;
          if (
            !(chunk instanceof Uint8Array) || e.key[e.key.length - 1] !== n ||
            at + chunk.length > h.bytes
          ) {
            complete = false;
            break;
          }
          out.set(chunk, at);
          at += chunk.length;
          n++;
        }
        // Chunks of a replaced write may be deleted under us: read the new head.
        if (!complete || n !== h.chunks || at !== h.bytes) continue;
        // Chunks are immutable under a unique `gen`: a complete set with another digest is damage.
        if (await sha256Hex(out) !== h.sha256) {
          throw new StoreError(
            "kv",
            "internal",
            `session "${id}": stored chunks fail their SHA-256 check`,
          );
        }
        return { bytes: out, generation: h.generation };
      }
      throw new StoreError(
        "kv",
        "backend_unavailable",
        `session "${id}": no consistent state after ${READ_ATTEMPTS} reads`,
      );
    });
  }

  /** Write chunks under a new generation key, then flip the head atomically. */
  async put(id: string, bytes: Uint8Array, opts?: PutOptions): Promise<void> {
    const { ttlMs, generation, expect } = this.checkPut(id, bytes, opts);
    const gen = newGen();
    const chunks = Math.max(1, Math.ceil(bytes.length / KV_CHUNK_BYTES));
    const sha256 = await sha256Hex(bytes);
    const chunkOpts = ttlMs > 0 ? { expireIn: ttlMs + CHUNK_TTL_MARGIN_MS } : undefined;
    await this.io("write", async () => {
      await this.#kv.set(this.#gcKey(gen), { id, after: Date.now() + this.#pendingMaxAgeMs });
      for (let c = 0; c < chunks; c += CHUNKS_PER_COMMIT) {
        const op = this.#kv.atomic();
        for (let i = c; i < Math.min(chunks, c + CHUNKS_PER_COMMIT); i++) {
          const part = bytes.subarray(i * KV_CHUNK_BYTES, (i + 1) * KV_CHUNK_BYTES);
          op.set([...this.#genPrefix(id, gen), i], part.slice(), chunkOpts);
        }
        const r = await op.commit();
        if (!r.ok) throw new Error("chunk write was not committed");
      }
    });
    let replaced: Head | null = null;
    let created = false;
    await this.io("flip", async () => {
      for (let attempt = 0;; attempt++) {
        const cur = await this.#kv.get(this.#headKey(id));
        const old = isHead(cur.value) ? cur.value : null;
        const now = Date.now();
        const live = old !== null && !expired(old, now);
        if (expect !== undefined) {
          const actual = live ? old.generation : null;
          if (actual !== expect) {
            await this.#dropGen(id, gen);
            throw new StoreConflictError("kv", id, expect, actual);
          }
        }
        const expiresAt = ttlMs > 0 ? now + ttlMs : 0;
        const headOpts = ttlMs > 0 ? { expireIn: ttlMs } : undefined;
        const head: Head = {
          gen,
          chunks,
          bytes: bytes.length,
          sha256,
          generation,
          expiresAt,
          writtenAt: now,
        };
        const op = this.#kv.atomic()
          .check(cur)
          .set(this.#headKey(id), head, headOpts)
          .set(this.#orderKey(now, id), { expiresAt }, headOpts)
          .delete(this.#gcKey(gen));
        if (old) {
          if (old.writtenAt !== now) op.delete(this.#orderKey(old.writtenAt, id));
          op.set(this.#gcKey(old.gen), { id, after: 0 });
        }
        if ((await op.commit()).ok) {
          replaced = old;
          created = !live;
          return;
        }
        if (attempt >= FLIP_ATTEMPTS) {
          throw new StoreError(
            "kv",
            "backend_unavailable",
            `session "${id}": too much write contention`,
          );
        }
        await sleep(Math.random() * Math.min(50, 2 + attempt * 2));
      }
    });
    if (replaced) await this.io("cleanup", () => this.#dropGen(id, (replaced as Head).gen));
    if (created && this.options.maxSessions > 0) await this.io("eviction", () => this.#evict(id));
  }

  /** Delete every chunk of write `gen` of `id`, then its gc record. */
  async #dropGen(id: string, gen: string): Promise<void> {
    let op = this.#kv.atomic();
    let n = 0;
    for await (const e of this.#kv.list({ prefix: this.#genPrefix(id, gen) })) {
      op.delete(e.key);
      if (++n % 500 === 0) {
        await op.commit();
        op = this.#kv.atomic();
      }
    }
    op.delete(this.#gcKey(gen));
    await op.commit();
  }

  /** Evict the least recently written sessions (never `keep`) down to `maxSessions`. */
  async #evict(keep: string): Promise<void> {
    const now = Date.now();
    const live: { key: Deno.KvKey; id: string; writtenAt: number }[] = [];
    const stale: Deno.KvKey[] = [];
    for await (const e of this.#kv.list<{ expiresAt: number }>({ prefix: [...this.#p, "order"] })) {
      const exp = e.value?.expiresAt ?? 0;
      if (exp > 0 && exp <= now) stale.push(e.key);
      else {live.push({
          key: e.key,
          writtenAt: e.key[e.key.length - 2] as number,
          id: e.key[e.key.length - 1] as string,
        });}
    }
    for (const k of stale) await this.#kv.delete(k);
    let excess = live.length - this.options.maxSessions;
    for (const v of live) {
      if (excess <= 0) break;
      if (v.id === keep) continue;
      const cur = await this.#kv.get(this.#headKey(v.id));
      const h = isHead(cur.value) ? cur.value : null;
      if (!h || h.writtenAt !== v.writtenAt) {
        // An order record left behind (rewritten or deleted session): drop it.
        if (!h || h.writtenAt > v.writtenAt) await this.#kv.delete(v.key);
        continue;
      }
      const r = await this.#kv.atomic().check(cur).delete(this.#headKey(v.id)).delete(v.key)
        .set(this.#gcKey(h.gen), { id: v.id, after: 0 }).commit();
      if (r.ok) {
        await this.#dropGen(v.id, h.gen);
        excess--;
      }
    }
  }

  /** Remove `id`; true when a live entry was removed. */
  async delete(id: string): Promise<boolean> {
    this.checkId(id);
    return await this.io("delete", async () => {
      for (let attempt = 0; attempt < FLIP_ATTEMPTS; attempt++) {
        const cur = await this.#kv.get(this.#headKey(id));
        if (cur.value === null) return false;
        const h = isHead(cur.value) ? cur.value : null;
        const op = this.#kv.atomic().check(cur).delete(this.#headKey(id));
        if (h) op.delete(this.#orderKey(h.writtenAt, id)).set(this.#gcKey(h.gen), { id, after: 0 });
        if ((await op.commit()).ok) {
          if (h) await this.#dropGen(id, h.gen);
          return h !== null && !expired(h, Date.now());
        }
      }
      throw new StoreError(
        "kv",
        "backend_unavailable",
        `session "${id}": too much write contention`,
      );
    });
  }

  /** Delete chunks of abandoned and replaced writes (gc records past their time); returns how many writes. */
  async sweep(): Promise<number> {
    this.assertOpen();
    return await this.io("sweep", async () => {
      const now = Date.now();
      let n = 0;
      for await (
        const e of this.#kv.list<{ id: string; after: number }>({ prefix: [...this.#p, "gc"] })
      ) {
        const gen = e.key[e.key.length - 1];
        const v = e.value;
        if (typeof gen !== "string" || !v || typeof v.id !== "string" || !(v.after <= now)) {
          continue;
        }
        const head = await this.#kv.get(this.#headKey(v.id));
        if (isHead(head.value) && head.value.gen === gen) {
          // Flipped after all (cannot happen with the atomic flip, but never delete a live write).
          await this.#kv.delete(e.key);
          continue;
        }
        await this.#dropGen(v.id, gen);
        n++;
      }
      return n;
    });
  }

  /** Live sessions (counts the order records). */
  async size(): Promise<number> {
    this.assertOpen();
    return await this.io("size", async () => {
      const now = Date.now();
      let n = 0;
      for await (
        const e of this.#kv.list<{ expiresAt: number }>({ prefix: [...this.#p, "order"] })
      ) {
        const exp = e.value?.expiresAt ?? 0;
        if (!(exp > 0 && exp <= now)) n++;
      }
      return n;
    });
  }

  /** One page of live ids, sorted (see `SessionStore.ids`; walks the order records). */
  async ids(opts: IdsOptions): Promise<string[]> {
    this.assertOpen();
    return await this.io("list", async () => {
      const now = Date.now();
      const found: string[] = [];
      for await (
        const e of this.#kv.list<{ expiresAt: number }>({ prefix: [...this.#p, "order"] })
      ) {
        const id = e.key[e.key.length - 1];
        const exp = e.value?.expiresAt ?? 0;
        if (typeof id === "string" && !(exp > 0 && exp <= now)) found.push(id);
      }
      return pageOfIds(new Set(found), opts);
    });
  }

  /** Stop the sweep timer and close the database. */
  close(): Promise<void> {
    if (this.markClosed()) {
      this.stopSweeping();
      this.#kv.close();
    }
    return Promise.resolve();
  }
}
