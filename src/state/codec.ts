/**
 * The session state codec: a `SessionSnapshot` to portable msgpack bytes and back, optionally
 * HMAC-SHA256-signed. The wire format (version 1):
 *
 * ```
 * envelope = { format: "tnl-edge-session", version: 1, alg: "none" | "HS256", sig?: bin(32),
 *              payload: bin }
 * payload  = { format, version, modelFingerprint, tokenizerFingerprint, id, generation,
 *              position, pending, tokens: nil | { dtype: "i32", count, data: bin (i32 LE) },
 *              generated: nil | bin (one 0/1 byte per token), sampling: map,
 *              rng: { seed, counter }, text: { pendingBytes: bin, heldStop: str },
 *              createdAt, updatedAt, layers: [{ dtype: "f32", shape: [heads, dk, dv],
 *              data: bin (f32 LE) }, ...] }
 * ```
 *
 * Only portable msgpack is written and read: maps with string keys, integers, floats, strings,
 * `bin`; no extension types (the payload is packed by msgpackr with `useRecords: false`, and every
 * f32/i32 array goes out as a little-endian `Uint8Array` view, never as msgpackr's typed-array
 * extension). The HMAC covers the payload bytes exactly and is checked (in constant time, by
 * `crypto.subtle.verify`) before the payload is parsed.
 *
 * Signature policy: with a secret, only `HS256` states with a valid signature are read (else 401).
 * Without a secret, unsigned states are read and *signed states are refused* (401): a signed state
 * says its issuer wanted integrity, and a replica that cannot check it (a missing secret is a
 * deployment mistake) should say so rather than silently skip the check.
 *
 * Decoding is strict and bounded: the whole input is capped (`maxBytes`), msgpack is read by our
 * own reader (`./msgpack.ts`), which checks every declared length before allocating, caps depth
 * and value count, and refuses extension types, rather than by msgpackr's unpacker, which would
 * interpret msgpackr's extensions (records, typed arrays, dates) in untrusted input. Unknown fields
 * are refused, and every field is checked against the loaded model (see `decodeSession`).
 *
 * History invariant (from `SessionSnapshot`): the state has consumed every history token but the
 * pending one, so with a history `tokens.length - (pending >= 0 ? 1 : 0) === position` and the last
 * token is `pending`; `pending === -1` only for an empty session (`position === 0`). `tokens: nil`
 * reads as an empty history, so it is accepted for an empty session only (the engine needs the
 * history to resume: penalties, held UTF-8 bytes, and the pending token's place in it).
 *
 * Counters leave room to grow: whatever `decodeSession` accepts, the engine can advance and
 * `encodeSession` can write back. `generation` (+1 per save) and `rng.counter` (+1 per draw; a
 * 2×u32 pair on the GPU, read back into a JS number) are read up to `MAX_COUNTER` = 2^48, so
 * 2^53 − 2^48 more steps stay exact safe integers (centuries of saves or draws); `position` is read
 * up to `MAX_POSITION` (the GPU keeps it in a u32, with room for 2^31 more tokens); times up to
 * `MAX_TIME_MS`, the largest a `Date` holds.
 * @module
 */

import { Packr } from "../deps.ts";
import type { ModelConfig } from "../model/config.ts";
import { stateKeyDim, stateLayerSize } from "../model/config.ts";
import { isValidSessionId, type PlainSampling, type SessionSnapshot } from "../model/snapshot.ts";
import { firstNonFinite } from "../model/state.ts";
import { TnlError } from "../errors.ts";
import { StateError } from "./errors.ts";
import { isMsgMap, type MsgMap, type MsgValue, readMsgpack } from "./msgpack.ts";

/** The `format` field of the envelope and the payload. */
export const STATE_FORMAT = "tnl-edge-session";
/** The wire format version this module writes and reads. */
export const STATE_VERSION = 1;
/** The media type of an encoded state. */
export const STATE_MEDIA_TYPE = "application/vnd.msgpack";

