/**
 * The prefix-state cache: the whole memory of a TransNormerLLM prefix is one fixed-size state, so
 * a prompt that starts with a prefix seen before can start from that prefix's state and prefill
 * only the rest.
 *
 * - States are kept at multiples of the engine's prefill chunk C only. The engine prefills prompts
 *   in chunks that end at multiples of C, so the state at such a boundary is the state a cold
 *   prefill passes through, and a request that starts there runs the same chunks (and the same
 *   decode-path remainder) as a cold one: its continuation is identical token for token, and on the
 *   CPU its states are bit-identical.
 * - Keys: SHA-256 chained over the chunks (`k0 = H(namespace)`, `k(j) = H(k(j-1) ‖ chunk j)`), the
 *   namespace naming the model fingerprint, the backend kind (the CPU and WebGPU round
 *   differently) and C. A state cached under another model, backend or chunk is never found.
 * - Held in an LRU bounded in bytes (a state is 13 MB at the 385M shape, 0.9 MB for the default
 *   model). A state is never mutated: the engine copies it to the backend.
 * - What is captured (a readback of a whole state, so only where it pays): the last boundary at or
 *   before the end of the consumed prompt (the next turn of a conversation, or another request
 *   with the same long prefix, starts there), and a boundary within the earlier turns of a chat
 *   (`shareAt`: conversations that share a system prompt or few-shot turns). A boundary that is
 *   cached, or being captured by another request, is not captured again.
 * - Optionally shared between instances through a session store (Redis, Deno KV): a captured state
 *   is also written there as a signed session state (`px_` + key), and a miss in memory looks
 *   there; the codec checks the model fingerprint (and signature) as for any session state, and
 *   the history in the state must equal the prompt's prefix.
 * @module
 */

import type { ModelState } from "../model/state.ts";
import type { SessionSnapshot } from "../model/snapshot.ts";
import {
  type DecodeOptions,
  decodeSession,
  type EncodeOptions,
  encodeSession,
} from "../state/mod.ts";
import type { SessionStore } from "../state/store.ts";

/** Default byte budget of the cache: 256 MiB. */
export const DEFAULT_PREFIX_CACHE_BYTES = 256 * 1024 * 1024;

/** Most store keys one lookup asks a shared store for (the longest prefixes first). */
const SHARED_LOOKUPS = 16;

/** What makes cached states interchangeable: same model, backend kind and prefill chunk. */
export interface PrefixCacheIdentity {
  /** The model fingerprint (config + weights + quantization). */
  modelFingerprint: string;
  /** The backend kind (`cpu`, `webgpu`). */
  backend: string;
  /** The engine's prefill chunk. */
  chunk: number;
}

/** Options of a `PrefixCache`. */
export interface PrefixCacheOptions extends PrefixCacheIdentity {
  /** Byte budget of the states held in memory (default 256 MiB). */
  maxBytes?: number;
  /** Share states between instances through this store (with the codec options for its states). */
  shared?: { store: SessionStore; codec: EncodeOptions & DecodeOptions };
}

/** Counters of a prefix cache. */
export interface PrefixCacheStats {
  /** Prompts looked up (those long enough to have a boundary). */
  lookups: number;
  /** Lookups that found a cached prefix. */
  hits: number;
  /** Prompt tokens not prefilled thanks to a hit. */
  tokensSkipped: number;
  /** States captured into the cache. */
  captures: number;
  /** States evicted to stay within the byte budget. */
  evictions: number;
  /** States held in memory. */
  entries: number;
  /** Bytes of the states held in memory. */
  bytes: number;
  /** Hits served from the shared store. */
  sharedHits: number;
}

/** A cached start: the state after the first `position` tokens of the prompt. */
export interface PrefixHit {
  /** Tokens the state has consumed (a multiple of the chunk). */
  position: number;
  /** The state (read only: never mutate it). */
  state: ModelState;
}

/** What one request does with the cache: where it starts, and what it captures. */
export interface PrefixPlan {
  /** The longest cached prefix of the prompt, or null. */
  hit: PrefixHit | null;
  /** Positions whose states the request captures (`GenerateRequest.capturePositions`). */
  capture: number[];
  /** Takes a captured state (`GenerateRequest.onPrefixState`). */
  onState(state: ModelState): void;
  /** The request ended: positions it did not capture may be captured by others. Idempotent. */
  done(): void;
}

