/**
 * `decodeSession`: untrusted state bytes to a checked `SessionSnapshot`. Decoding is strict and
 * bounded: the whole input is capped (`maxBytes`), msgpack is read by our own reader
 * (`./msgpack.ts`), which checks every declared length before allocating, caps depth and value
 * count, and refuses extension types, rather than by msgpackr's unpacker, which would interpret
 * msgpackr's extensions (records, typed arrays, dates) in untrusted input. The signature is checked
 * (in constant time, by `crypto.subtle.verify`) before the payload is parsed; unknown fields are
 * refused, and every field is checked against the loaded model.
 *
 * `tokens: nil` reads as an empty history, so it is accepted for an empty session only (the engine
 * needs the history to resume: penalties, held UTF-8 bytes, and the pending token's place in it).
 * @module
 */

import type { ModelConfig } from "../model/config.ts";
import { stateKeyDim, stateLayerSize } from "../model/config.ts";
import { isValidSessionId, type PlainSampling, type SessionSnapshot } from "../model/snapshot.ts";
import { openEnvelope } from "./envelope.ts";
import {
  checkKeys,
  describe,
  getBin,
  getInt,
  getMap,
  getString,
  getTime,
  invalid,
  mismatch,
  plainSampling,
} from "./fields.ts";
import {
  defaultMaxStateBytes,
  MAX_COUNTER,
  MAX_HELD_STOP_BYTES,
  MAX_PENDING_TEXT_BYTES,
  MAX_POSITION,
  STATE_FORMAT,
  STATE_VERSION,
} from "./format.ts";
import type { StateSecret } from "./hmac.ts";
import { copyLe } from "./le_bytes.ts";
import { type MsgMap, type MsgReadLimits, type MsgValue, readMsgpack } from "./msgpack.ts";

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

/** Limits of the payload read: its maps nest 4 deep (sampling values up to 6). */
export const PAYLOAD_LIMITS: MsgReadLimits = {
  maxDepth: 6,
  maxNodes: 1 << 18,
  maxStringBytes: MAX_HELD_STOP_BYTES,
};

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
 * @example
 * ```ts ignore
 * const snapshot = await decodeSession(bytes, {
 *   config: model.config,
 *   modelFingerprint: model.fingerprint,
 *   tokenizerFingerprint: model.tokenizer.fingerprint,
 * });
 * ```
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
  const payload = await openEnvelope(bytes, opts.secret);
  return checkPayload(readMsgpack(payload, PAYLOAD_LIMITS, "state payload"), opts);
}

function short(fp: string): string {
  return JSON.stringify(fp.length > 16 ? fp.slice(0, 16) + "…" : fp);
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
  const { tokens, generated } = readHistory(p, config, position, pending);

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
  const layers = readLayers(p.layers, config);

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

/** The token history and its generated flags, checked against `position` and `pending`. */
function readHistory(
  p: MsgMap,
  config: ModelConfig,
  position: number,
  pending: number,
): { tokens: Int32Array<ArrayBuffer> | null; generated: Uint8Array | null } {
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
  return { tokens, generated };
}

/** The layers: count and shapes against the config, then blob lengths, then values. */
function readLayers(lv: MsgValue | undefined, config: ModelConfig): Float32Array<ArrayBuffer>[] {
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
  return layers;
}
