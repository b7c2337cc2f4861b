/**
 * A session store in a directory, one file per session.
 *
 * - File names come from validated ids only: `<base32(id)>.tnls` (lowercase RFC 4648 base32 of the
 *   id, so ids differing in case stay distinct on case-insensitive filesystems, and nothing a client
 *   sends ever becomes a path by itself). Ids failing `isValidSessionId` are refused.
 * - A write goes to `<name>.tmp-<writer>-<random>` in the same directory and is renamed over the
 *   entry, so a reader sees the old file or the new one, never a mix. `<writer>` names the open
 *   store: each holds an exclusive lock on `<dir>/.writer-<writer>` while it is open. Leftover
 *   temporaries (a crash mid-write) are ignored by reads; at open, those whose writer's lock is free
 *   (the process is gone) or that name no writer are removed at once, and the sweep removes any
 *   temporary older than `tmpMaxAgeMs`.
 * - Each file starts with a 32-byte header: magic "TNLS", version 1, the generation, the expiry
 *   time and the state's length; a file whose header is wrong or whose length disagrees is ignored.
 * - TTL: the header's expiry time is checked on read; the sweep (at open, every `sweepIntervalMs`,
 *   or by calling `sweep()`) deletes expired files and stale temporaries.
 * - `maxSessions`: the oldest files (by mtime, i.e. last write) are evicted after a write.
 * - Mutations (rename, delete, eviction, compare-and-set) take an exclusive lock on `<dir>/.lock`
 *   (flock) plus an in-process mutex, so compare-and-set is atomic across processes sharing the
 *   directory. The in-memory index used for eviction is per process and rebuilt by each sweep.
 * @module
 */

import { StoreConflictError, StoreError } from "./errors.ts";
import {
  checkSessionId,
  checkStoreOptions,
  type IdsOptions,
  pageOfIds,
  type PutOptions,
  type StoredSession,
  type StoreOptions,
} from "./store.ts";
import { StoreBase } from "./store_base.ts";

/** Options of the fs store. */
export interface FsStoreOptions extends StoreOptions {
  /** Sweep period in ms (default 60,000; 0: only at open and when `sweep()` is called). */
  sweepIntervalMs?: number;
  /** Age after which a leftover temporary file is deleted by the sweep (default 10 minutes). */
  tmpMaxAgeMs?: number;
  /** fsync each file before renaming it into place (default false: atomic, but not durable). */
  fsync?: boolean;
}

const HEADER = 32;
const MAGIC = [0x54, 0x4e, 0x4c, 0x53]; // "TNLS"
const EXT = ".tnls";
const TMP = ".tmp-";
const WRITER = ".writer-";
const B32 = "abcdefghijklmnopqrstuvwxyz234567";

/** The file name of a (validated) session id: lowercase base32 of its bytes plus ".tnls". */
export function sessionFileName(id: string): string {
  checkSessionId("fs", id);
  let out = "";
  let acc = 0;
  let bits = 0;
  for (let i = 0; i < id.length; i++) {
    acc = (acc << 8) | id.charCodeAt(i);
    bits += 8;
    while (bits >= 5) {
      out += B32[(acc >>> (bits - 5)) & 31];
      bits -= 5;
    }
    acc &= (1 << bits) - 1;
  }
  if (bits > 0) out += B32[(acc << (5 - bits)) & 31];
  return out + EXT;
}

/** The session id of a store file name, or null when the name is not one the store writes. */
export function sessionIdOfFile(name: string): string | null {
  if (!name.endsWith(EXT)) return null;
  const b = name.slice(0, -EXT.length);
  let acc = 0;
  let bits = 0;
  let id = "";
  for (const c of b) {
    const v = B32.indexOf(c);
    if (v < 0) return null;
    acc = (acc << 5) | v;
    bits += 5;
    if (bits >= 8) {
      id += String.fromCharCode((acc >>> (bits - 8)) & 0xff);
      bits -= 8;
      acc &= (1 << bits) - 1;
    }
  }
  try {
    return sessionFileName(id) === name ? id : null;
  } catch {
    return null;
  }
}

function header(generation: number, expiresAt: number, length: number): Uint8Array {
  const h = new Uint8Array(HEADER);
  const dv = new DataView(h.buffer);
  h.set(MAGIC, 0);
  h[4] = 1;
  dv.setFloat64(8, generation, true);
  dv.setFloat64(16, expiresAt, true);
  dv.setFloat64(24, length, true);
  return h;
}

