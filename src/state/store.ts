/**
 * Session stores: where encoded session states (opaque bytes from `encodeSession`) live between
 * requests. Four implementations share this interface: memory (LRU), fs (a directory), Deno KV and
 * Redis; `openStore` in `./mod.ts` picks one from a spec string.
 *
 * Every store:
 * - accepts only ids that pass `isValidSessionId` (else `StoreError` "invalid_input", 400);
 * - never lets a reader see a half-written state: a read returns one complete earlier write;
 * - expires entries `ttlMs` after their last write (a per-write `ttlMs` overrides the store's);
 * - keeps at most `maxSessions` entries, evicting the least recently used (memory: used = read or
 *   written; fs, kv, redis: the least recently written);
 * - offers compare-and-set: `put(id, bytes, { generation, expectGeneration })` writes only if the
 *   stored entry's generation is still `expectGeneration` (null: only if there is none), atomically
 *   against other writers, else throws `StoreConflictError` ("conflict", 409). The generation is
 *   metadata the caller passes with the bytes (the session's `generation`); stores never parse the
 *   state. An entry written without `generation` is recorded as generation -1.
 *
 * Stores shared by several processes (Redis, Deno KV) also offer `leases`: an expiring lease per
 * session id, so that two processes never generate for the same session at once (the session
 * manager takes one around every request). Memory and fs stores have none: in one process the
 * session manager's busy set is exact.
 * @module
 */

import { isValidSessionId } from "../model/snapshot.ts";
import { StoreError } from "./errors.ts";

/** Options every store takes at construction. */
export interface StoreOptions {
  /** Default time to live of an entry after each write, in ms (0 or absent: entries never expire). */
  ttlMs?: number;
  /** Most entries kept; beyond it the least recently used are evicted (absent: no limit). */
  maxSessions?: number;
}

/** Options of one write. */
export interface PutOptions {
  /** Time to live of this entry in ms, overriding the store's (0: never expires). */
  ttlMs?: number;
  /** The generation recorded with the bytes (the snapshot's `generation`); default -1. */
  generation?: number;
  /**
   * Compare-and-set: write only if the stored generation equals this (null: only if no entry
   * exists); otherwise throw `StoreConflictError`. Absent: write unconditionally.
   */
  expectGeneration?: number | null;
  /**
   * The caller hands `bytes` over and never changes them afterwards: a store that keeps entries in
   * memory may keep this array instead of a copy (13 MB per 385M state). Default false.
   */
  adopt?: boolean;
}

/** A stored entry with the generation it was written with. */
export interface StoredSession {
  /** The encoded state. */
  bytes: Uint8Array;
  /** The generation passed to `put` (-1 when none was). */
  generation: number;
}

/**
 * Expiring leases on session ids, held by an owner (a random token per request). A lease that is
 * not renewed expires after its TTL, so a process that dies holding one blocks the session for at
 * most that long. Failures to reach the backend throw `StoreError` ("backend_unavailable").
 */
export interface SessionLeases {
  /** Take the lease on `id` for `ttlMs`; false when another owner holds a live one. */
  acquire(id: string, owner: string, ttlMs: number): Promise<boolean>;
  /**
   * Extend `owner`'s lease to `ttlMs` from now (taking it again if it lapsed and nobody else took
   * it); false when another owner holds it.
   */
  renew(id: string, owner: string, ttlMs: number): Promise<boolean>;
  /** Give the lease back if `owner` still holds it (else nothing). */
  release(id: string, owner: string): Promise<void>;
}

/** Paging of `SessionStore.ids`. */
export interface IdsOptions {
  /** Return ids after this one (exclusive). */
  after?: string;
  /** Most ids returned (≥ 1). */
  limit: number;
}

/** One page of `ids` (sorted, after `after`, at most `limit`): the `ids` of every store. */
export function pageOfIds(ids: Iterable<string>, opts: IdsOptions): string[] {
  const after = opts.after;
  const all = [...ids].filter((id) => after === undefined || id > after);
  all.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return all.slice(0, Math.max(1, opts.limit));
}