/** Longest `text.pendingBytes` accepted (incomplete UTF-8 held back between requests). */
export const MAX_PENDING_TEXT_BYTES = 1024;
/** Longest `text.heldStop` accepted, in UTF-8 bytes. */
export const MAX_HELD_STOP_BYTES = 65536;
/** History allowance in the default size limit: 16 MiB (about 3.3M tokens at 5 bytes each). */
export const HISTORY_ALLOWANCE_BYTES: number = 16 * 1024 * 1024;
/** Allowance for the fixed fields, fingerprints and sampling settings in the default size limit. */
export const FIELDS_ALLOWANCE_BYTES: number = 1024 * 1024;
/** Largest `generation` and `rng.counter` read: 2^48, leaving 2^53 − 2^48 exact increments. */
export const MAX_COUNTER: number = 2 ** 48;
/** Largest `position` read: 2^31 − 1 (the GPU holds positions in a u32; the rest is room to grow). */
export const MAX_POSITION: number = 2 ** 31 - 1;
/** Largest `createdAt` / `updatedAt` read, in ms: the largest time a `Date` holds. */
export const MAX_TIME_MS: number = 8.64e15;

/** A signing secret: a string (its UTF-8 bytes) or raw key bytes; never empty. */
export type StateSecret = string | Uint8Array;

/** Options of `encodeSession`. */
export interface EncodeOptions {
  /** The model's config: gives each layer's shape [heads, dk, dv] (layers are flat arrays). */
  config: ModelConfig;
  /** Fingerprint of the loaded model (config and weights). */
  modelFingerprint: string;
  /** Fingerprint of the loaded tokenizer. */
  tokenizerFingerprint: string;
  /** When given, the state is signed with HMAC-SHA256 (`alg: "HS256"`). */
  secret?: StateSecret;
}

/** Options of `decodeSession`. */
export interface DecodeOptions {
  /** The loaded model's config: layer count and shapes, vocabulary. */
  config: ModelConfig;
  /** The loaded model's fingerprint; the state's must be equal. */
  modelFingerprint: string;
  /** The loaded tokenizer's fingerprint; the state's must be equal. */
  tokenizerFingerprint: string;
  /** When given, only states signed with it are accepted; without it, signed states are refused. */
  secret?: StateSecret;
  /** Largest input accepted, in bytes (default `defaultMaxStateBytes(config)`). */
  maxBytes?: number;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Bytes of recurrent state per session: Σ over layers of heads·dk·dv·4 (the f32 layer blobs). */
export function stateByteSize(config: ModelConfig): number {
  let n = 0;
  for (let l = 0; l < config.numLayers; l++) n += stateLayerSize(config, l) * 4;
  return n;
}

/**
 * The default input limit of `decodeSession`: the model's state plus 16 MiB of token history plus
 * 1 MiB for the other fields.
 */
export function defaultMaxStateBytes(config: ModelConfig): number {
  return stateByteSize(config) + HISTORY_ALLOWANCE_BYTES + FIELDS_ALLOWANCE_BYTES;
}

/** Hex SHA-256 of encoded state bytes (an ETag for the state). */
export async function sessionDigest(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  let s = "";
  for (const b of d) s += b.toString(16).padStart(2, "0");
  return s;
}

// --- signing ---------------------------------------------------------------------------------------

const keyCache = new Map<string, Promise<CryptoKey>>();
const KEY_CACHE_MAX = 16;

function hmacKey(secret: StateSecret): Promise<CryptoKey> {
  const raw = typeof secret === "string" ? new TextEncoder().encode(secret) : secret;
  if (!(raw instanceof Uint8Array) || raw.length === 0) {
    throw new TnlError("invalid_input", "state secret: must be a non-empty string or byte array");
  }
  const cacheKey = typeof secret === "string" ? "s:" + secret : null;
  if (cacheKey !== null) {
    const hit = keyCache.get(cacheKey);
    if (hit) return hit;
  }
  const p = crypto.subtle.importKey(
    "raw",
    raw.slice(),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign", "verify"],
  );
  if (cacheKey !== null) {
    if (keyCache.size >= KEY_CACHE_MAX) keyCache.delete(keyCache.keys().next().value!);
    keyCache.set(cacheKey, p);
  }
  return p;
}

// --- encoding --------------------------------------------------------------------------------------

const packr = new Packr({ useRecords: false, variableMapSize: true, moreTypes: false });

/** Little-endian bytes of a typed array: a view on little-endian hosts, a swapped copy otherwise. */
function leBytes(a: Float32Array | Int32Array): Uint8Array {
  const view = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  if (LITTLE_ENDIAN) return view;
  const out = new Uint8Array(view.length);
  for (let i = 0; i < view.length; i += 4) {
    out[i] = view[i + 3];
    out[i + 1] = view[i + 2];
    out[i + 2] = view[i + 1];
    out[i + 3] = view[i];
  }
  return out;
}

function encodeFail(detail: string): never {
  throw new TnlError("internal", `encodeSession: ${detail}`);
}

/** Plain (msgpack-portable) copy of the sampling settings: drops `undefined`, maps Map to a map. */
function plainValue(v: unknown, path: string, depth: number): unknown {
  if (depth > 4) encodeFail(`${path}: nested too deeply`);
  if (v === null || typeof v === "boolean" || typeof v === "string") return v;
  if (typeof v === "number") {
    if (!Number.isFinite(v)) encodeFail(`${path}: ${v} is not a finite number`);
    return v;
  }
  if (Array.isArray(v)) return v.map((x, i) => plainValue(x, `${path}[${i}]`, depth + 1));
  if (v instanceof Map) {
    const o: Record<string, unknown> = {};
    for (const [k, x] of v) {
      if (x !== undefined) o[String(k)] = plainValue(x, `${path}.${String(k)}`, depth + 1);
    }
    return o;
  }
  if (typeof v === "object" && !ArrayBuffer.isView(v)) {
    const proto = Object.getPrototypeOf(v);
    if (proto !== Object.prototype && proto !== null) encodeFail(`${path}: not a plain object`);
    const o: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
      if (x !== undefined) o[k] = plainValue(x, `${path}.${k}`, depth + 1);
    }
    return o;
  }
  return encodeFail(`${path}: cannot be stored (${typeof v})`);
}