interface Header {
  generation: number;
  expiresAt: number;
  length: number;
}

function parseHeader(h: Uint8Array): Header | null {
  if (h.length < HEADER || MAGIC.some((m, i) => h[i] !== m) || h[4] !== 1) return null;
  const dv = new DataView(h.buffer, h.byteOffset, HEADER);
  const generation = dv.getFloat64(8, true);
  const expiresAt = dv.getFloat64(16, true);
  const length = dv.getFloat64(24, true);
  if (!Number.isSafeInteger(generation) || !Number.isSafeInteger(length) || length < 0) return null;
  if (!(expiresAt >= 0)) return null;
  return { generation, expiresAt, length };
}

function randomHex(bytes = 8): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(bytes)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

/** A session store in a directory. Open it with `FsSessionStore.open(dir, opts)`. */
export class FsSessionStore extends StoreBase {
  readonly #dir: string;
  readonly #tmpMaxAgeMs: number;
  readonly #fsync: boolean;
  readonly #lockFile: Deno.FsFile;
  /** This store's writer token (in its temporaries' names) and the file whose lock says it lives. */
  readonly #writer = randomHex();
  #writerFile: Deno.FsFile | null = null;
  /** id → mtime (ms) of the files this process knows about, for eviction. */
  readonly #index = new Map<string, number>();
  #mutex: Promise<unknown> = Promise.resolve();

  private constructor(dir: string, opts: FsStoreOptions, lockFile: Deno.FsFile) {
    super("fs", opts);
    this.#dir = dir.endsWith("/") ? dir.slice(0, -1) : dir;
    this.#tmpMaxAgeMs = opts.tmpMaxAgeMs ?? 10 * 60_000;
    this.#fsync = opts.fsync ?? false;
    this.#lockFile = lockFile;
  }

  /** Open (creating it if needed) the store in `dir`, and sweep it once. */
  static async open(dir: string, opts: FsStoreOptions = {}): Promise<FsSessionStore> {
    checkStoreOptions("fs", opts);
    if (typeof dir !== "string" || dir === "") {
      throw new StoreError("fs", "invalid_input", "directory path is empty");
    }
    let lock: Deno.FsFile;
    try {
      await Deno.mkdir(dir, { recursive: true });
      lock = await Deno.open(`${dir}/.lock`, { read: true, write: true, create: true });
    } catch (e) {
      throw new StoreError(
        "fs",
        "backend_unavailable",
        `cannot open directory ${dir}: ${(e as Error).message}`,
        { cause: e },
      );
    }
    const store = new FsSessionStore(dir, opts, lock);
    try {
      const path = `${store.#dir}/${WRITER}${store.#writer}`;
      store.#writerFile = await Deno.open(path, { read: true, write: true, createNew: true });
      await store.#writerFile.lock(true);
    } catch (e) {
      lock.close();
      store.#writerFile?.close();
      throw store.ioError("open", e);
    }
    await store.removeOrphans();
    await store.sweep();
    store.sweepEvery(opts.sweepIntervalMs ?? 60_000, () => store.sweep());
    return store;
  }