/** A place to keep encoded session states. */
export interface SessionStore {
  /** The store kind: "memory", "fs", "kv" or "redis". */
  readonly kind: string;
  /** Cross-process leases on session ids (stores shared between processes: Redis, Deno KV). */
  readonly leases?: SessionLeases;
  /** The bytes stored under `id`, or null when absent or expired. */
  get(id: string): Promise<Uint8Array | null>;
  /** The bytes and generation stored under `id`, or null when absent or expired. */
  getEntry(id: string): Promise<StoredSession | null>;
  /** Store `bytes` under `id` (replacing any entry); see `PutOptions` for TTL and compare-and-set. */
  put(id: string, bytes: Uint8Array, opts?: PutOptions): Promise<void>;
  /** Remove `id`; true when a live entry was removed. */
  delete(id: string): Promise<boolean>;
  /** Number of live entries (may count entries that expired moments ago in kv and redis). */
  size(): Promise<number>;
  /**
   * One page of stored ids in code-unit order: at most `limit` ids greater than `after` (from the
   * start when absent). May include ids that expired moments ago (kv, redis): `getEntry` says.
   * Walks every id in the store (an operator's listing, not a hot path).
   */
  ids?(opts: IdsOptions): Promise<string[]>;
  /** Release connections, files and timers; the store is unusable afterwards. */
  close(): Promise<void>;
}

/** Throw `StoreError` ("invalid_input") unless `id` is a valid session id. */
export function checkSessionId(store: string, id: unknown): asserts id is string {
  if (!isValidSessionId(id)) {
    const shown = typeof id === "string" ? JSON.stringify(id.slice(0, 140)) : typeof id;
    throw new StoreError(
      store,
      "invalid_input",
      `invalid session id ${shown} (1-128 of [A-Za-z0-9_-])`,
    );
  }
}

/** Check the construction options; returns them normalized (ttlMs 0 = none, maxSessions 0 = none). */
export function checkStoreOptions(store: string, opts: StoreOptions): Required<StoreOptions> {
  const ttlMs = opts.ttlMs ?? 0;
  const maxSessions = opts.maxSessions ?? 0;
  if (!Number.isFinite(ttlMs) || ttlMs < 0) {
    throw new StoreError(
      store,
      "invalid_input",
      `ttlMs must be a non-negative number, got ${ttlMs}`,
    );
  }
  if (!Number.isSafeInteger(maxSessions) || maxSessions < 0) {
    throw new StoreError(
      store,
      "invalid_input",
      `maxSessions must be a non-negative integer, got ${maxSessions}`,
    );
  }
  return { ttlMs, maxSessions };
}

/** The TTL of one write in ms (0: none), and its checked generation fields. */
export function checkPut(
  store: string,
  defaults: Required<StoreOptions>,
  id: unknown,
  bytes: unknown,
  opts: PutOptions = {},
): { ttlMs: number; generation: number; expect: number | null | undefined } {
  checkSessionId(store, id);
  if (!(bytes instanceof Uint8Array)) {
    throw new StoreError(store, "invalid_input", "bytes must be a Uint8Array");
  }
  const ttlMs = opts.ttlMs ?? defaults.ttlMs;
  if (!Number.isFinite(ttlMs) || ttlMs < 0) {
    throw new StoreError(
      store,
      "invalid_input",
      `ttlMs must be a non-negative number, got ${ttlMs}`,
    );
  }
  const generation = opts.generation ?? -1;
  if (!Number.isSafeInteger(generation) || generation < -1) {
    throw new StoreError(
      store,
      "invalid_input",
      `generation must be an integer ≥ -1, got ${generation}`,
    );
  }
  const expect = opts.expectGeneration;
  if (expect !== undefined && expect !== null && (!Number.isSafeInteger(expect) || expect < -1)) {
    throw new StoreError(
      store,
      "invalid_input",
      `expectGeneration must be an integer ≥ -1 or null, got ${expect}`,
    );
  }
  return { ttlMs: Math.ceil(ttlMs), generation, expect };
}

/** Check the arguments of a lease call (`StoreError` "invalid_input" when wrong). */
export function checkLease(store: string, id: unknown, owner: unknown, ttlMs: unknown): void {
  checkSessionId(store, id);
  if (typeof owner !== "string" || owner.length === 0 || owner.length > 256) {
    throw new StoreError(
      store,
      "invalid_input",
      "lease owner must be a string of 1-256 characters",
    );
  }
  if (typeof ttlMs !== "number" || !Number.isFinite(ttlMs) || ttlMs < 1) {
    throw new StoreError(store, "invalid_input", `lease ttlMs must be ≥ 1, got ${ttlMs}`);
  }
}
