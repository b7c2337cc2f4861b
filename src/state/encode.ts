/**
 * `encodeSession`: a `SessionSnapshot` to the portable msgpack bytes of `docs/state_format.md`
 * (version 2: each layer says how its values are stored, see `./encodings.ts`).
 * Only portable msgpack is written (`./msgpack_parts.ts`: msgpackr with `useRecords: false` for
 * small values, large blobs copied once into the output), and every f32/i32 array goes out as a
 * little-endian `Uint8Array` view, never as msgpackr's typed-array extension.
 * @module
 */

import type { ModelConfig } from "../model/config.ts";
import { stateKeyDim } from "../model/config.ts";
import type { SessionSnapshot } from "../model/snapshot.ts";
import { writeEnvelope } from "./envelope.ts";
import { STATE_FORMAT, STATE_VERSION } from "./format.ts";
import type { StateSecret } from "./hmac.ts";
import { deflate } from "./deflate.ts";
import {
  DEFAULT_STATE_ENCODING,
  encodingName,
  type EncodingParts,
  encodingParts,
  lossyOrigin,
  type StateEncoding,
} from "./encodings.ts";
import { leBytes } from "./le_bytes.ts";
import { MsgParts } from "./msgpack_parts.ts";
import { packLayer } from "./layer_values.ts";
import { checkSnapshot, plainValue } from "./snapshot_check.ts";

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
  /**
   * How the layers are stored (default `"f32"`, exact): `"f32+deflate"` is exact too; `"bf16"`,
   * `"q8"` and their `+deflate` forms are lossy, and only ever written when asked for here.
   */
  encoding?: StateEncoding;
}

/**
 * Serialize a session for the model `opts.config` describes (it gives each flat layer its shape).
 * A snapshot that `decodeSession` would refuse (bad id, non-integer counters, wrong array types or
 * sizes, non-finite state values, history inconsistent with `position` and `pending`) throws a
 * `TnlError` with code `internal`: it is a bug of the caller, not of a client. Signs the payload
 * with HMAC-SHA256 when `opts.secret` is given, and stores the layers in `opts.encoding` (exact
 * f32 unless asked; an unknown encoding is a `TnlError` "invalid_input"). Its `lossy` field is
 * the snapshot's `lossy`, or the encoding itself when that is lossy (see `lossyOrigin`). Returns a
 * fresh byte array.
 * @example
 * ```ts ignore
 * const bytes = await encodeSession(session.toSnapshot(), {
 *   config: model.config,
 *   modelFingerprint: model.fingerprint,
 *   tokenizerFingerprint: model.tokenizer.fingerprint,
 *   encoding: "f32+deflate", // optional: exact and smaller; "bf16" or "q8" (+deflate) are lossy
 * });
 * ```
 */
export async function encodeSession(s: SessionSnapshot, opts: EncodeOptions): Promise<Uint8Array> {
  const { config } = opts;
  const encoding = encodingParts(opts.encoding ?? DEFAULT_STATE_ENCODING);
  checkSnapshot(s, config, {
    modelFingerprint: opts.modelFingerprint,
    tokenizerFingerprint: opts.tokenizerFingerprint,
  });
  const lossy = lossyOrigin(encodingName(encoding), s.lossy);
  const layers = [];
  for (let i = 0; i < s.state.layers.length; i++) {
    layers.push(await encodeLayer(s.state.layers[i], config, i, encoding));
  }
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
    lossy,
    layers,
  };
  return await writeEnvelope(new MsgParts().write(payload), opts.secret);
}

/** One layer's map: `{ dtype, shape, compression, data, scales? }` (format version 2). */
async function encodeLayer(
  values: Float32Array,
  config: ModelConfig,
  layer: number,
  { dtype, deflate: deflated }: EncodingParts,
): Promise<Record<string, unknown>> {
  const dims = { dk: stateKeyDim(config, layer), dv: config.headDim };
  const packed = packLayer(values, dtype, dims, deflated);
  const out: Record<string, unknown> = {
    dtype,
    shape: [config.numHeads, dims.dk, dims.dv],
    compression: deflated ? "deflate" : "none",
    data: deflated ? await deflate(packed.data) : packed.data,
  };
  if (packed.scales) out.scales = packed.scales;
  return out;
}
