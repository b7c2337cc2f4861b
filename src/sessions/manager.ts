/**
 * Sessions around generations: load the encoded state from the store, decode it, hand the live
 * `Session` to the engine, and save it back (generation + 1, encode, compare-and-set put) when the
 * response completes. A per-process busy set makes a second request for a session that is already
 * generating (or being saved, imported or deleted) a `conflict`; the store's compare-and-set makes a
 * write that raced another process a `conflict` too. Errors are `TnlError` codes; the HTTP layer
 * maps them to statuses (`conflict` 409, `session_not_found` 404, ...).
 *
 * The stored session advances only when a response completes: a request that fails, times out
 * before producing anything, or whose client goes away leaves the stored state as it was.
 *
 * Recently used live sessions stay in a small in-process cache keyed by id, checked against the
 * stored entry's generation and SHA-256, so a session continued on the same process skips the
 * decode (the stored bytes stay the truth).
 *
 * Scale-out: on a store shared by several processes (one with `leases`: Redis, Deno KV) every
 * request also takes the session's lease in the store (`leaseMs`, renewed every third of it while
 * the request runs, released before the response completes), so two instances never generate for
 * the same session at once: the loser gets a 409 with `Retry-After`. A process killed while holding
 * a lease blocks the session until the lease expires. Checkpoints (`SessionLease.checkpoint`) store
 * the session mid-generation, so another instance can resume from the last one.
 * @module
 */

import type { Engine } from "../engine/engine.ts";
import { Session } from "../engine/session.ts";
import type { ModelConfig } from "../model/config.ts";
import { isValidSessionId, type SessionSnapshot } from "../model/snapshot.ts";
import { stateBytes } from "../model/state.ts";
import { sessionSummary } from "../state/codec.ts";
import {
  DEFAULT_STATE_ENCODING,
  encodingParts,
  isExactEncoding,
  lossyOrigin,
  type StateEncoding,
} from "../state/encodings.ts";
import { CodecPool } from "../state/codec_pool.ts";
import type { SessionStore } from "../state/store.ts";
import { InputError, TnlError } from "../errors.ts";
import { validateSamplingParams } from "../engine/sampler.ts";
import { StateError } from "../state/errors.ts";
import { etagOf, matchesEtag } from "./etag.ts";

/** Session metadata as `GET /v1/sessions/:id` returns it. */
export interface SessionInfo {
  /** Session id. */
  id: string;
  /** Always "session". */
  object: "session";
  /** The served model id. */
  model: string;
  /** Tokens consumed by the state. */
  position: number;
  /** Tokens in the history (prompts and generations, the pending one included). */
  tokens: number;
  /** Whether a token waits to be fed (the last one of the history). */
  pending: boolean;
  /** Saved generation (incremented on every save). */
  generation: number;
  /** Creation time, Unix seconds. */
  created: number;
  /** Last update, Unix seconds. */
  updated: number;
  /** Whether a request of this process is generating for it now. */
  busy: boolean;
  /** Size of the encoded state in the store, in bytes. */
  state_bytes: number;
  /** How the stored state's layers are encoded (`"f32"`, `"q8+deflate"`, ...). */
  state_encoding: StateEncoding;
  /**
   * Whether the state resumes bit-exactly: false when it is stored in a lossy encoding, or
   * continues from a state that was (see `state_lossy`), whatever its own encoding.
   */
  state_exact: boolean;
  /** The lossy encoding the state passed through, or null when it is exact. */
  state_lossy: StateEncoding | null;
}

/** How a stored state is encoded, and whether it descends from a lossy one. */
export interface StoredEncoding {
  /** The layers' encoding. */
  encoding: StateEncoding;
  /** Null when exact, else the lossy encoding the state passed through. */
  lossy: StateEncoding | null;
}

/** A saved state: its bytes, their SHA-256 and how it is encoded. */
export interface SavedState extends StoredEncoding {
  /** The encoded bytes, as stored. */
  bytes: Uint8Array;
  /** SHA-256 of `bytes`, hex (the ETag's value). */
  digest: string;
}

