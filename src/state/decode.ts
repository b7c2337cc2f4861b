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
} from "./format.ts";
import { inflateExact } from "./deflate.ts";
import {
  DEFAULT_STATE_ENCODING,
  DTYPE_BYTES,
  encodingName,
  type EncodingParts,
  isExactEncoding,
  isStateEncoding,
  lossyOrigin,
  STATE_ENCODINGS,
  type StateEncoding,
} from "./encodings.ts";
import { unpackLayer } from "./layer_values.ts";
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

/**
 * A decoded state: the snapshot, and how its layers were stored. Only `"f32"` and `"f32+deflate"`
 * resume bit-exactly (`isExactEncoding`); a session resumed from another encoding continues from
 * an approximation of its state, which its info should say.
 */
export interface DecodedSession extends SessionSnapshot {
  /** The encoding of the layers in the bytes (version 1 states: `"f32"`). */
  encoding: StateEncoding;
  /**
   * Null when the values are those of an exact run; else the lossy encoding this state (or one it
   * continues from) was stored in (version 3's `lossy`; before it, the layers' own encoding when
   * lossy). Saving the session again keeps it, so a lossy state never passes for an exact one.
   */
  lossy: StateEncoding | null;
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

/** Version 3 added `lossy`. */
const PAYLOAD_KEYS_V3 = [...PAYLOAD_KEYS, "lossy"] as const;

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
 * Reads format versions 1, 2 and 3 and every layer encoding (`encoding` in the result says which);
 * a deflated layer may inflate to exactly its shape's size, no more. Returned arrays (layers,
 * tokens, generated, pendingBytes) are fresh copies (layers 4-byte aligned), sharing nothing with
 * `bytes`.
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
): Promise<DecodedSession> {
  const { config } = opts;
  if (!(bytes instanceof Uint8Array)) invalid("expected bytes");
  const maxBytes = opts.maxBytes ?? defaultMaxStateBytes(config);
  if (bytes.length > maxBytes) invalid(`${bytes.length} bytes exceeds the limit of ${maxBytes}`);
  if (bytes.length === 0) invalid("empty");
  const { version, payload } = await openEnvelope(bytes, opts.secret);
  return await checkPayload(readMsgpack(payload, PAYLOAD_LIMITS, "state payload"), version, opts);
}

function short(fp: string): string {
  return JSON.stringify(fp.length > 16 ? fp.slice(0, 16) + "…" : fp);
}

async function checkPayload(
  pv: MsgValue,
  version: number,
  opts: DecodeOptions,
): Promise<DecodedSession> {
  const { config } = opts;
  const p = getMap(pv, "payload");
  if (p.format !== STATE_FORMAT) invalid(`payload: format is ${describe(p.format)}`);
  if (p.version !== version) {
    invalid(`payload: version is ${describe(p.version)}, the envelope's is ${version}`);
  }
  checkKeys(p, "payload", version >= 3 ? PAYLOAD_KEYS_V3 : PAYLOAD_KEYS);

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
  const { layers, encoding } = await readLayers(p.layers, config, version);
  const lossy = version >= 3 ? readLossy(p.lossy, encoding) : lossyOrigin(encoding, null);

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
    encoding,
    lossy,
  };
}

/**
 * Version 3's `lossy`: nil, or a lossy encoding name; never nil when the layers are lossy (a state
 * in `q8` that claimed to be exact would be imported as if it were).
 */
