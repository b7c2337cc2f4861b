/**
 * A session store in Redis (node-redis, `@redis/client`, over the npm compatibility layer).
 *
 * ```
 * <prefix>s:<id>         hash { tok, gen, at }: the head (which value is current, its generation)
 * <prefix>v:<id>:<tok>   the state bytes of one write (one binary value)
 * <prefix>sessions       sorted set of ids by last write time, for eviction
 * <prefix>lease:<id>     the owner of the session's lease (`leases`), with a PX expiry
 * ```
 *
 * A write SETs its bytes under a fresh random `tok` (with a 15-minute expiry as a safety net), then
 * one Lua script flips the head: it checks the generation for compare-and-set, points the head at
 * the new value, sets or clears the TTL on both (PEXPIRE / PERSIST), deletes the replaced value,
 * records the write time and evicts the least recently written sessions beyond `maxSessions`.
 * Reads run one script that reads the head and its value together, so no reader ever sees a
 * half-written or mixed state; scripts are atomic in Redis. (The scripts compute value keys, so this
 * targets a single Redis node or a primary with replicas, not Redis Cluster.)
 *
 * Leases (`leases`): `SET lease NX PX ttl` takes one; renewing and releasing are scripts that
 * compare the owner first (PEXPIRE or DEL only when it is still ours), so a lease that expired and
 * went to another process is never extended or deleted by the one that lost it.
 *
 * Failures never hang: the connection has a connect timeout and no retries before it first
 * succeeds, commands have a timeout, and the offline queue is off (commands issued while the client
 * reconnects fail at once). Every failure to reach Redis is a `StoreError` "backend_unavailable".
 * @module
 */

import { Buffer } from "node:buffer";
import { createClient, RESP_TYPES } from "./redis_client.ts";
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

/** Options of the Redis store. */
export interface RedisStoreOptions extends StoreOptions {
  /** Key prefix (default "tnl:"). */
  prefix?: string;
  /** Connection timeout in ms (default 2,000). */
  connectTimeoutMs?: number;
  /** Per-command timeout in ms (default 10,000). */
  commandTimeoutMs?: number;
  /**
   * Do not keep the process alive for the connection (default false): a server that stops
   * serving then exits without closing the store (`deno serve` on SIGTERM).
   */
  unref?: boolean;
}

const PENDING_TTL_MS = 15 * 60_000;
const VALUE_TTL_MARGIN_MS = 1000;

const FLIP = `
local head, newval, order = KEYS[1], KEYS[2], KEYS[3]
local id, tok, gen, expect = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ttl, max, prefix = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
if redis.call('EXISTS', newval) == 0 then return {'lost'} end
local cur = redis.call('HMGET', head, 'tok', 'gen')
if expect ~= '' then
  local ok
  if expect == 'none' then ok = (cur[1] == false) else ok = (cur[2] == expect) end
  if not ok then
    redis.call('DEL', newval)
    if cur[1] == false then return {'conflict'} end
    return {'conflict', cur[2]}
  end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('DEL', head)
redis.call('HSET', head, 'tok', tok, 'gen', gen, 'at', now)
if ttl > 0 then
  redis.call('PEXPIRE', head, ttl)
  redis.call('PEXPIRE', newval, ttl + ${VALUE_TTL_MARGIN_MS})
else
  redis.call('PERSIST', newval)
end
if cur[1] and cur[1] ~= tok then redis.call('DEL', prefix .. 'v:' .. id .. ':' .. cur[1]) end
redis.call('ZADD', order, now, id)
local evicted = 0
if max > 0 then
  local n = redis.call('ZCARD', order)
  while n > max do
    local victims = redis.call('ZRANGE', order, 0, 1)
    local v = victims[1]
    if v == id then v = victims[2] end
    if not v then break end
    redis.call('ZREM', order, v)
    local vh = prefix .. 's:' .. v
    local vt = redis.call('HGET', vh, 'tok')
    if vt then
      redis.call('DEL', prefix .. 'v:' .. v .. ':' .. vt)
      evicted = evicted + 1
    end
    redis.call('DEL', vh)
    n = n - 1
  end
end
return {'ok', evicted}
`;

const GET = `
local cur = redis.call('HMGET', KEYS[1], 'tok', 'gen')
if not cur[1] then return false end
local v = redis.call('GET', ARGV[1] .. 'v:' .. ARGV[2] .. ':' .. cur[1])
if not v then return false end
return {v, cur[2]}
`;

const DELETE = `
local tok = redis.call('HGET', KEYS[1], 'tok')
redis.call('ZREM', KEYS[2], ARGV[2])
if not tok then return 0 end
redis.call('DEL', KEYS[1], ARGV[1] .. 'v:' .. ARGV[2] .. ':' .. tok)
return 1
`;

const SIZE = `
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local n = 0
for _, id in ipairs(ids) do
  if redis.call('EXISTS', ARGV[1] .. 's:' .. id) == 1 then n = n + 1 else redis.call('ZREM', KEYS[1], id) end
end
return n
`;

