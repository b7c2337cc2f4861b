/**
 * An in-process session store: an LRU map with a byte budget, a session cap and TTL expiry. Writes
 * copy the bytes (the caller may reuse its buffer); reads return the stored array, which callers
 * must not modify. Everything is synchronous inside, so compare-and-set is trivially atomic.
 * @module
 */

import { StoreConflictError, StoreError } from "./errors.ts";
import {
  checkPut,
  checkSessionId,
  checkStoreOptions,
  type IdsOptions,
  pageOfIds,
  type PutOptions,
  type SessionStore,
  type StoredSession,
  type StoreOptions,
} from "./store.ts";

/** Options of the memory store. */
export interface MemoryStoreOptions extends StoreOptions {
  /** Most bytes kept in all entries together (default 1 GiB); a larger single state is refused. */
  maxBytes?: number;
}

interface Entry {
  bytes: Uint8Array;
  generation: number;
  /** Expiry time (ms since the epoch), or Infinity. */
  expiresAt: number;
}

/** Default byte budget of the memory store: 1 GiB. */
export const DEFAULT_MEMORY_STORE_BYTES: number = 1024 ** 3;

const SWEEP_EVERY = 256;

/** An LRU session store in this process's memory. */
export class MemorySessionStore implements SessionStore {
  /** "memory". */
  readonly kind = "memory";
  readonly #opts: Required<StoreOptions>;
  readonly #maxBytes: number;
  // Map iteration order is insertion order: the first entry is the least recently used.
  readonly #map = new Map<string, Entry>();
  #bytes = 0;
  #puts = 0;
  #closed = false;

  /** A store with the given limits (defaults: no TTL, no session cap, 1 GiB). */
  constructor(opts: MemoryStoreOptions = {}) {
    this.#opts = checkStoreOptions("memory", opts);
    this.#maxBytes = opts.maxBytes ?? DEFAULT_MEMORY_STORE_BYTES;
    if (!Number.isSafeInteger(this.#maxBytes) || this.#maxBytes <= 0) {
      throw new StoreError(
        "memory",
        "invalid_input",
        `maxBytes must be a positive integer, got ${opts.maxBytes}`,
      );
    }
  }

  /** Bytes held by all entries. */
  get bytes(): number {
    return this.#bytes;
  }

  #live(id: string, now = Date.now()): Entry | null {
    const e = this.#map.get(id);
    if (!e) return null;
    if (e.expiresAt <= now) {
      this.#remove(id, e);
      return null;
    }
    return e;
  }

  #remove(id: string, e: Entry): void {
    this.#map.delete(id);
    this.#bytes -= e.bytes.length;
  }

  #check(): void {
    if (this.#closed) throw new StoreError("memory", "backend_unavailable", "store is closed");
  }

  /** The bytes under `id` (marks it recently used), or null. */
  get(id: string): Promise<Uint8Array | null> {
    return this.getEntry(id).then((e) => e?.bytes ?? null);
  }

  /** The entry under `id` (marks it recently used), or null. */
  getEntry(id: string): Promise<StoredSession | null> {
    try {
      this.#check();
      checkSessionId("memory", id);
      const e = this.#live(id);
      if (!e) return Promise.resolve(null);
      this.#map.delete(id);
      this.#map.set(id, e);
      return Promise.resolve({ bytes: e.bytes, generation: e.generation });
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Store a copy of `bytes`; evicts expired, then least recently used entries to fit the limits. */
  put(id: string, bytes: Uint8Array, opts?: PutOptions): Promise<void> {
    try {
      this.#check();
      const { ttlMs, generation, expect } = checkPut("memory", this.#opts, id, bytes, opts);
      if (bytes.length > this.#maxBytes) {
        throw new StoreError(
          "memory",
          "payload_too_large",
          `state of ${bytes.length} bytes exceeds the store's ${this.#maxBytes}`,
        );
      }
      const now = Date.now();
      const old = this.#live(id, now);
      if (expect !== undefined) {
        const actual = old ? old.generation : null;
        if (actual !== expect) throw new StoreConflictError("memory", id, expect, actual);
      }
      if (old) this.#remove(id, old);
      this.#map.set(id, {
        bytes: bytes.slice(),
        generation,
        expiresAt: ttlMs > 0 ? now + ttlMs : Infinity,
      });
      this.#bytes += bytes.length;
      if (++this.#puts % SWEEP_EVERY === 0) this.sweep(now);
      const over = () =>
        this.#bytes > this.#maxBytes ||
        (this.#opts.maxSessions > 0 && this.#map.size > this.#opts.maxSessions);
      if (over()) this.sweep(now);
      for (const [k, e] of this.#map) {
        if (!over() || k === id) break;
        this.#remove(k, e);
      }
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Remove `id`; true when a live entry was removed. */
  delete(id: string): Promise<boolean> {
    try {
      this.#check();
      checkSessionId("memory", id);
      const e = this.#live(id);
      if (e) this.#remove(id, e);
      return Promise.resolve(e !== null);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Drop every expired entry; returns how many. */
  sweep(now: number = Date.now()): number {
    let n = 0;
    for (const [k, e] of this.#map) {
      if (e.expiresAt <= now) {
        this.#remove(k, e);
        n++;
      }
    }
    return n;
  }

  /** Live entries. */
  size(): Promise<number> {
    this.sweep();
    return Promise.resolve(this.#map.size);
  }

  /** One page of live ids, sorted (see `SessionStore.ids`). */
  ids(opts: IdsOptions): Promise<string[]> {
    try {
      this.#check();
      this.sweep();
      return Promise.resolve(pageOfIds(this.#map.keys(), opts));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Drop everything. */
  close(): Promise<void> {
    this.#map.clear();
    this.#bytes = 0;
    this.#closed = true;
    return Promise.resolve();
  }
}
