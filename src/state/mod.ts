/**
 * Session state: the codec (`encodeSession`, `decodeSession`, with the layer encodings of
 * `STATE_ENCODINGS`: exact `f32` by default), its errors, and the session stores, opened from a
 * spec string by `openStore`:
 *
 * | spec                                   | store                                       |
 * |----------------------------------------|---------------------------------------------|
 * | `memory`                               | in-process LRU (`MemorySessionStore`)       |
 * | `fs:DIR`                               | one file per session in DIR                 |
 * | `kv`, `kv:PATH`                        | Deno KV (default database, or PATH / URL)   |
 * | `redis://host:port[/db]`, `rediss://…` | Redis (also `redis:URL` and `redis:host:port`) |
 *
 * The Deno KV and Redis stores are loaded on demand, so using the codec or the memory store pulls
 * in neither `Deno.openKv` nor the Redis client.
 *
 * @example Freeze a session into bytes (here in q8 + deflate, about a quarter of f32) and back
 * ```ts
 * import { decodeSession, encodeSession } from "./mod.ts";
 * import { Session } from "../engine/session.ts";
 * import { loadConfig } from "../model/config.ts";
 *
 * const config = await loadConfig("models/tnl-shakespeare-6m/config.json");
 * const ids = { config, modelFingerprint: "m", tokenizerFingerprint: "t" };
 * const session = new Session(config);
 * const bytes = await encodeSession(session.toSnapshot(), { ...ids, encoding: "q8+deflate" });
 * const back = await decodeSession(bytes, ids);
 * console.log(back.encoding, back.state.position); // "q8+deflate" 0
 * ```
 * @module
 */

import { StoreError } from "./errors.ts";
import { FsSessionStore } from "./fs_store.ts";
import { MemorySessionStore } from "./memory_store.ts";
import type { SessionStore } from "./store.ts";

export {
  type DecodedSession,
  type DecodeOptions,
  decodeSession,
  DEFAULT_STATE_ENCODING,
  defaultMaxStateBytes,
  type EncodeOptions,
  encodeSession,
  isExactEncoding,
  isStateEncoding,
  sessionDigest,
  STATE_ENCODINGS,
  STATE_FORMAT,
  STATE_MEDIA_TYPE,
  STATE_READ_VERSIONS,
  STATE_VERSION,
  stateByteSize,
  type StateEncoding,
  type StateSecret,
} from "./codec.ts";
export {
  StateError,
  type StateErrorCode,
  StoreConflictError,
  StoreError,
  type StoreErrorCode,
} from "./errors.ts";
export type {
  IdsOptions,
  PutOptions,
  SessionLeases,
  SessionStore,
  StoredSession,
  StoreOptions,
} from "./store.ts";
export {
  DEFAULT_MEMORY_STORE_BYTES,
  MemorySessionStore,
  type MemoryStoreOptions,
} from "./memory_store.ts";
export { FsSessionStore, type FsStoreOptions } from "./fs_store.ts";
export type { KvStoreOptions } from "./kv_store.ts";
export type { RedisStoreOptions } from "./redis_store.ts";

/** Options of `openStore`; each store uses the ones that apply to it. */
export interface OpenStoreOptions {
  /** Default time to live of an entry after each write, in ms (absent or 0: never expires). */
  ttlMs?: number;
  /** Most entries kept (absent: no limit). */
  maxSessions?: number;
  /** memory: byte budget (default 1 GiB). */
  maxBytes?: number;
  /** kv and redis: key namespace (default "tnl"; kv keys start with it, redis keys with "tnl:"). */
  prefix?: string;
  /** fs and kv: sweep period in ms (default 60,000; 0: at open only). */
  sweepIntervalMs?: number;
  /** fs: fsync each file before renaming it into place (default false). */
  fsync?: boolean;
  /** redis: connection timeout in ms (default 2,000). */
  connectTimeoutMs?: number;
  /** redis: per-command timeout in ms (default 10,000). */
  commandTimeoutMs?: number;
  /** redis: do not keep the process alive for the connection (default false). */
  unref?: boolean;
}

const SPECS = "memory, fs:DIR, kv, kv:PATH, or redis://host:port[/db]";

function badSpec(spec: string, detail: string): StoreError {
  return new StoreError(
    "open",
    "invalid_input",
    `store spec ${JSON.stringify(spec)}: ${detail} (expected ${SPECS})`,
  );
}

/**
 * Open the store a spec string names (see the module doc); errors name the bad spec.
 *
 * @example Store and read back encoded session bytes with compare-and-set
 * ```ts
 * import { openStore } from "./mod.ts";
 *
 * const store = await openStore("memory"); // or "fs:./sessions", "kv", "redis://localhost:6379"
 * await store.put("s_example", new Uint8Array([1, 2, 3]), { generation: 1 });
 * await store.put("s_example", new Uint8Array([4]), { generation: 2, expectGeneration: 1 });
 * console.log((await store.getEntry("s_example"))?.generation); // 2
 * await store.close();
 * ```
 */
export async function openStore(spec: string, opts: OpenStoreOptions = {}): Promise<SessionStore> {
  if (typeof spec !== "string") throw badSpec(String(spec), "not a string");
  const common = { ttlMs: opts.ttlMs, maxSessions: opts.maxSessions };
  const ns = opts.prefix ?? "tnl";
  if (spec === "memory") return new MemorySessionStore({ ...common, maxBytes: opts.maxBytes });
  if (spec.startsWith("fs:")) {
    const dir = spec.slice(3);
    if (dir === "") throw badSpec(spec, "missing directory");
    return await FsSessionStore.open(dir, {
      ...common,
      sweepIntervalMs: opts.sweepIntervalMs,
      fsync: opts.fsync,
    });
  }
  if (spec === "kv" || spec.startsWith("kv:")) {
    const path = spec === "kv" ? undefined : spec.slice(3);
    if (path === "") throw badSpec(spec, "missing path after kv:");
    const { KvSessionStore } = await import("./kv_store.ts");
    return await KvSessionStore.open(path, {
      ...common,
      prefix: [ns],
      sweepIntervalMs: opts.sweepIntervalMs,
    });
  }
  if (spec.startsWith("redis:") || spec.startsWith("rediss:")) {
    let url = spec;
    if (!/^rediss?:\/\//.test(spec)) {
      const rest = spec.slice("redis:".length);
      url = /^rediss?:\/\//.test(rest) ? rest : `redis://${rest}`;
    }
    try {
      const u = new URL(url);
      if (!u.hostname) throw new Error("no host");
      if (u.pathname !== "" && u.pathname !== "/" && !/^\/\d+$/.test(u.pathname)) {
        throw new Error("bad database");
      }
    } catch (e) {
      throw badSpec(spec, `not a Redis URL (${(e as Error).message})`);
    }
    const { RedisSessionStore } = await import("./redis_store.ts");
    return await RedisSessionStore.connect(url, {
      ...common,
      prefix: `${ns}:`,
      connectTimeoutMs: opts.connectTimeoutMs,
      commandTimeoutMs: opts.commandTimeoutMs,
      unref: opts.unref,
    });
  }
  throw badSpec(spec, "unknown kind");
}
