/**
 * An in-process session store: an LRU map with a byte budget, a session cap and TTL expiry. Writes
 * copy the bytes (the caller may reuse its buffer); reads return the stored array, which callers
 * must not modify. Everything is synchronous inside, so compare-and-set is trivially atomic.
 * @module
 */

import { StoreConflictError, StoreError } from "./errors.ts";
import {
  type IdsOptions,
  pageOfIds,
  type PutOptions,
  type StoredSession,
  type StoreOptions,
} from "./store.ts";
import { StoreBase } from "./store_base.ts";

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
export class MemorySessionStore extends StoreBase {
  readonly #maxBytes: number;
  // Map iteration order is insertion order: the first entry is the least recently used.
  readonly #map = new Map<string, Entry>();
  #bytes = 0;
  #puts = 0;

  /** A store with the given limits (defaults: no TTL, no session cap, 1 GiB). */
  constructor(opts: MemoryStoreOptions = {}) {
    super("memory", opts);
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

  /** The entry under `id` (marks it recently used), or null. */
  // deno-lint-ignore require-await
  async getEntry(id: string): Promise<StoredSession | null> {
    this.checkId(id);
    const e = this.#live(id);
    if (!e) return null;
    this.#map.delete(id);
    this.#map.set(id, e);
    return { bytes: e.bytes, generation: e.generation };
  }

  /**
   * Store a copy of `bytes` (or `bytes` itself with `adopt`); evicts expired, then least recently
   * used entries to fit the limits.
   */
  // deno-lint-ignore require-await
  async put(id: string, bytes: Uint8Array, opts?: PutOptions): Promise<void> {
    const { ttlMs, generation, expect } = this.checkPut(id, bytes, opts);
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
      bytes: opts?.adopt ? bytes : bytes.slice(),
      generation,
      expiresAt: ttlMs > 0 ? now + ttlMs : Infinity,
    });
    this.#bytes += bytes.length;
    if (++this.#puts % SWEEP_EVERY === 0) this.sweep(now);
    const over = () =>
      this.#bytes > this.#maxBytes ||
      (this.options.maxSessions > 0 && this.#map.size > this.options.maxSessions);
    if (over()) this.sweep(now);
    for (const [k, e] of this.#map) {
      if (!over() || k === id) break;
      this.#remove(k, e);
    }
  }

  /** Remove `id`; true when a live entry was removed. */
  // deno-lint-ignore require-await
  async delete(id: string): Promise<boolean> {
    this.checkId(id);
    const e = this.#live(id);
    if (e) this.#remove(id, e);
    return e !== null;
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
  // deno-lint-ignore require-await
  async ids(opts: IdsOptions): Promise<string[]> {
    this.assertOpen();
    this.sweep();
    return pageOfIds(this.#map.keys(), opts);
  }

  /** Drop everything. */
  close(): Promise<void> {
    this.#map.clear();
    this.#bytes = 0;
    this.markClosed();
    return Promise.resolve();
  }
}