const LEASE_RENEW = `
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not cur then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
`;

const LEASE_RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

const SCRIPTS = { FLIP, GET, DELETE, SIZE, LEASE_RENEW, LEASE_RELEASE } as const;
type ScriptName = keyof typeof SCRIPTS;

type Client = ReturnType<typeof createClient>;

function toBytes(v: unknown): Uint8Array {
  if (v instanceof Uint8Array) return new Uint8Array(v);
  if (typeof v === "string") return new TextEncoder().encode(v);
  throw new StoreError("redis", "internal", `unexpected reply type ${typeof v}`);
}

function toText(v: unknown): string {
  if (v instanceof Uint8Array) return new TextDecoder().decode(v);
  return String(v);
}

function randomHex(bytes = 12): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(bytes)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

/** Redis URL without its password (for messages). */
function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "(unparsable URL)";
  }
}

/** A session store in Redis. Connect with `RedisSessionStore.connect(url, opts)`. */
export class RedisSessionStore extends StoreBase {
  /** Session leases (`SET NX PX`, owner-checked renew and release). */
  readonly leases: SessionLeases = {
    acquire: async (id, owner, ttlMs) => {
      this.checkLease(id, owner, ttlMs);
      try {
        const r = await this.#client.sendCommand([
          "SET",
          this.#leaseKey(id),
          owner,
          "NX",
          "PX",
          String(Math.ceil(ttlMs)),
        ]);
        return r !== null && r !== undefined;
      } catch (e) {
        throw this.ioError("lease", e);
      }
    },
    renew: async (id, owner, ttlMs) => {
      this.checkLease(id, owner, ttlMs);
      try {
        const r = await this.#script("LEASE_RENEW", [this.#leaseKey(id)], [
          owner,
          String(Math.ceil(ttlMs)),
        ]);
        return Number(r) === 1;
      } catch (e) {
        throw this.ioError("lease renewal", e);
      }
    },
    release: async (id, owner) => {
      this.checkLease(id, owner, 1);
      try {
        await this.#script("LEASE_RELEASE", [this.#leaseKey(id)], [owner]);
      } catch (e) {
        throw this.ioError("lease release", e);
      }
    },
  };
  readonly #client: Client;
  readonly #prefix: string;
  readonly #url: string;
  readonly #sha = new Map<ScriptName, string>();
  #lastError: Error | null = null;

  private constructor(client: Client, url: string, opts: RedisStoreOptions) {
    super("redis", opts);
    this.#client = client;
    this.#url = url;
    this.#prefix = opts.prefix ?? "tnl:";
  }

  /**
   * Connect to `url` (`redis://[user:pass@]host:port[/db]`, `rediss://` for TLS). Fails fast with
   * `StoreError` "backend_unavailable" when Redis cannot be reached within `connectTimeoutMs`.
   */
  static async connect(url: string, opts: RedisStoreOptions = {}): Promise<RedisSessionStore> {
    checkStoreOptions("redis", opts);
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new StoreError("redis", "invalid_input", `not a URL: ${JSON.stringify(url)}`);
    }
    if (parsed.protocol !== "redis:" && parsed.protocol !== "rediss:") {
      throw new StoreError(
        "redis",
        "invalid_input",
        `expected a redis:// or rediss:// URL, got ${redactUrl(url)}`,
      );
    }
    let connected = false;
    const client = createClient({
      url,
      socket: {
        connectTimeout: opts.connectTimeoutMs ?? 2000,
        // Before the first connection: fail at once. After: reconnect in the background with
        // backoff, while commands fail fast (no offline queue).
        reconnectStrategy: (retries: number, cause: Error) =>
          connected ? Math.min(50 * 2 ** retries, 2000) : cause ?? new Error("connection failed"),
      },
      disableOfflineQueue: true,
      commandOptions: {
        typeMapping: { [RESP_TYPES.BLOB_STRING]: Buffer },
        timeout: opts.commandTimeoutMs ?? 10_000,
      },
    });
    const store = new RedisSessionStore(client as unknown as Client, url, opts);
    client.on("error", (e: Error) => {
      store.#lastError = e;
    });
    try {
      await client.connect();
      if (opts.unref) client.unref();
      connected = true;
      await store.#loadScripts();
    } catch (e) {
      try {
        client.destroy();
      } catch {
        // already closed
      }
      throw new StoreError(
        "redis",
        "backend_unavailable",
        `cannot connect to ${redactUrl(url)}: ${(e as Error).message || store.#lastError?.message}`,
        { cause: e },
      );
    }
    return store;
  }

  async #loadScripts(): Promise<void> {
    for (const [name, src] of Object.entries(SCRIPTS) as [ScriptName, string][]) {
      const sha = await this.#client.sendCommand(["SCRIPT", "LOAD", src]);
      this.#sha.set(name, toText(sha));
    }
  }

  /** " on <the URL without its password>": failures name the server. */
  protected override where(): string {
    return ` on ${redactUrl(this.#url)}`;
  }

  /** Run a loaded script (reloading once after a Redis restart flushed the script cache). */
  async #script(name: ScriptName, keys: string[], args: (string | Buffer)[]): Promise<unknown> {
    const run = () =>
      this.#client.sendCommand([
        "EVALSHA",
        this.#sha.get(name)!,
        String(keys.length),
        ...keys,
        ...args,
      ]);
    try {
      return await run();
    } catch (e) {
      if (!String((e as Error)?.message).startsWith("NOSCRIPT")) throw e;
      await this.#loadScripts();
      return await run();
    }
  }

  #headKey(id: string): string {
    return `${this.#prefix}s:${id}`;
  }

  #valueKey(id: string, tok: string): string {
    return `${this.#prefix}v:${id}:${tok}`;
  }

  #leaseKey(id: string): string {
    return `${this.#prefix}lease:${id}`;
  }

  get #orderKey(): string {
    return `${this.#prefix}sessions`;
  }

  /** The entry under `id`, or null (absent or expired). */
  async getEntry(id: string): Promise<StoredSession | null> {
    this.checkId(id);
    let r: unknown;
    try {
      r = await this.#script("GET", [this.#headKey(id)], [this.#prefix, id]);
    } catch (e) {
      throw this.ioError("read", e);
    }
    if (r === null || r === undefined) return null;
    const [bytes, gen] = r as [unknown, unknown];
    return { bytes: toBytes(bytes), generation: Number(toText(gen)) };
  }

  /** Write the bytes under a new key, then flip the head atomically (Lua). */
  async put(id: string, bytes: Uint8Array, opts?: PutOptions): Promise<void> {
    const { ttlMs, generation, expect } = this.checkPut(id, bytes, opts);
    const tok = randomHex();
    const valueKey = this.#valueKey(id, tok);
    let r: unknown;
    try {
      const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      await this.#client.sendCommand(["SET", valueKey, buf, "PX", String(PENDING_TTL_MS)]);
      r = await this.#script("FLIP", [this.#headKey(id), valueKey, this.#orderKey], [
        id,
        tok,
        String(generation),
        expect === undefined ? "" : expect === null ? "none" : String(expect),
        String(ttlMs),
        String(this.options.maxSessions),
        this.#prefix,
      ]);
    } catch (e) {
      // Best effort: the value key expires anyway.
      this.#client.sendCommand(["DEL", valueKey]).catch(() => {});
      throw this.ioError("write", e);
    }
    const [status, actual] = (r as unknown[]).map(toText);
    if (status === "conflict") {
      throw new StoreConflictError(
        "redis",
        id,
        expect ?? null,
        actual === undefined ? null : Number(actual),
      );
    }
    if (status !== "ok") {
      throw new StoreError(
        "redis",
        "backend_unavailable",
        `write of session "${id}" was lost before it completed`,
      );
    }
  }

  /** Remove `id`; true when a live entry was removed. */
  async delete(id: string): Promise<boolean> {
    this.checkId(id);
    try {
      const r = await this.#script("DELETE", [this.#headKey(id), this.#orderKey], [
        this.#prefix,
        id,
      ]);
      return Number(r) === 1;
    } catch (e) {
      throw this.ioError("delete", e);
    }
  }

  /** Live sessions (walks the write-order set, dropping entries whose head expired). */
  async size(): Promise<number> {
    this.assertOpen();
    try {
      return Number(await this.#script("SIZE", [this.#orderKey], [this.#prefix]));
    } catch (e) {
      throw this.ioError("size", e);
    }
  }

  /** One page of ids, sorted (see `SessionStore.ids`; reads the write-order set whole). */
  async ids(opts: IdsOptions): Promise<string[]> {
    this.assertOpen();
    try {
      const all = await this.#client.zRange(this.#orderKey, 0, -1) as unknown[];
      // The order set outlives heads that expired (a TTL drops the head, not its entry there):
      // keep only ids whose head still exists, a page at a time.
      const candidates = pageOfIds(all.map(toText), { ...opts, limit: Number.MAX_SAFE_INTEGER });
      const want = Math.max(1, opts.limit);
      const live: string[] = [];
      for (let i = 0; i < candidates.length && live.length < want; i += want) {
        const page = candidates.slice(i, i + want);
        const exists = await Promise.all(
          page.map((id) => this.#client.sendCommand(["EXISTS", this.#headKey(id)])),
        );
        page.forEach((id, j) => Number(exists[j]) === 1 && live.push(id));
      }
      return live.slice(0, want);
    } catch (e) {
      throw this.ioError("list", e);
    }
  }

  /** Close the connection. */
  async close(): Promise<void> {
    if (!this.markClosed()) return;
    try {
      await this.#client.close();
    } catch {
      this.#client.destroy();
    }
  }
}