export function readLossy(v: MsgValue | undefined, encoding: StateEncoding): StateEncoding | null {
  if (v === null) {
    if (!isExactEncoding(encoding)) {
      invalid(`lossy: nil, but the layers are ${encoding} (a lossy encoding)`);
    }
    return null;
  }
  if (!isStateEncoding(v) || isExactEncoding(v)) {
    invalid(
      `lossy: ${describe(v)}, expected nil or a lossy encoding (${
        STATE_ENCODINGS.filter((e) => !isExactEncoding(e)).join(", ")
      })`,
    );
  }
  return v;
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

/** The layers: count and shapes against the config, then encodings and blob lengths, then values. */
async function readLayers(
  lv: MsgValue | undefined,
  config: ModelConfig,
  version: number,
): Promise<{ layers: Float32Array<ArrayBuffer>[]; encoding: StateEncoding }> {
  if (!Array.isArray(lv)) invalid(`layers: expected an array, got ${describe(lv)}`);
  if (lv.length !== config.numLayers) {
    mismatch(`${lv.length} layers, the loaded model has ${config.numLayers}`);
  }
  const layers: Float32Array<ArrayBuffer>[] = [];
  let encoding: StateEncoding = DEFAULT_STATE_ENCODING;
  for (let l = 0; l < lv.length; l++) {
    const label = `state layer ${l}`;
    const m = getMap(lv[l], label);
    const parts = version === 1 ? layerEncodingV1(m, label) : layerEncodingV2(m, label);
    const name = encodingName(parts);
    if (l === 0) encoding = name;
    else if (name !== encoding) {
      invalid(`${label}: encoding ${name}, layer 0 is ${encoding} (one encoding per state)`);
    }
    const shape = m.shape;
    if (
      !Array.isArray(shape) || shape.length !== 3 ||
      !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)
    ) {
      invalid(`${label}: shape ${describe(shape)}, expected [heads, dk, dv] of integers`);
    }
    const dims = { dk: stateKeyDim(config, l), dv: config.headDim };
    const expected = [config.numHeads, dims.dk, dims.dv];
    if (shape.some((d, i) => d !== expected[i])) {
      mismatch(`${label}: shape [${shape.join(",")}], expected [${expected.join(",")}]`);
    }
    const n = stateLayerSize(config, l);
    const size = n * DTYPE_BYTES[parts.dtype];
    let data = getBin(m.data, `${label}.data`);
    if (parts.deflate) data = await inflateExact(data, size, `${label}.data`);
    else if (data.length !== size) {
      invalid(
        `${label}: ${data.length} bytes of data for shape [${
          expected.join(",")
        }] (expected ${size})`,
      );
    }
    let scales: Uint8Array | null = null;
    if (parts.dtype === "q8") {
      scales = getBin(m.scales, `${label}.scales`);
      const rows = config.numHeads * dims.dk;
      if (scales.length !== rows * 4) {
        invalid(`${label}.scales: ${scales.length} bytes for ${rows} rows (expected ${rows * 4})`);
      }
    }
    layers.push(unpackLayer({ data, scales }, parts.dtype, n, dims, parts.deflate, label));
  }
  return { layers, encoding };
}

/** Version 1 layers: `{ dtype: "f32", shape, data }`. */
function layerEncodingV1(m: MsgMap, label: string): EncodingParts {
  checkKeys(m, label, ["dtype", "shape", "data"]);
  if (m.dtype !== "f32") invalid(`${label}: dtype ${describe(m.dtype)}, expected "f32"`);
  return { dtype: "f32", deflate: false };
}

/** Version 2 layers: `{ dtype, shape, compression, data, scales (q8 only) }`. */
function layerEncodingV2(m: MsgMap, label: string): EncodingParts {
  const dtype = m.dtype;
  if (dtype !== "f32" && dtype !== "bf16" && dtype !== "q8") {
    invalid(`${label}: dtype ${describe(dtype)}, expected "f32", "bf16" or "q8"`);
  }
  checkKeys(m, label, [
    "dtype",
    "shape",
    "compression",
    "data",
    ...(dtype === "q8" ? ["scales"] : []),
  ]);
  const compression = m.compression;
  if (compression !== "none" && compression !== "deflate") {
    invalid(`${label}: compression ${describe(compression)}, expected "none" or "deflate"`);
  }
  return { dtype, deflate: compression === "deflate" };
}