/** The history checks `decodeSession` makes, done at encode time (a failure is a caller bug). */
function checkSnapshotHistory(s: SessionSnapshot, config: ModelConfig): void {
  const { position } = s.state;
  if (s.pending >= config.vocabSize) encodeFail(`pending ${s.pending} is outside the vocabulary`);
  if (s.pending === -1 && position !== 0) encodeFail(`position ${position} with no pending token`);
  if (s.tokens !== null) {
    const consumed = s.tokens.length - (s.pending >= 0 ? 1 : 0);
    if (consumed !== position) {
      encodeFail(
        `position ${position} but ${s.tokens.length} history tokens (${consumed} consumed)`,
      );
    }
    if (s.pending >= 0 && s.tokens[s.tokens.length - 1] !== s.pending) {
      encodeFail(`pending ${s.pending} is not the last history token`);
    }
    for (let i = 0; i < s.tokens.length; i++) {
      if (s.tokens[i] < 0 || s.tokens[i] >= config.vocabSize) {
        encodeFail(`tokens[${i}] out of range`);
      }
    }
  }
  if (s.generated !== null) {
    if (s.tokens === null || s.generated.length !== s.tokens.length) {
      encodeFail("generated: needs one flag per history token");
    }
    if (s.generated.some((g) => g > 1)) encodeFail("generated: flags must be 0 or 1");
  }
  if (s.text.pendingBytes.length > MAX_PENDING_TEXT_BYTES) encodeFail("text.pendingBytes too long");
  if (typeof s.text.heldStop !== "string") encodeFail("text.heldStop: not a string");
  if (new TextEncoder().encode(s.text.heldStop).length > MAX_HELD_STOP_BYTES) {
    encodeFail("text.heldStop too long");
  }
  if (!Number.isFinite(s.createdAt) || s.createdAt < 0) encodeFail(`createdAt ${s.createdAt}`);
  if (!Number.isFinite(s.updatedAt) || s.updatedAt < 0) encodeFail(`updatedAt ${s.updatedAt}`);
}

/** Bytes of a msgpack `bin` header for `n` bytes. */
function binHeader(n: number): Uint8Array {
  if (n < 0x100) return new Uint8Array([0xc4, n]);
  if (n < 0x10000) return new Uint8Array([0xc5, n >> 8, n & 0xff]);
  return new Uint8Array([0xc6, n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]);
}

/** msgpack fixstr bytes of a short ASCII string. */
function fixstr(s: string): number[] {
  return [0xa0 | s.length, ...Array.from(s, (c) => c.charCodeAt(0))];
}

/**
 * Serialize a session for the model `opts.config` describes (it gives each flat layer its shape).
 * A snapshot that `decodeSession` would refuse (bad id, non-integer counters, wrong array types or
 * sizes, non-finite state values, history inconsistent with `position` and `pending`) throws a
 * `TnlError` with code `internal`: it is a bug of the caller, not of a client. Signs the payload
 * with HMAC-SHA256 when `opts.secret` is given. Returns a fresh byte array.
 */