interface Entry {
  state: ModelState;
  bytes: number;
}

function hex(b: ArrayBuffer): string {
  return Array.from(new Uint8Array(b), (x) => x.toString(16).padStart(2, "0")).join("");
}

function stateSize(s: ModelState): number {
  return s.layers.reduce((a, l) => a + l.byteLength, 0);
}

/** Prefix states of one model on one engine; see the module doc. */
export class PrefixCache {
  /** Identity of the numerics the states belong to. */
  readonly identity: PrefixCacheIdentity;
  /** Byte budget. */
  readonly maxBytes: number;
  readonly #entries = new Map<string, Entry>();
  readonly #inflight = new Set<string>();
  readonly #shared: PrefixCacheOptions["shared"];
  readonly #ns: Uint8Array;
  #root: Promise<ArrayBuffer> | null = null;
  readonly #stats: PrefixCacheStats = {
    lookups: 0,
    hits: 0,
    tokensSkipped: 0,
    captures: 0,
    evictions: 0,
    entries: 0,
    bytes: 0,
    sharedHits: 0,
  };

  /** A cache for one model, backend kind and prefill chunk. */
  constructor(o: PrefixCacheOptions) {
    if (!Number.isSafeInteger(o.chunk) || o.chunk < 1) {
      throw new TypeError(`chunk: expected a positive integer, got ${o.chunk}`);
    }
    const maxBytes = o.maxBytes ?? DEFAULT_PREFIX_CACHE_BYTES;
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) {
      throw new TypeError(`maxBytes: expected an integer ≥ 0, got ${maxBytes}`);
    }
    this.identity = { modelFingerprint: o.modelFingerprint, backend: o.backend, chunk: o.chunk };
    this.maxBytes = maxBytes;
    this.#shared = o.shared;
    this.#ns = new TextEncoder().encode(
      `tnl-prefix-v1\n${o.modelFingerprint}\n${o.backend}\nchunk=${o.chunk}`,
    );
  }

  /** Current counters. */
  stats(): PrefixCacheStats {
    return { ...this.#stats, entries: this.#entries.size };
  }

  /**
   * The keys of the prefixes of `ids` that end at the boundaries C, 2C, … ≤ `upTo` (index j: the
   * prefix of (j + 1)·C tokens).
   */
  async keys(ids: Int32Array, upTo: number): Promise<string[]> {
    const C = this.identity.chunk;
    const out: string[] = [];
    this.#root ??= crypto.subtle.digest("SHA-256", this.#ns as Uint8Array<ArrayBuffer>);
    let prev = new Uint8Array(await this.#root);
    const buf = new Uint8Array(32 + C * 4);
    for (let b = C; b <= upTo && b <= ids.length; b += C) {
      buf.set(prev, 0);
      const chunk = ids.subarray(b - C, b);
      buf.set(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength), 32);
      const h = await crypto.subtle.digest("SHA-256", buf);
      prev = new Uint8Array(h);
      out.push(hex(h));
    }
    return out;
  }

  /**
   * Plan a request on a new session with prompt `ids`: its longest cached prefix (the state after
   * at most `ids.length - 1` tokens: the last prompt token is always fed by the decode step), and
   * the boundaries it captures (see the module doc; `shareAt`: how many leading tokens other
   * requests are likely to share, such as a chat's earlier turns).
   */
  async plan(ids: Int32Array, opts: { shareAt?: number } = {}): Promise<PrefixPlan> {
    const C = this.identity.chunk;
    const consumed = ids.length - 1;
    const none: PrefixPlan = { hit: null, capture: [], onState() {}, done() {} };
    if (consumed < C) return none;
    this.#stats.lookups++;
    const keys = await this.keys(ids, consumed);
    let hit: PrefixHit | null = null;
    for (let j = keys.length - 1; j >= 0 && !hit; j--) {
      const e = this.#entries.get(keys[j]);
      if (!e) continue;
      this.#entries.delete(keys[j]);
      this.#entries.set(keys[j], e);
      hit = { position: (j + 1) * C, state: e.state };
    }
    if (this.#shared && (hit?.position ?? 0) < keys.length * C) {
      const shared = await this.#sharedLookup(ids, keys, hit?.position ?? 0);
      if (shared) hit = shared;
    }
    if (hit) {
      this.#stats.hits++;
      this.#stats.tokensSkipped += hit.position;
    }
    const start = hit?.position ?? 0;
    const wanted = new Set<number>([Math.floor(consumed / C) * C]);
    if (opts.shareAt !== undefined) {
      wanted.add(Math.floor(Math.min(opts.shareAt, consumed) / C) * C);
    }
    const capture: number[] = [];
    const mine = new Map<number, string>();
    for (const b of wanted) {
      const key = keys[b / C - 1];
      if (b <= start || !key || this.#entries.has(key) || this.#inflight.has(key)) continue;
      capture.push(b);
      mine.set(b, key);
      this.#inflight.add(key);
    }
    if (!capture.length) return { ...none, hit };
    const done = () => {
      for (const k of mine.values()) this.#inflight.delete(k);
      mine.clear();
    };
    return {
      hit,
      capture,
      onState: (state) => {
        const key = mine.get(state.position);
        if (key === undefined) return;
        mine.delete(state.position);
        this.#inflight.delete(key);
        this.#put(key, state);
        if (this.#shared) this.#sharedPut(key, ids.subarray(0, state.position + 1), state);
      },
      done,
    };
  }

  /** Keep a state under `key`, evicting the least recently used states beyond the budget. */
  #put(key: string, state: ModelState): void {
    const bytes = stateSize(state);
    if (bytes > this.maxBytes) return;
    const old = this.#entries.get(key);
    if (old) this.#stats.bytes -= old.bytes;
    this.#entries.delete(key);
    this.#entries.set(key, { state, bytes });
    this.#stats.bytes += bytes;
    this.#stats.captures++;
    for (const [k, e] of this.#entries) {
      if (this.#stats.bytes <= this.maxBytes) break;
      this.#entries.delete(k);
      this.#stats.bytes -= e.bytes;
      this.#stats.evictions++;
    }
  }

  /** Drop every state held in memory. */
  clear(): void {
    this.#entries.clear();
    this.#stats.bytes = 0;
  }

  /** The longest prefix above `above` tokens found in the shared store (kept in memory too). */
  async #sharedLookup(ids: Int32Array, keys: string[], above: number): Promise<PrefixHit | null> {
    const C = this.identity.chunk;
    const { store, codec } = this.#shared!;
    const js: number[] = [];
    for (let j = keys.length - 1; j >= 0 && (j + 1) * C > above; j--) {
      if (js.length >= SHARED_LOOKUPS) break;
      js.push(j);
    }
    const found = await Promise.all(js.map((j) => store.getEntry(storeId(keys[j])).catch(() => null) // an unreachable store is a miss
    ));
    for (let i = 0; i < js.length; i++) {
      const entry = found[i];
      if (!entry) continue;
      const j = js[i];
      const b = (j + 1) * C;
      let snap: SessionSnapshot;
      try {
        snap = await decodeSession(entry.bytes, codec);
      } catch {
        continue; // another model, a bad signature, a corrupt entry: a miss
      }
      const t = snap.tokens;
      if (snap.state.position !== b || !t || t.length < b) continue;
      let same = true;
      for (let k = 0; k < b && same; k++) same = t[k] === ids[k];
      if (!same) continue;
      this.#put(keys[j], snap.state);
      this.#stats.sharedHits++;
      return { position: b, state: snap.state };
    }
    return null;
  }

  /** Write a captured state to the shared store, in the background (best effort). */
  #sharedPut(key: string, history: Int32Array, state: ModelState): void {
    const { store, codec } = this.#shared!;
    const now = Date.now();
    const snap: SessionSnapshot = {
      id: storeId(key),
      generation: 0,
      state,
      tokens: history.slice(),
      generated: new Uint8Array(history.length),
      pending: history[history.length - 1],
      sampling: {},
      rng: { seed: 0, counter: 0 },
      text: { pendingBytes: new Uint8Array(0), heldStop: "" },
      createdAt: now,
      updatedAt: now,
    };
    encodeSession(snap, codec)
      .then((bytes) => store.put(snap.id, bytes, { generation: 0 }))
      .catch(() => {}); // a shared copy is best effort: this instance keeps its own
  }
}

/** The store id of a prefix key (a session id: `px_` + 43 base64url characters of the key). */
function storeId(key: string): string {
  const b = new Uint8Array(32);
  for (let i = 0; i < 32; i++) b[i] = parseInt(key.slice(2 * i, 2 * i + 2), 16);
  return "px_" + b.toBase64({ alphabet: "base64url", omitPadding: true });
}