/** Options of `SessionManager.open` and `create`. */
export interface LeaseOptions {
  /** How this request's saves (and checkpoints) encode the state (default: the manager's). */
  encoding?: StateEncoding;
}

/** A page of sessions as `GET /v1/sessions` returns it (OpenAI's list shape). */
export interface SessionList {
  /** Always "list". */
  object: "list";
  /** The sessions, in id order. */
  data: SessionInfo[];
  /** First id of the page, or null when empty. */
  first_id: string | null;
  /** Last id of the page (the `after` of the next page), or null when empty. */
  last_id: string | null;
  /** Whether more sessions follow. */
  has_more: boolean;
}

/** What sessions need of a loaded model: its shape and the fingerprints its states carry. */
export interface SessionModel {
  /** The model's configuration. */
  readonly config: ModelConfig;
  /** The model fingerprint (config and weights). */
  readonly fingerprint: string;
  /** The tokenizer (its fingerprint). */
  readonly tokenizer: { readonly fingerprint: string };
}

/** What the session manager needs. */
export interface SessionManagerOptions {
  /** The loaded model. */
  model: SessionModel;
  /** Its engine. */
  engine: Engine;
  /** The store. */
  store: SessionStore;
  /** The served model id (for metadata). */
  modelId: string;
  /** HMAC secret for states. */
  secret?: string;
  /**
   * Live sessions kept in the in-process cache (0 = none). Default: 16 on the CPU backend; on a
   * device backend as many as 1 GiB of states holds, 16 to 1,024 (80 at 385M): a session found here
   * keeps its `Session` object, so the engine can start it from the state still resident there.
   */
  cacheSize?: number;
  /** The busy set (shared with the app context). */
  busy?: Set<string>;
  /** Lease time to live in ms on stores with `leases` (default 10 000). */
  leaseMs?: number;
  /** Where states are encoded and hashed (default: in the calling thread). */
  codec?: CodecPool;
  /**
   * How saved states are encoded unless a request asks otherwise (default `"f32"`, exact; an
   * unknown name is a `TnlError` "invalid_input").
   */
  encoding?: StateEncoding;
}

/** Host memory the session cache may fill by default. */
const DEFAULT_CACHE_BYTES = 2 ** 30;

/**
 * Sessions in the default cache: 16 on the CPU backend (edge hosts count memory); on a device
 * backend, where a cached session can start from the state still resident on the device, 1 GiB of
 * states within [16, 1024].
 */
export function defaultCacheSize(config: ModelConfig, backendKind?: string): number {
  if (backendKind === "cpu") return 16;
  return Math.max(16, Math.min(1024, Math.floor(DEFAULT_CACHE_BYTES / stateBytes(config))));
}

/** Default lease time to live on shared stores, in ms. */
export const DEFAULT_LEASE_MS = 10_000;

/** A session held by one request: generate with `session`, then `save()` and/or `release()`. */
export interface SessionLease {
  /** The live session. */
  readonly session: Session;
  /** True when the session did not exist in the store before this request. */
  readonly isNew: boolean;
  /** How saves encode the state (the request's choice, or the manager's default). */
  readonly encoding: StateEncoding;
  /**
   * Save the session (generation + 1, encode, compare-and-set put); returns its bytes. Waits for a
   * checkpoint being written; 409 when the store lease was lost to another process. A session
   * resumed from a lossy state stays marked lossy (`SavedState.lossy`) in any encoding; one saved
   * in a lossy encoding leaves the cache, so its next request resumes from the stored bytes, as
   * any other instance would.
   */
  save(): Promise<SavedState>;
  /**
   * Store a snapshot taken mid-generation (`GenerateRequest.onCheckpoint`), in the background:
   * writes are sequential compare-and-set puts (generation + 1 each), a snapshot that arrives while
   * one is written replaces any that waits, and failures are counted, not thrown (the final `save`
   * reports a lasting problem).
   */
  checkpoint(snapshot: SessionSnapshot): void;
  /** Checkpoints written so far, and those that failed. */
  readonly checkpoints: { written: number; failed: number };
  /**
   * Give the session back (idempotent): waits for a checkpoint being written, then releases the
   * store lease. Unless `save()` succeeded, the live object is dropped from the cache (it may hold
   * progress the store does not). Never rejects.
   */
  release(): Promise<void>;
}