export async function encodeSession(s: SessionSnapshot, opts: EncodeOptions): Promise<Uint8Array> {
  if (!isValidSessionId(s.id)) encodeFail(`invalid session id ${JSON.stringify(s.id)}`);
  for (
    const [k, v] of [["modelFingerprint", opts.modelFingerprint], [
      "tokenizerFingerprint",
      opts.tokenizerFingerprint,
    ]] as const
  ) {
    if (typeof v !== "string" || v.length === 0) encodeFail(`${k} must be a non-empty string`);
  }
  const ints = {
    generation: s.generation,
    position: s.state.position,
    "rng.seed": s.rng.seed,
    "rng.counter": s.rng.counter,
  };
  for (const [k, v] of Object.entries(ints)) {
    if (!Number.isSafeInteger(v) || v < 0) {
      encodeFail(`${k} must be a non-negative integer, got ${v}`);
    }
  }
  if (!Number.isSafeInteger(s.pending) || s.pending < -1) encodeFail(`pending ${s.pending}`);
  if (s.tokens !== null && !(s.tokens instanceof Int32Array)) {
    encodeFail("tokens: not an Int32Array");
  }
  if (s.generated !== null && !(s.generated instanceof Uint8Array)) {
    encodeFail("generated: not a Uint8Array");
  }
  if (!(s.text.pendingBytes instanceof Uint8Array)) {
    encodeFail("text.pendingBytes: not a Uint8Array");
  }
  const { config } = opts;
  checkSnapshotHistory(s, config);
  if (s.state.layers.length !== config.numLayers) {
    encodeFail(`${s.state.layers.length} layers for a model of ${config.numLayers}`);
  }
  const layers = s.state.layers.map((l, i) => {
    if (!(l instanceof Float32Array)) encodeFail(`layer ${i}: not a Float32Array`);
    if (l.length !== stateLayerSize(config, i)) {
      encodeFail(
        `layer ${i}: ${l.length} values, the model's state has ${stateLayerSize(config, i)}`,
      );
    }
    const bad = firstNonFinite(l);
    if (bad >= 0) encodeFail(`layer ${i}: non-finite value ${l[bad]} at index ${bad}`);
    const shape = [config.numHeads, stateKeyDim(config, i), config.headDim];
    return { dtype: "f32", shape, data: leBytes(l) };
  });

  const payload = {
    format: STATE_FORMAT,
    version: STATE_VERSION,
    modelFingerprint: opts.modelFingerprint,
    tokenizerFingerprint: opts.tokenizerFingerprint,
    id: s.id,
    generation: s.generation,
    position: s.state.position,
    pending: s.pending,
    tokens: s.tokens === null
      ? null
      : { dtype: "i32", count: s.tokens.length, data: leBytes(s.tokens) },
    generated: s.generated === null ? null : s.generated,
    sampling: plainValue(s.sampling ?? {}, "sampling", 0),
    rng: { seed: s.rng.seed, counter: s.rng.counter },
    text: { pendingBytes: s.text.pendingBytes, heldStop: s.text.heldStop },
    createdAt: s.createdAt,
    updatedAt: s.updatedAt,
    layers,
  };
  const body = packr.pack(payload) as Uint8Array;

  const alg = opts.secret === undefined ? "none" : "HS256";
  let sig: Uint8Array | null = null;
  if (opts.secret !== undefined) {
    const key = await hmacKey(opts.secret);
    sig = new Uint8Array(
      await crypto.subtle.sign("HMAC", key, body as Uint8Array<ArrayBuffer>),
    );
  }
  // The envelope is small and fixed: write it directly, so the payload is copied once.
  const head: number[] = [
    sig ? 0x85 : 0x84,
    ...fixstr("format"),
    ...fixstr(STATE_FORMAT),
    ...fixstr("version"),
    STATE_VERSION,
    ...fixstr("alg"),
    ...fixstr(alg),
  ];
  if (sig) head.push(...fixstr("sig"), 0xc4, sig.length, ...sig);
  head.push(...fixstr("payload"), ...binHeader(body.length));
  const out = new Uint8Array(head.length + body.length);
  out.set(head, 0);
  out.set(body, head.length);
  return out;
}

