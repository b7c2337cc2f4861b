/**
 * What the four session stores share: the argument checks bound to the store's name, `get` over
 * `getEntry`, the closed state, and the wrapping of a backend's failures into `StoreError`
 * ("backend_unavailable", naming the operation). Each store (`memory_store.ts`, `fs_store.ts`,
 * `kv_store.ts`, `redis_store.ts`) extends it with its own storage; the contract they all keep is
 * `SessionStore` (`./store.ts`), tested for each by `tests/state/store_suite.ts`.
 * @module
 */

import { StoreError } from "./errors.ts";
import {
  checkLease,
  checkPut,
  checkSessionId,
  checkStoreOptions,
  type PutOptions,
  type SessionStore,
  type StoredSession,
  type StoreOptions,
} from "./store.ts";

/** The checked fields of one write: its TTL in ms (0: none), generation and compare-and-set. */
export interface CheckedPut {
  /** Time to live in ms, rounded up (0: never expires). */
  ttlMs: number;
  /** The generation recorded with the bytes (-1 when none was given). */
  generation: number;
  /** Compare-and-set: the generation expected (null: no entry), or undefined for none. */
  expect: number | null | undefined;
}

/** The shared part of every session store (see the module doc). */
export abstract class StoreBase implements SessionStore {
  /** The store kind: "memory", "fs", "kv" or "redis" (labels every error). */
  readonly kind: string;
  /** The construction options, checked (ttlMs 0 and maxSessions 0: none). */
  protected readonly options: Required<StoreOptions>;
  #closed = false;
  #sweeper: ReturnType<typeof setInterval> | undefined;

  /** Check `opts` for a store of `kind` (`StoreError` "invalid_input" when wrong). */
  protected constructor(kind: string, opts: StoreOptions) {
    this.kind = kind;
    this.options = checkStoreOptions(kind, opts);
  }

  /** The bytes stored under `id`, or null when absent or expired. */
  async get(id: string): Promise<Uint8Array | null> {
    return (await this.getEntry(id))?.bytes ?? null;
  }

  /** The bytes and generation stored under `id`, or null when absent or expired. */
  abstract getEntry(id: string): Promise<StoredSession | null>;
  /** Store `bytes` under `id`; see `PutOptions` for TTL and compare-and-set. */
  abstract put(id: string, bytes: Uint8Array, opts?: PutOptions): Promise<void>;
  /** Remove `id`; true when a live entry was removed. */
  abstract delete(id: string): Promise<boolean>;
  /** Number of live entries. */
  abstract size(): Promise<number>;
  /** Release connections, files and timers. */
  abstract close(): Promise<void>;

  /**
   * Run `sweep` every `ms` (0: never), on a timer that does not keep the process alive; a failed
   * sweep is retried at the next tick. `stopSweeping` ends it (at close).
   */
  protected sweepEvery(ms: number, sweep: () => Promise<unknown>): void {
    if (ms <= 0) return;
    this.#sweeper = setInterval(() => {
      sweep().catch(() => {});
    }, ms);
    Deno.unrefTimer(this.#sweeper);
  }

  /** Stop the timer `sweepEvery` started. */
  protected stopSweeping(): void {
    if (this.#sweeper !== undefined) clearInterval(this.#sweeper);
    this.#sweeper = undefined;
  }

  /** Whether `close()` has begun. */
  protected get closed(): boolean {
    return this.#closed;
  }

  /** Mark the store closed; false when it already was (so `close()` runs once). */
  protected markClosed(): boolean {
    if (this.#closed) return false;
    this.#closed = true;
    return true;
  }

  /** Throw "backend_unavailable" once the store is closed. */
  protected assertOpen(): void {
    if (this.#closed) throw new StoreError(this.kind, "backend_unavailable", "store is closed");
  }

  /** An open store and a valid session id, or the `StoreError` that says which is wrong. */
  protected checkId(id: unknown): asserts id is string {
    this.assertOpen();
    checkSessionId(this.kind, id);
  }

  /** An open store and valid write arguments; returns the write's checked fields. */
  protected checkPut(id: unknown, bytes: unknown, opts?: PutOptions): CheckedPut {
    this.assertOpen();
    return checkPut(this.kind, this.options, id, bytes, opts);
  }

  /** An open store and valid lease arguments. */
  protected checkLease(id: unknown, owner: unknown, ttlMs: unknown): void {
    this.assertOpen();
    checkLease(this.kind, id, owner, ttlMs);
  }

  /** Where the backend is, for messages (" on redis://host:6379/" for Redis; "" by default). */
  protected where(): string {
    return "";
  }

  /** A backend failure during `what` as a `StoreError` ("backend_unavailable"); store errors pass. */
  protected ioError(what: string, e: unknown): StoreError {
    if (e instanceof StoreError) return e;
    const msg = (e as Error)?.message ?? String(e);
    return new StoreError(
      this.kind,
      "backend_unavailable",
      `${what}${this.where()} failed: ${msg}`,
      { cause: e },
    );
  }

  /** Run `fn`, turning its failures into `ioError(what, ·)`. */
  protected async io<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw this.ioError(what, e);
    }
  }
}
