/**
 * Shared helpers of the state tests: a tiny model config, snapshots with deterministic contents, an
 * independent msgpack reader (written from the spec, sharing nothing with `src/state/msgpack.ts`),
 * an envelope builder for crafted payloads, and the snapshot invariants.
 * @module
 */

import assert from "node:assert/strict";
import { Packr } from "msgpackr/pack";
import {
  type ModelConfig,
  parseConfig,
  stateKeyDim,
  stateLayerSize,
} from "../../src/model/config.ts";
import { isValidSessionId, type SessionSnapshot } from "../../src/model/snapshot.ts";
import { createState } from "../../src/model/state.ts";
import { TnlError } from "../../src/errors.ts";
import { MAX_COUNTER, MAX_POSITION, STATE_VERSION } from "../../src/state/codec.ts";
import { rng as rand } from "../support/random.ts";

/** A 3-layer model with 2 heads of width 4, LRPE in layer 0: shapes [2,8,4], [2,4,4], [2,4,4]. */
export function tinyConfig(overrides: Record<string, unknown> = {}): ModelConfig {
  return parseConfig({
    vocab_size: 97,
    decoder_embed_dim: 8,
    hidden_dim: 8,
    decoder_layers: 3,
    decoder_attention_heads: 2,
    glu_dim: 16,
    linear_use_lrpe_list: [1, 0, 0],
    ...overrides,
  }, "(tiny)");
}

/** A consistent snapshot with `n` history tokens (the last pending) and random state values. */
export function makeSnapshot(config: ModelConfig, n = 5, seed = 1, id = "sess_1"): SessionSnapshot {
  const r = rand(seed);
  const state = createState(config);
  for (const l of state.layers) for (let i = 0; i < l.length; i++) l[i] = (r() - 0.5) * 8;
  const tokens = Int32Array.from({ length: n }, () => Math.floor(r() * config.vocabSize));
  state.position = Math.max(0, n - 1);
  return {
    id,
    generation: 7,
    state,
    tokens,
    generated: Uint8Array.from({ length: n }, (_, i) => (i >= n / 2 ? 1 : 0)),
    pending: n > 0 ? tokens[n - 1] : -1,
    sampling: { temperature: 0.7, topK: 40, topP: 0.9, logitBias: { "3": -2.5 } },
    rng: { seed: 123456789012, counter: 77 },
    text: { pendingBytes: new Uint8Array([0xe2, 0x80]), heldStop: "\nROM" },
    createdAt: 1_700_000_000_000,
    updatedAt: 1_700_000_123_456,
  };
}

/** Fingerprints used by the tests. */
export const FP = { modelFingerprint: "model-fp-1", tokenizerFingerprint: "tok-fp-1" };

/** An ext value seen by `readPortable` (it records them so tests can assert there are none). */
export interface ExtSeen {
  type: number;
  at: number;
}

/**
 * An independent msgpack reader (spec, no limits): maps become `Map`s with any keys, bins become
 * `Uint8Array` copies; extension types are collected in `exts` instead of decoded.
 */
export function readPortable(bytes: Uint8Array): { value: unknown; exts: ExtSeen[] } {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const exts: ExtSeen[] = [];
  let p = 0;
  const take = (n: number): Uint8Array => {
    if (p + n > bytes.length) throw new Error("truncated");
    const out = bytes.slice(p, p + n);
    p += n;
    return out;
  };
  const be = (n: number): number => {
    let v = 0;
    for (const b of take(n)) v = v * 256 + b;
    return v;
  };
  const text = (n: number) => new TextDecoder().decode(take(n));
  const arr = (n: number): unknown[] => Array.from({ length: n }, () => one());
  const map = (n: number): Map<unknown, unknown> => {
    const m = new Map();
    for (let i = 0; i < n; i++) {
      const k = one();
      m.set(k, one());
    }
    return m;
  };
  const ext = (n: number): unknown => {
    const at = p - 1;
    const type = dv.getInt8(p);
    p += 1;
    exts.push({ type, at });
    return take(n);
  };
  function one(): unknown {
    const t = take(1)[0];
    if (t < 0x80) return t;
    if (t < 0x90) return map(t - 0x80);
    if (t < 0xa0) return arr(t - 0x90);
    if (t < 0xc0) return text(t - 0xa0);
    if (t >= 0xe0) return t - 256;
    switch (t) {
      case 0xc0:
        return null;
      case 0xc2:
        return false;
      case 0xc3:
        return true;
      case 0xc4:
        return take(be(1));
      case 0xc5:
        return take(be(2));
      case 0xc6:
        return take(be(4));
      case 0xc7:
        return ext(be(1));
      case 0xc8:
        return ext(be(2));
      case 0xc9:
        return ext(be(4));
      case 0xca: {
        const v = dv.getFloat32(p);
        p += 4;
        return v;
      }
      case 0xcb: {
        const v = dv.getFloat64(p);
        p += 8;
        return v;
      }
      case 0xcc:
        return be(1);
      case 0xcd:
        return be(2);
      case 0xce:
        return be(4);
      case 0xcf:
        return be(8);
      case 0xd0:
        return (be(1) << 24) >> 24;
      case 0xd1:
        return (be(2) << 16) >> 16;
      case 0xd2:
        return be(4) | 0;
      case 0xd3: {
        const v = dv.getBigInt64(p);
        p += 8;
        return Number(v);
      }
      case 0xd4:
        return ext(1);
      case 0xd5:
        return ext(2);
      case 0xd6:
        return ext(4);
      case 0xd7:
        return ext(8);
      case 0xd8:
        return ext(16);
      case 0xd9:
        return text(be(1));
      case 0xda:
        return text(be(2));
      case 0xdb:
        return text(be(4));
      case 0xdc:
        return arr(be(2));
      case 0xdd:
        return arr(be(4));
      case 0xde:
        return map(be(2));
      case 0xdf:
        return map(be(4));
      default:
        throw new Error(`bad type byte 0x${t.toString(16)}`);
    }
  }
  const value = one();
  if (p !== bytes.length) throw new Error(`${bytes.length - p} trailing bytes`);
  return { value, exts };
}