/** The hold of one request on a session id: the process's busy set and the store lease. */
interface Claim {
  /** True when the store lease was found taken by another owner while renewing. */
  readonly lost: boolean;
  /** Release the lease, then the busy mark (idempotent, never rejects). */
  release(): Promise<void>;
}

interface CacheEntry extends StoredEncoding {
  session: Session;
  generation: number;
  digest: string;
}

/** Loads, saves and guards sessions; see the module doc. */
export class SessionManager {
  /** Ids of sessions a request of this process holds. */
  readonly busy: Set<string>;
  readonly #o: SessionManagerOptions;
  readonly #cache = new Map<string, CacheEntry>();
  readonly #cacheSize: number;
  /** Bytes of each state this process wrote or imported (for the metrics gauge). */
  readonly #sizes = new Map<string, number>();
  #stateBytes = 0;
  /** Encoded bytes written to the store since start. */
  bytesWritten = 0;
  /** Checkpoints written to the store since start. */
  checkpointsWritten = 0;
  readonly #owner = "o_" + crypto.randomUUID();
  readonly #pool: CodecPool;
  /**
   * Digests of encoded bytes this manager wrote: a store that keeps the very array it was given
   * (the memory store) hands it back on the next request, whose digest is then not computed again
   * (hashing 13 MB per 385M request, and copying it to a codec worker, was on every turn's path).
   */
  readonly #digests = new WeakMap<Uint8Array, string>();
  readonly #encoding: StateEncoding;
  #claims = 0;

  /** A manager over a model, its engine and a store. */
  constructor(o: SessionManagerOptions) {
    this.#o = o;
    this.#pool = o.codec ?? new CodecPool(0);
    this.#encoding = o.encoding ?? DEFAULT_STATE_ENCODING;
    encodingParts(this.#encoding);
    this.busy = o.busy ?? new Set();
    this.#cacheSize = o.cacheSize ?? defaultCacheSize(o.model.config, o.engine.backend.kind);
  }

  /** How saved states are encoded unless a request asks otherwise. */
  get encoding(): StateEncoding {
    return this.#encoding;
  }

  /** The store. */
  get store(): SessionStore {
    return this.#o.store;
  }

  /** Bytes of state stored: the store's own count when it keeps one, else what this process wrote. */
  get stateBytes(): number {
    const b = (this.#o.store as { bytes?: unknown }).bytes;
    return typeof b === "number" ? b : this.#stateBytes;
  }

  #track(id: string, size: number | null): void {
    this.#stateBytes -= this.#sizes.get(id) ?? 0;
    if (size === null) this.#sizes.delete(id);
    else {
      this.#sizes.set(id, size);
      this.#stateBytes += size;
    }
  }

  /**
   * Mark `id` busy (409 when a request of this process holds it), then take its store lease when
   * the store has leases (409 with Retry-After when another process holds it, 503 when the store
   * cannot be reached). The lease is renewed every third of its TTL until released. `fresh`: a
   * random new id nobody else knows yet, held by the busy mark alone when the store is unreachable
   * (so a new completion still answers, unsaved, while the store is down).
   */
  async #claim(id: string, fresh = false): Promise<Claim> {
    if (this.busy.has(id)) {
      throw new TnlError("conflict", `session ${id} is busy (a request is using it)`, {
        param: "session",
      });
    }
    this.busy.add(id);
    const local = (): Claim => {
      let done = false;
      return {
        lost: false,
        release: () => {
          if (!done) this.busy.delete(id);
          done = true;
          return Promise.resolve();
        },
      };
    };
    const leases = this.#o.store.leases;
    if (!leases) return local();
    const ttl = this.#o.leaseMs ?? DEFAULT_LEASE_MS;
    const owner = `${this.#owner}.${++this.#claims}`;
    let mine: boolean;
    try {
      mine = await leases.acquire(id, owner, ttl);
    } catch (e) {
      if (fresh) return local();
      this.busy.delete(id);
      throw e;
    }
    if (!mine) {
      this.busy.delete(id);
      throw new TnlError(
        "conflict",
        `session ${id} is busy (a request on another instance is using it)`,
        { param: "session", retryable: true },
      );
    }
    let lost = false;
    const timer = setInterval(() => {
      leases.renew(id, owner, ttl).then((still) => {
        if (!still) lost = true;
      }, () => {
        // Unreachable store: keep trying; the lease may still be ours when it comes back.
      });
    }, Math.max(20, Math.floor(ttl / 3)));
    let released: Promise<void> | null = null;
    return {
      get lost() {
        return lost;
      },
      release: () =>
        released ??= (async () => {
          clearInterval(timer);
          try {
            await leases.release(id, owner);
          } catch {
            // Unreachable store: the lease expires by itself.
          }
          this.busy.delete(id);
        })(),
    };
  }