  #path(id: string): string {
    return `${this.#dir}/${sessionFileName(id)}`;
  }

  /** Run `fn` holding the in-process mutex and the directory lock. */
  async #locked<T>(fn: () => Promise<T>): Promise<T> {
    const prev = this.#mutex;
    let release!: () => void;
    this.#mutex = new Promise<void>((r) => (release = r));
    await prev.catch(() => {});
    try {
      await this.#lockFile.lock(true);
      try {
        return await fn();
      } finally {
        await this.#lockFile.unlock();
      }
    } finally {
      release();
    }
  }

  /** Read a file's header (null: absent or not a store file). */
  async #readHeader(path: string): Promise<Header | null> {
    let f: Deno.FsFile;
    try {
      f = await Deno.open(path, { read: true });
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return null;
      throw this.ioError("read", e);
    }
    try {
      const h = new Uint8Array(HEADER);
      let n = 0;
      while (n < HEADER) {
        const r = await f.read(h.subarray(n));
        if (r === null) break;
        n += r;
      }
      return n === HEADER ? parseHeader(h) : null;
    } finally {
      f.close();
    }
  }

  /** The entry under `id`, or null (absent, expired, or not a valid store file). */
  async getEntry(id: string): Promise<StoredSession | null> {
    this.checkId(id);
    let data: Uint8Array;
    try {
      // One open: the rename of a concurrent write cannot change the file under us.
      data = await Deno.readFile(this.#path(id));
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return null;
      throw this.ioError("read", e);
    }
    const h = parseHeader(data);
    if (!h || h.length !== data.length - HEADER) return null;
    if (h.expiresAt > 0 && h.expiresAt <= Date.now()) return null;
    return { bytes: data.subarray(HEADER), generation: h.generation };
  }

  /** Write `bytes` under `id` atomically (temporary file, then rename). */
  async put(id: string, bytes: Uint8Array, opts?: PutOptions): Promise<void> {
    const { ttlMs, generation, expect } = this.checkPut(id, bytes, opts);
    const path = this.#path(id);
    const tmp = `${path}${TMP}${this.#writer}-${randomHex()}`;
    const expiresAt = ttlMs > 0 ? Date.now() + ttlMs : 0;
    try {
      const f = await Deno.open(tmp, { write: true, createNew: true, mode: 0o600 });
      try {
        const parts = [header(generation, expiresAt, bytes.length), bytes];
        for (const part of parts) {
          let n = 0;
          while (n < part.length) n += await f.write(part.subarray(n));
        }
        if (this.#fsync) await f.syncData();
      } finally {
        f.close();
      }
    } catch (e) {
      await Deno.remove(tmp).catch(() => {});
      throw this.ioError("write", e);
    }
    try {
      await this.#locked(async () => {
        if (expect !== undefined) {
          const h = await this.#readHeader(path);
          const live = h && !(h.expiresAt > 0 && h.expiresAt <= Date.now());
          const actual = live ? h.generation : null;
          if (actual !== expect) throw new StoreConflictError("fs", id, expect, actual);
        }
        try {
          await Deno.rename(tmp, path);
        } catch (e) {
          throw this.ioError("rename", e);
        }
        this.#index.delete(id);
        this.#index.set(id, Date.now());
        if (this.options.maxSessions > 0 && this.#index.size > this.options.maxSessions) {
          await this.#evict(id);
        }
      });
    } finally {
      await Deno.remove(tmp).catch(() => {});
    }
  }

  /** Evict the oldest files until at most `maxSessions` remain (never `keep`). Holds the lock. */
  async #evict(keep: string): Promise<void> {
    const byAge = [...this.#index].sort((a, b) => a[1] - b[1]);
    for (const [id] of byAge) {
      if (this.#index.size <= this.options.maxSessions) break;
      if (id === keep) continue;
      await Deno.remove(this.#path(id)).catch(() => {});
      this.#index.delete(id);
    }
  }

  /** Remove `id`; true when a live entry was removed. */
  async delete(id: string): Promise<boolean> {
    this.checkId(id);
    const path = this.#path(id);
    return await this.#locked(async () => {
      const h = await this.#readHeader(path);
      this.#index.delete(id);
      try {
        await Deno.remove(path);
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) return false;
        throw this.ioError("delete", e);
      }
      return h !== null && !(h.expiresAt > 0 && h.expiresAt <= Date.now());
    });
  }

  /** Whether the writer `token` of a temporary's name is a live store (its lock file is held). */
  async #writerAlive(token: string): Promise<boolean> {
    if (token === this.#writer) return true;
    if (!/^[0-9a-f]{16}$/.test(token)) return false;
    let f: Deno.FsFile;
    try {
      f = await Deno.open(`${this.#dir}/${WRITER}${token}`, { read: true, write: true });
    } catch {
      return false; // no lock file: a store that closed, or a name no store writes
    }
    try {
      if (!(await f.tryLock(true))) return true;
      await f.unlock();
      return false;
    } finally {
      f.close();
    }
  }

  /**
   * Remove the temporaries of writers that are gone (a crash mid-write) and their lock files.
   * Temporaries of live stores sharing the directory are kept. Runs at open; returns the number of
   * temporaries removed.
   */
  async removeOrphans(): Promise<number> {
    this.assertOpen();
    return await this.#locked(async () => {
      let removed = 0;
      const alive = new Map<string, boolean>();
      const isAlive = async (token: string) => {
        let a = alive.get(token);
        if (a === undefined) alive.set(token, a = await this.#writerAlive(token));
        return a;
      };
      try {
        for await (const entry of Deno.readDir(this.#dir)) {
          if (!entry.isFile) continue;
          const path = `${this.#dir}/${entry.name}`;
          if (entry.name.startsWith(WRITER)) {
            const token = entry.name.slice(WRITER.length);
            if (!(await isAlive(token))) await Deno.remove(path).catch(() => {});
            continue;
          }
          const tmpAt = entry.name.indexOf(TMP);
          if (tmpAt <= 0 || !entry.name.endsWith(EXT, tmpAt)) continue;
          const token = entry.name.slice(tmpAt + TMP.length).split("-")[0];
          if (await isAlive(token)) continue;
          await Deno.remove(path).catch(() => {});
          removed++;
        }
      } catch (e) {
        throw this.ioError("removing leftover temporaries", e);
      }
      return removed;
    });
  }

  /**
   * Delete expired entries and temporaries older than `tmpMaxAgeMs`, rebuild the eviction index
   * from the directory, and evict down to `maxSessions`. Returns the number of files removed.
   */
  async sweep(): Promise<number> {
    this.assertOpen();
    return await this.#locked(async () => {
      const now = Date.now();
      let removed = 0;
      const found = new Map<string, number>();
      try {
        for await (const entry of Deno.readDir(this.#dir)) {
          if (!entry.isFile) continue;
          const path = `${this.#dir}/${entry.name}`;
          const tmpAt = entry.name.indexOf(TMP);
          if (tmpAt > 0 && entry.name.endsWith(EXT, tmpAt)) {
            const st = await Deno.stat(path).catch(() => null);
            if (st && now - (st.mtime?.getTime() ?? 0) > this.#tmpMaxAgeMs) {
              await Deno.remove(path).catch(() => {});
              removed++;
            }
            continue;
          }
          const id = sessionIdOfFile(entry.name);
          if (id === null) continue;
          const h = await this.#readHeader(path);
          if (h && h.expiresAt > 0 && h.expiresAt <= now) {
            await Deno.remove(path).catch(() => {});
            removed++;
            continue;
          }
          const st = await Deno.stat(path).catch(() => null);
          if (st) found.set(id, st.mtime?.getTime() ?? 0);
        }
      } catch (e) {
        throw this.ioError("sweep", e);
      }
      this.#index.clear();
      for (const [id, t] of [...found].sort((a, b) => a[1] - b[1])) this.#index.set(id, t);
      if (this.options.maxSessions > 0 && this.#index.size > this.options.maxSessions) {
        const before = this.#index.size;
        await this.#evict("");
        removed += before - this.#index.size;
      }
      return removed;
    });
  }

  /** Live entries (reads every header). */
  async size(): Promise<number> {
    this.assertOpen();
    const now = Date.now();
    let n = 0;
    for await (const entry of Deno.readDir(this.#dir)) {
      if (!entry.isFile || sessionIdOfFile(entry.name) === null) continue;
      const h = await this.#readHeader(`${this.#dir}/${entry.name}`);
      if (h && !(h.expiresAt > 0 && h.expiresAt <= now)) n++;
    }
    return n;
  }

  /** One page of live ids, sorted (see `SessionStore.ids`; reads every header). */
  async ids(opts: IdsOptions): Promise<string[]> {
    this.assertOpen();
    const now = Date.now();
    const found: string[] = [];
    try {
      for await (const entry of Deno.readDir(this.#dir)) {
        const id = entry.isFile ? sessionIdOfFile(entry.name) : null;
        if (id === null || (opts.after !== undefined && id <= opts.after)) continue;
        const h = await this.#readHeader(`${this.#dir}/${entry.name}`);
        if (h && !(h.expiresAt > 0 && h.expiresAt <= now)) found.push(id);
      }
    } catch (e) {
      throw this.ioError("list", e);
    }
    return pageOfIds(found, opts);
  }

  /** Stop the sweep timer and close the lock file. */
  async close(): Promise<void> {
    if (!this.markClosed()) return;
    this.stopSweeping();
    await this.#mutex.catch(() => {});
    if (this.#writerFile) {
      this.#writerFile.close();
      await Deno.remove(`${this.#dir}/${WRITER}${this.#writer}`).catch(() => {});
    }
    this.#lockFile.close();
  }
}