const packr = new Packr({ useRecords: false, variableMapSize: true });

/** Portable msgpack of a plain value (test side, for crafting payloads). */
export function pack(v: unknown): Uint8Array {
  return new Uint8Array(packr.pack(v));
}

/** HMAC-SHA256 of `data` with a UTF-8 secret (test side). */
export async function hmac(secret: string, data: Uint8Array): Promise<Uint8Array> {
  const key = await crypto.subtle.importKey(
    "raw",
    new TextEncoder().encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  return new Uint8Array(await crypto.subtle.sign("HMAC", key, data as Uint8Array<ArrayBuffer>));
}

/** An envelope of `version` (default: the one the codec writes) around raw payload bytes, signed when `secret` is given. */
export async function envelope(
  payload: Uint8Array,
  secret?: string,
  version: number = STATE_VERSION,
): Promise<Uint8Array> {
  const env: Record<string, unknown> = {
    format: "tnl-edge-session",
    version,
    alg: secret ? "HS256" : "none",
  };
  if (secret) env.sig = await hmac(secret, payload);
  env.payload = payload;
  return pack(env);
}

/** The payload of an encoded state, as a plain object (maps with string keys) from `readPortable`. */
export function payloadObject(bytes: Uint8Array): Record<string, unknown> {
  const env = readPortable(bytes).value as Map<string, unknown>;
  return toPlain(readPortable(env.get("payload") as Uint8Array).value) as Record<string, unknown>;
}

/** Maps to plain objects, recursively. */
export function toPlain(v: unknown): unknown {
  if (v instanceof Map) {
    const o: Record<string, unknown> = {};
    for (const [k, x] of v) o[String(k)] = toPlain(x);
    return o;
  }
  if (Array.isArray(v)) return v.map(toPlain);
  return v;
}

/** Whether `e` is one of the three state errors. */
export function isStateError(e: unknown): boolean {
  return e instanceof TnlError &&
    (e.code === "state_invalid" || e.code === "state_mismatch" || e.code === "state_signature");
}

/** Assert every invariant a decoded snapshot must satisfy for `config`. */
export function assertInvariants(s: SessionSnapshot, config: ModelConfig): void {
  assert.ok(isValidSessionId(s.id));
  assert.ok(Number.isSafeInteger(s.generation) && s.generation >= 0);
  assert.ok(Number.isSafeInteger(s.state.position) && s.state.position >= 0);
  assert.ok(Number.isSafeInteger(s.pending) && s.pending >= -1 && s.pending < config.vocabSize);
  if (s.pending === -1) assert.equal(s.state.position, 0);
  // Counters leave room to grow: advancing them stays exact (see the codec's module doc).
  assert.ok(s.generation <= MAX_COUNTER && s.rng.counter <= MAX_COUNTER);
  assert.ok(s.state.position <= MAX_POSITION);
  // No history only for an empty session (the engine resumes from the history).
  if (s.tokens === null) assert.ok(s.state.position === 0 && s.pending === -1);
  assert.equal(s.state.layers.length, config.numLayers);
  s.state.layers.forEach((l, i) => {
    assert.ok(l instanceof Float32Array);
    assert.equal(l.length, stateLayerSize(config, i));
    assert.equal(l.byteOffset % 4, 0);
    assert.equal(l.length, config.numHeads * stateKeyDim(config, i) * config.headDim);
    for (const x of l) assert.ok(Number.isFinite(x));
  });
  if (s.tokens) {
    assert.ok(s.tokens instanceof Int32Array);
    for (const t of s.tokens) assert.ok(t >= 0 && t < config.vocabSize);
    assert.equal(s.tokens.length - (s.pending >= 0 ? 1 : 0), s.state.position);
    if (s.pending >= 0) assert.equal(s.tokens[s.tokens.length - 1], s.pending);
  }
  if (s.generated) {
    assert.ok(s.tokens);
    assert.equal(s.generated.length, s.tokens!.length);
    for (const g of s.generated) assert.ok(g === 0 || g === 1);
  }
  assert.ok(Number.isSafeInteger(s.rng.seed) && s.rng.seed >= 0);
  assert.ok(Number.isSafeInteger(s.rng.counter) && s.rng.counter >= 0);
  assert.ok(s.text.pendingBytes instanceof Uint8Array);
  assert.equal(typeof s.text.heldStop, "string");
  assert.ok(Number.isFinite(s.createdAt) && Number.isFinite(s.updatedAt));
  assert.equal(typeof s.sampling, "object");
}