  #remember(id: string, e: CacheEntry): void {
    if (this.#cacheSize <= 0) return;
    this.#cache.delete(id);
    this.#cache.set(id, e);
    while (this.#cache.size > this.#cacheSize) {
      this.#cache.delete(this.#cache.keys().next().value!);
    }
  }

  #codec() {
    const m = this.#o.model;
    return {
      config: m.config,
      modelFingerprint: m.fingerprint,
      tokenizerFingerprint: m.tokenizer.fingerprint,
      secret: this.#o.secret || undefined,
    };
  }

  /** The digest of encoded bytes: remembered when this manager wrote this very array, else hashed. */
  async #digestOf(bytes: Uint8Array): Promise<string> {
    const known = this.#digests.get(bytes);
    if (known !== undefined) return known;
    const digest = await this.#pool.digest(bytes);
    this.#digests.set(bytes, digest);
    return digest;
  }

  /** Decode stored bytes (or take the cached live session when they are unchanged). */
  async #load(id: string): Promise<CacheEntry & { size: number }> {
    const entry = await this.#o.store.getEntry(id);
    if (!entry) {
      this.#cache.delete(id);
      throw noSession(id);
    }
    const digest = await this.#digestOf(entry.bytes);
    const hit = this.#cache.get(id);
    if (hit && hit.digest === digest && hit.generation === entry.generation) {
      this.#remember(id, hit);
      return { ...hit, generation: entry.generation, size: entry.bytes.length };
    }
    const snap = await this.#pool.decode(entry.bytes, this.#codec());
    const session = Session.fromSnapshot(this.#o.model.config, snap);
    const e = {
      session,
      generation: entry.generation,
      digest,
      encoding: snap.encoding,
      lossy: snap.lossy,
    };
    this.#remember(id, e);
    return { ...e, size: entry.bytes.length };
  }

  #lease(
    session: Session,
    stored: number | null,
    claim: Claim,
    inherited: StateEncoding | null,
    opts: LeaseOptions,
  ): SessionLease {
    const id = session.id;
    const encoding = opts.encoding ?? this.#encoding;
    // What a save writes in `lossy`: the lineage's, else this encoding's own when lossy.
    const lossy = lossyOrigin(encoding, inherited);
    let released = false;
    let saved = false;
    let saving = false;
    let expect = stored;
    const checkpoints = { written: 0, failed: 0 };
    let queued: SessionSnapshot | null = null;
    let writing: Promise<void> | null = null;
    let releasing: Promise<void> | null = null;

    const lostLease = () =>
      new TnlError("conflict", `session ${id}: its lease was taken over by another instance`, {
        param: "session",
      });
    const writeCheckpoint = async (snap: SessionSnapshot) => {
      if (claim.lost) throw lostLease();
      const generation = Math.max(session.generation, expect ?? -1) + 1;
      const { bytes, digest } = await this.#pool.encode(
        { ...snap, generation, lossy: inherited },
        { ...this.#codec(), encoding },
      );
      this.#digests.set(bytes, digest);
      await this.#o.store.put(id, bytes, { generation, expectGeneration: expect, adopt: true });
      expect = generation;
      session.generation = generation;
      this.#cache.delete(id);
      this.#track(id, bytes.length);
      this.bytesWritten += bytes.length;
      this.checkpointsWritten++;
      checkpoints.written++;
    };
    const drain = async () => {
      while (queued && !saving && !released) {
        const snap = queued;
        queued = null;
        try {
          await writeCheckpoint(snap);
        } catch {
          checkpoints.failed++;
        }
      }
    };

    return {
      session,
      isNew: stored === null,
      encoding,
      checkpoints,
      checkpoint: (snap) => {
        if (released || saving || saved) return;
        queued = snap;
        writing ??= drain().finally(() => (writing = null));
      },
      save: async () => {
        if (released) throw new Error("save after release");
        saving = true;
        queued = null;
        try {
          await writing;
          if (claim.lost) throw lostLease();
          const before = session.generation;
          session.generation = Math.max(session.generation, expect ?? -1) + 1;
          const { bytes, digest } = await this.#pool.encode(
            { ...session.toSnapshot(), lossy: inherited },
            { ...this.#codec(), encoding },
          );
          this.#digests.set(bytes, digest);
          try {
            await this.#o.store.put(id, bytes, {
              generation: session.generation,
              expectGeneration: expect,
              adopt: true,
            });
          } catch (e) {
            session.generation = before;
            this.#cache.delete(id);
            throw e;
          }
          expect = session.generation;
          // A lossy save: the stored bytes (not this exact live state) are what comes next.
          if (isExactEncoding(encoding)) {
            this.#remember(id, {
              session,
              generation: session.generation,
              digest,
              encoding,
              lossy,
            });
          } else this.#cache.delete(id);
          this.#track(id, bytes.length);
          this.bytesWritten += bytes.length;
          saved = true;
          return { bytes, digest, encoding, lossy };
        } finally {
          saving = false;
        }
      },
      release: () =>
        releasing ??= (async () => {
          released = true;
          queued = null;
          if (!saved) this.#cache.delete(id);
          await writing;
          await claim.release();
        })(),
    };
  }

  /**
   * Hold an existing session (`session_not_found`; `conflict` when busy); `opts.encoding`: how
   * this request saves it.
   */
  async open(id: string, opts: LeaseOptions = {}): Promise<SessionLease> {
    if (!isValidSessionId(id)) throw noSession(id);
    if (opts.encoding !== undefined) encodingParts(opts.encoding);
    const claim = await this.#claim(id);
    try {
      const { session, generation, lossy } = await this.#load(id);
      if (session.busy) throw new TnlError("conflict", `session ${id} is busy`);
      return this.#lease(session, generation, claim, lossy, opts);
    } catch (e) {
      await claim.release();
      throw e;
    }
  }

  /**
   * Hold a new session (a random id, or `id`: 409 when it exists or is busy); `opts.encoding`: how
   * this request saves it.
   */
  async create(id?: string, opts: LeaseOptions = {}): Promise<SessionLease> {
    if (opts.encoding !== undefined) encodingParts(opts.encoding);
    const session = this.#o.engine.newSession(id);
    const claim = await this.#claim(session.id, id === undefined);
    try {
      if (id !== undefined && (await this.#o.store.getEntry(id)) !== null) {
        throw new TnlError("conflict", `session ${id} already exists`, { param: "id" });
      }
    } catch (e) {
      await claim.release();
      throw e;
    }
    this.#cache.delete(session.id);
    return this.#lease(session, null, claim, null, opts);
  }

  /** Metadata of a stored session (404 when absent). */
  async info(id: string): Promise<SessionInfo> {
    if (!isValidSessionId(id)) throw noSession(id);
    const { session, size, encoding, lossy } = await this.#load(id);
    return this.describe(session, size, { encoding, lossy });
  }

  /** Metadata of a live session whose stored state is `size` bytes in `stored`'s encoding. */
  describe(s: Session, size: number, stored: StoredEncoding): SessionInfo {
    return {
      id: s.id,
      object: "session",
      model: this.#o.modelId,
      position: s.state.position,
      tokens: s.length,
      pending: s.pending >= 0,
      generation: s.generation,
      created: Math.floor(s.createdAt / 1000),
      updated: Math.floor(s.updatedAt / 1000),
      busy: this.busy.has(s.id),
      state_bytes: size,
      ...stateFields(stored),
    };
  }

  /**
   * A session's state (404 when absent): the stored bytes, or, when `encoding` is given and differs
   * from the stored one, the stored state decoded and encoded again in it (same generation; a
   * state that was lossy stays marked so). The digest is of the bytes returned.
   */
  async exportState(id: string, encoding?: StateEncoding): Promise<SavedState> {
    if (!isValidSessionId(id)) throw noSession(id);
    const entry = await this.#o.store.getEntry(id);
    if (!entry) throw noSession(id);
    const stored = sessionSummary(entry.bytes);
    if (encoding === undefined || encoding === stored.encoding) {
      const { encoding, lossy } = stored;
      return { bytes: entry.bytes, digest: await this.#digestOf(entry.bytes), encoding, lossy };
    }
    const snap = await this.#pool.decode(entry.bytes, this.#codec());
    const { bytes, digest } = await this.#pool.encode(snap, { ...this.#codec(), encoding });
    return { bytes, digest, encoding, lossy: lossyOrigin(encoding, snap.lossy) };
  }

  /**
   * Import a state under `id`: decoded and checked against the model (400/401/422, its sampling
   * settings included), its id rewritten to `id` (so a state can be copied to a new id: a fork),
   * its generation raised above the stored one if any (generations only grow), re-encoded (and
   * signed) by this server, stored. 409 while the session is busy.
   *
   * No rollback by replay: over an existing id, the state must be this session's own at the stored
   * generation or a later one, or `ifMatch` (an `If-Match` header) must name the stored state's
   * ETag; otherwise 409 `state_replayed`. A stale `If-Match` (or one for an absent id) is a 412.
   */
  async importState(
    id: string,
    bytes: Uint8Array,
    opts: { ifMatch?: string | null } = {},
  ): Promise<{ info: SessionInfo; digest: string; created: boolean }> {
    const claim = await this.#claim(id);
    try {
      const snap = await this.#pool.decode(bytes, this.#codec());
      checkStateSampling(snap, this.#o.model.config.vocabSize);
      const existing = await this.#o.store.getEntry(id);
      const ifMatch = opts.ifMatch ?? null;
      if (ifMatch !== null) {
        const current = existing ? etagOf(await this.#digestOf(existing.bytes)) : null;
        if (current === null || !matchesEtag(ifMatch, current)) {
          throw new TnlError(
            "precondition_failed",
            current === null
              ? `If-Match: no session ${id} is stored`
              : `If-Match: the stored state of session ${id} is ${current}, not ${ifMatch.trim()}`,
            { param: "If-Match" },
          );
        }
      } else if (existing && (snap.id !== id || snap.generation < existing.generation)) {
        throw new TnlError(
          "state_replayed",
          snap.id !== id
            ? `state: session ${id} exists and this is a state of session ${snap.id}; ` +
              "send If-Match with the stored state's ETag to replace it"
            : `state: generation ${snap.generation} of session ${id} is stale; the stored ` +
              `generation is ${existing.generation} (send If-Match with its ETag to replace it)`,
          { param: "state" },
        );
      }
      snap.id = id;
      if (existing) snap.generation = Math.max(snap.generation, existing.generation + 1);
      const session = Session.fromSnapshot(this.#o.model.config, snap);
      const encoding = this.#encoding;
      const { bytes: out, digest } = await this.#pool.encode(
        { ...session.toSnapshot(), lossy: snap.lossy },
        { ...this.#codec(), encoding },
      );
      this.#digests.set(out, digest);
      await this.#o.store.put(id, out, {
        generation: session.generation,
        expectGeneration: existing ? existing.generation : null,
        adopt: true,
      });
      const lossy = lossyOrigin(encoding, snap.lossy);
      if (isExactEncoding(encoding)) {
        this.#remember(id, { session, generation: session.generation, digest, encoding, lossy });
      } else this.#cache.delete(id);
      this.#track(id, out.length);
      this.bytesWritten += out.length;
      // The claim is this request's own: the imported session is not busy once it answers.
      const info = { ...this.describe(session, out.length, { encoding, lossy }), busy: false };
      return { info, digest, created: !existing };
    } catch (e) {
      this.#cache.delete(id);
      throw e;
    } finally {
      await claim.release();
    }
  }

  /**
   * One page of stored sessions, in id order after `after` (at most `limit`), each described from
   * its stored bytes without decoding the layers. Ids that vanish while listing are skipped.
   */
  async list(opts: { after?: string; limit: number }): Promise<SessionList> {
    const store = this.#o.store;
    if (!store.ids) {
      throw new TnlError("not_implemented", `the ${store.kind} store cannot list its sessions`);
    }
    const ids = await store.ids({ after: opts.after, limit: opts.limit + 1 });
    const hasMore = ids.length > opts.limit;
    const data: SessionInfo[] = [];
    for (const id of ids.slice(0, opts.limit)) {
      const entry = await store.getEntry(id);
      if (!entry) continue;
      let s;
      try {
        s = sessionSummary(entry.bytes);
      } catch {
        continue; // not a state this server wrote: nothing to describe
      }
      data.push({
        id,
        object: "session",
        model: this.#o.modelId,
        position: s.position,
        tokens: s.tokens,
        pending: s.pending,
        generation: entry.generation >= 0 ? entry.generation : s.generation,
        created: Math.floor(s.createdAt / 1000),
        updated: Math.floor(s.updatedAt / 1000),
        busy: this.busy.has(id),
        state_bytes: entry.bytes.length,
        ...stateFields(s),
      });
    }
    return {
      object: "list",
      data,
      first_id: data[0]?.id ?? null,
      last_id: data.at(-1)?.id ?? null,
      has_more: hasMore,
    };
  }

  /** Delete a session (404 when absent, 409 when busy). */
  async remove(id: string): Promise<void> {
    if (!isValidSessionId(id)) throw noSession(id);
    const claim = await this.#claim(id);
    try {
      this.#cache.delete(id);
      const removed = await this.#o.store.delete(id);
      this.#track(id, null);
      if (!removed) throw noSession(id);
    } finally {
      await claim.release();
    }
  }
}

/** The info fields of a stored state's encoding. */
function stateFields(
  s: StoredEncoding,
): Pick<SessionInfo, "state_encoding" | "state_exact" | "state_lossy"> {
  return { state_encoding: s.encoding, state_exact: s.lossy === null, state_lossy: s.lossy };
}

/** `session_not_found` (404) for `id`. */
function noSession(id: string): TnlError {
  return new TnlError("session_not_found", `no session ${id}`, { param: "session" });
}

/**
 * `state_invalid` (400) naming the field when a state's sampling settings are not ones the engine
 * runs (a continuation inherits them, so they would fail every later request on the session).
 */
function checkStateSampling(snap: SessionSnapshot, vocabSize: number): void {
  try {
    validateSamplingParams(snap.sampling, vocabSize);
  } catch (e) {
    if (!(e instanceof InputError)) throw e;
    throw new StateError("state_invalid", `state: sampling.${e.message}`, {
      field: `sampling.${e.field}`,
    });
  }
}