// --- decoding --------------------------------------------------------------------------------------

function invalid(detail: string): never {
  // Details start with the field at fault ("rng.counter: ..."), which the error then names.
  const field = /^([A-Za-z][A-Za-z0-9_.[\]]*): /.exec(detail)?.[1];
  throw new StateError("state_invalid", `state: ${detail}`, { field });
}

function mismatch(detail: string): never {
  throw new StateError("state_mismatch", `state: ${detail}`);
}

function signatureError(detail: string): never {
  throw new StateError("state_signature", `state: ${detail}`);
}

function describe(v: MsgValue | undefined): string {
  if (v === undefined) return "missing";
  if (v === null) return "nil";
  if (v instanceof Uint8Array) return `a bin of ${v.length} bytes`;
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (typeof v === "object") return "a map";
  if (typeof v === "string") {
    return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + "…" : v)}`;
  }
  return `${typeof v} ${String(v)}`;
}

function checkKeys(
  m: MsgMap,
  field: string,
  required: readonly string[],
  optional: readonly string[] = [],
): void {
  for (const k of required) if (!Object.hasOwn(m, k)) invalid(`${field}: missing field "${k}"`);
  for (const k of Object.keys(m)) {
    if (!required.includes(k) && !optional.includes(k)) {
      invalid(`${field}: unknown field ${JSON.stringify(k)}`);
    }
  }
}

function getMap(v: MsgValue | undefined, field: string): MsgMap {
  if (!isMsgMap(v)) invalid(`${field}: expected a map, got ${describe(v)}`);
  return v;
}

function getString(v: MsgValue | undefined, field: string): string {
  if (typeof v !== "string") invalid(`${field}: expected a string, got ${describe(v)}`);
  return v;
}

function getBin(v: MsgValue | undefined, field: string): Uint8Array {
  if (!(v instanceof Uint8Array)) invalid(`${field}: expected a bin, got ${describe(v)}`);
  return v;
}

function getInt(
  v: MsgValue | undefined,
  field: string,
  min: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v)) {
    invalid(`${field}: expected an integer, got ${describe(v)}`);
  }
  if (v < min || v > max) invalid(`${field}: ${v} is outside [${min}, ${max}]`);
  return v;
}

function getTime(v: MsgValue | undefined, field: string): number {
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0 || v > MAX_TIME_MS) {
    invalid(`${field}: expected a time in ms in [0, ${MAX_TIME_MS}], got ${describe(v)}`);
  }
  return v;
}

/** A plain (JSON-like) copy of a decoded sampling value: finite numbers, no bins. */
function plainSampling(v: MsgValue, path: string): unknown {
  if (v === null || typeof v === "boolean" || typeof v === "string") return v;
  if (typeof v === "number") {
    if (!Number.isFinite(v)) invalid(`${path}: ${v} is not a finite number`);
    return v;
  }
  if (v instanceof Uint8Array) invalid(`${path}: bin values are not sampling settings`);
  if (Array.isArray(v)) return v.map((x, i) => plainSampling(x, `${path}[${i}]`));
  const o: Record<string, unknown> = {};
  for (const k of Object.keys(v)) {
    // Plain objects for the engine: a "__proto__" key would be a prototype on a normal object.
    if (k === "__proto__") invalid(`${path}: key "__proto__" is not allowed`);
    o[k] = plainSampling(v[k], `${path}.${k}`);
  }
  return o;
}

/** Copy little-endian bytes into a fresh, aligned typed array of `n` 4-byte elements. */
function copyLe<T extends Float32Array<ArrayBuffer> | Int32Array<ArrayBuffer>>(
  src: Uint8Array,
  out: T,
): T {
  const dst = new Uint8Array(out.buffer);
  dst.set(src);
  if (!LITTLE_ENDIAN) {
    for (let i = 0; i < dst.length; i += 4) {
      const a = dst[i];
      const b = dst[i + 1];
      dst[i] = dst[i + 3];
      dst[i + 1] = dst[i + 2];
      dst[i + 2] = b;
      dst[i + 3] = a;
    }
  }
  return out;
}

const PAYLOAD_KEYS = [
  "format",
  "version",
  "modelFingerprint",
  "tokenizerFingerprint",
  "id",
  "generation",
  "position",
  "pending",
  "tokens",
  "generated",
  "sampling",
  "rng",
  "text",
  "createdAt",
  "updatedAt",
  "layers",
] as const;

/**
 * Read and check a state against the loaded model. Refuses, with a `StateError` naming what is
 * wrong:
 * - 400 `state_invalid`: over `maxBytes`, not msgpack, truncated, extension types, unknown or
 *   missing fields, wrong types, blob lengths that differ from the declared shapes, non-finite
 *   layer values, token ids outside the vocabulary, `position`/`pending`/`tokens` inconsistent;
 * - 401 `state_signature`: with a secret, an unsigned state or a bad signature; without one, a
 *   signed state;
 * - 422 `state_mismatch`: another model or tokenizer fingerprint, layer count or layer shape.
 *
 * Returned arrays (layers, tokens, generated, pendingBytes) are fresh copies (layers 4-byte
 * aligned), sharing nothing with `bytes`.
 */
export async function decodeSession(
  bytes: Uint8Array,
  opts: DecodeOptions,
): Promise<SessionSnapshot> {
  const { config } = opts;
  if (!(bytes instanceof Uint8Array)) invalid("expected bytes");
  const maxBytes = opts.maxBytes ?? defaultMaxStateBytes(config);
  if (bytes.length > maxBytes) invalid(`${bytes.length} bytes exceeds the limit of ${maxBytes}`);
  if (bytes.length === 0) invalid("empty");

  // Envelope: one flat map; the payload stays a view until the signature is checked.
  const env = readMsgpack(
    bytes,
    { maxDepth: 1, maxNodes: 16, maxStringBytes: 64 },
    "state envelope",
  );
  if (!isMsgMap(env)) invalid(`envelope: expected a map, got ${describe(env)}`);
  if (env.format !== STATE_FORMAT) {
    invalid(
      `envelope: format is ${
        describe(env.format)
      }, not "${STATE_FORMAT}" (not a TNL Edge session state)`,
    );
  }
  if (env.version !== STATE_VERSION) {
    invalid(
      `envelope: unsupported version ${
        describe(env.version)
      } (this server reads version ${STATE_VERSION})`,
    );
  }
  checkKeys(env, "envelope", ["format", "version", "alg", "payload"], ["sig"]);
  const alg = env.alg;
  if (alg !== "none" && alg !== "HS256") {
    invalid(`envelope: alg ${describe(alg)}, expected "none" or "HS256"`);
  }
  const payloadBytes = getBin(env.payload, "envelope.payload");

  if (alg === "none") {
    if (env.sig !== undefined) invalid(`envelope: alg "none" with a signature`);
    if (opts.secret !== undefined) {
      signatureError("not signed; this server only accepts signed states");
    }
  } else {
    if (opts.secret === undefined) {
      signatureError("signed (HS256) but this server has no state secret configured to verify it");
    }
    const sig = env.sig;
    if (!(sig instanceof Uint8Array)) {
      signatureError(`signature is ${describe(sig)}, expected a bin`);
    }
    if (sig.length !== 32) signatureError(`signature is ${sig.length} bytes, expected 32`);
    const key = await hmacKey(opts.secret);
    const ok = await crypto.subtle.verify(
      "HMAC",
      key,
      sig.slice(),
      payloadBytes as Uint8Array<ArrayBuffer>,
    );
    if (!ok) {
      signatureError("signature does not match (tampered with, or signed with another secret)");
    }
  }

  const p = readMsgpack(
    payloadBytes,
    { maxDepth: 6, maxNodes: 1 << 18, maxStringBytes: MAX_HELD_STOP_BYTES },
    "state payload",
  );
  return checkPayload(p, opts);
}

function checkPayload(pv: MsgValue, opts: DecodeOptions): SessionSnapshot {
  const { config } = opts;
  const p = getMap(pv, "payload");
  if (p.format !== STATE_FORMAT) invalid(`payload: format is ${describe(p.format)}`);
  if (p.version !== STATE_VERSION) invalid(`payload: version is ${describe(p.version)}`);
  checkKeys(p, "payload", PAYLOAD_KEYS);

  const modelFp = getString(p.modelFingerprint, "modelFingerprint");
  if (modelFp !== opts.modelFingerprint) {
    mismatch(
      `model fingerprint ${short(modelFp)} is not the loaded model's ${
        short(opts.modelFingerprint)
      }`,
    );
  }
  const tokFp = getString(p.tokenizerFingerprint, "tokenizerFingerprint");
  if (tokFp !== opts.tokenizerFingerprint) {
    mismatch(
      `tokenizer fingerprint ${short(tokFp)} is not the loaded tokenizer's ${
        short(opts.tokenizerFingerprint)
      }`,
    );
  }

  const id = p.id;
  if (!isValidSessionId(id)) {
    invalid(`id: ${describe(id)} is not a session id (1-128 of [A-Za-z0-9_-])`);
  }
  const generation = getInt(p.generation, "generation", 0, MAX_COUNTER);
  const position = getInt(p.position, "position", 0, MAX_POSITION);
  const pending = getInt(p.pending, "pending", -1, config.vocabSize - 1);

  // Token history.
  let tokens: Int32Array<ArrayBuffer> | null = null;
  if (p.tokens !== null) {
    const t = getMap(p.tokens, "tokens");
    checkKeys(t, "tokens", ["dtype", "count", "data"]);
    if (t.dtype !== "i32") invalid(`tokens: dtype ${describe(t.dtype)}, expected "i32"`);
    const data = getBin(t.data, "tokens.data");
    const count = getInt(t.count, "tokens.count", 0);
    if (data.length !== count * 4) {
      invalid(
        `tokens: ${data.length} bytes of data for ${count} i32 tokens (expected ${count * 4})`,
      );
    }
    tokens = copyLe(data, new Int32Array(count));
    for (let i = 0; i < count; i++) {
      const v = tokens[i];
      if (v < 0 || v >= config.vocabSize) {
        invalid(`tokens[${i}]: id ${v} is outside the vocabulary [0, ${config.vocabSize})`);
      }
    }
  }
  let generated: Uint8Array | null = null;
  if (p.generated !== null) {
    const g = getBin(p.generated, "generated");
    if (tokens === null) invalid("generated: present without tokens");
    if (g.length !== tokens.length) {
      invalid(`generated: ${g.length} flags for ${tokens.length} tokens`);
    }
    for (let i = 0; i < g.length; i++) {
      if (g[i] > 1) invalid(`generated[${i}]: ${g[i]}, expected 0 or 1`);
    }
    generated = g.slice();
  }

  // The pending-token invariant (see SessionSnapshot): the state has consumed every history token
  // but the pending one, and only an empty session has no pending token.
  if (pending === -1 && position !== 0) {
    invalid(
      `position ${position} with no pending token (-1): only an empty session (position 0) has none`,
    );
  }
  if (tokens === null && (position !== 0 || pending !== -1)) {
    invalid(
      `tokens: nil (no history) with position ${position} and pending ${pending}: ` +
        "only an empty session (position 0, pending -1) may leave out its history",
    );
  }
  if (tokens !== null) {
    const consumed = tokens.length - (pending >= 0 ? 1 : 0);
    if (consumed !== position) {
      invalid(
        `position ${position} does not match the history: ${tokens.length} tokens` +
          (pending >= 0 ? " of which the last is pending" : " and no pending token") +
          ` means ${consumed} consumed`,
      );
    }
    if (pending >= 0 && tokens[tokens.length - 1] !== pending) {
      invalid(
        `pending token ${pending} is not the last history token ${tokens[tokens.length - 1]}`,
      );
    }
  }

  const samplingMap = getMap(p.sampling, "sampling");
  const sampling = plainSampling(samplingMap, "sampling") as PlainSampling;

  const rngMap = getMap(p.rng, "rng");
  checkKeys(rngMap, "rng", ["seed", "counter"]);
  const rng = {
    seed: getInt(rngMap.seed, "rng.seed", 0),
    counter: getInt(rngMap.counter, "rng.counter", 0, MAX_COUNTER),
  };

  const textMap = getMap(p.text, "text");
  checkKeys(textMap, "text", ["pendingBytes", "heldStop"]);
  const pendingBytes = getBin(textMap.pendingBytes, "text.pendingBytes");
  if (pendingBytes.length > MAX_PENDING_TEXT_BYTES) {
    invalid(`text.pendingBytes: ${pendingBytes.length} bytes, at most ${MAX_PENDING_TEXT_BYTES}`);
  }
  const heldStop = getString(textMap.heldStop, "text.heldStop");

  const createdAt = getTime(p.createdAt, "createdAt");
  const updatedAt = getTime(p.updatedAt, "updatedAt");

  // Layers: count and shapes against the config, then blob lengths, then values.
  const lv = p.layers;
  if (!Array.isArray(lv)) invalid(`layers: expected an array, got ${describe(lv)}`);
  if (lv.length !== config.numLayers) {
    mismatch(`${lv.length} layers, the loaded model has ${config.numLayers}`);
  }
  const layers: Float32Array<ArrayBuffer>[] = [];
  for (let l = 0; l < lv.length; l++) {
    const m = getMap(lv[l], `state layer ${l}`);
    checkKeys(m, `state layer ${l}`, ["dtype", "shape", "data"]);
    if (m.dtype !== "f32") invalid(`state layer ${l}: dtype ${describe(m.dtype)}, expected "f32"`);
    const shape = m.shape;
    if (
      !Array.isArray(shape) || shape.length !== 3 ||
      !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)
    ) {
      invalid(`state layer ${l}: shape ${describe(shape)}, expected [heads, dk, dv] of integers`);
    }
    const expected = [config.numHeads, stateKeyDim(config, l), config.headDim];
    if (shape.some((d, i) => d !== expected[i])) {
      mismatch(`state layer ${l}: shape [${shape.join(",")}], expected [${expected.join(",")}]`);
    }
    const data = getBin(m.data, `state layer ${l}.data`);
    const n = stateLayerSize(config, l);
    if (data.length !== n * 4) {
      invalid(
        `state layer ${l}: ${data.length} bytes of data for shape [${
          expected.join(",")
        }] (expected ${n * 4})`,
      );
    }
    const f = copyLe(data, new Float32Array(n));
    const bits = new Uint32Array(f.buffer);
    for (let i = 0; i < n; i++) {
      if ((bits[i] & 0x7f800000) === 0x7f800000) {
        const dk = expected[1], dv = expected[2];
        const h = Math.floor(i / (dk * dv)), r = Math.floor((i % (dk * dv)) / dv), c = i % dv;
        invalid(`state layer ${l}: non-finite value ${f[i]} at [${h},${r},${c}]`);
      }
    }
    layers.push(f);
  }

  return {
    id,
    generation,
    state: { position, layers },
    tokens,
    generated,
    pending,
    sampling,
    rng,
    text: { pendingBytes: pendingBytes.slice(), heldStop },
    createdAt,
    updatedAt,
  };
}

function short(fp: string): string {
  return JSON.stringify(fp.length > 16 ? fp.slice(0, 16) + "…" : fp);
}

/** What `sessionSummary` reads from a state without decoding its layers. */
export interface SessionSummary {
  /** Session id. */
  id: string;
  /** Saved generation. */
  generation: number;
  /** Tokens consumed by the state. */
  position: number;
  /** Tokens in the history (0 without one). */
  tokens: number;
  /** Whether a token waits to be fed. */
  pending: boolean;
  /** Creation time (ms since the epoch). */
  createdAt: number;
  /** Last update (ms since the epoch). */
  updatedAt: number;
}

/**
 * The counters and times of an encoded state, read without checking its signature or decoding its
 * layers (the blobs stay views): for listing a store's own entries, which this server wrote. Throws
 * `StateError` (`state_invalid`) when the bytes are not a state.
 */
export function sessionSummary(bytes: Uint8Array): SessionSummary {
  const env = readMsgpack(
    bytes,
    { maxDepth: 1, maxNodes: 16, maxStringBytes: 64 },
    "state envelope",
  );
  if (!isMsgMap(env) || env.format !== STATE_FORMAT) invalid("envelope: not a TNL Edge state");
  const payload = getBin(env.payload, "envelope.payload");
  const p = getMap(
    readMsgpack(
      payload,
      { maxDepth: 6, maxNodes: 1 << 18, maxStringBytes: MAX_HELD_STOP_BYTES },
      "state payload",
    ),
    "payload",
  );
  const id = p.id;
  if (!isValidSessionId(id)) invalid(`id: ${describe(id)} is not a session id`);
  const tokens = p.tokens === null
    ? 0
    : getInt(getMap(p.tokens, "tokens").count, "tokens.count", 0);
  return {
    id,
    generation: getInt(p.generation, "generation", 0),
    position: getInt(p.position, "position", 0),
    tokens,
    pending: getInt(p.pending, "pending", -1) >= 0,
    createdAt: getTime(p.createdAt, "createdAt"),
    updatedAt: getTime(p.updatedAt, "updatedAt"),
  };
}
