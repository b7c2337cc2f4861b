/**
 * `encodeSession`: a `SessionSnapshot` to the portable msgpack bytes of `docs/state_format.md`.
 * Only portable msgpack is written: the payload is packed by msgpackr with `useRecords: false`,
 * and every f32/i32 array goes out as a little-endian `Uint8Array` view, never as msgpackr's
 * typed-array extension.
 * @module
 */

import { Packr } from "../deps.ts";
import type { ModelConfig } from "../model/config.ts";
import { stateKeyDim } from "../model/config.ts";
import type { SessionSnapshot } from "../model/snapshot.ts";
import { writeEnvelope } from "./envelope.ts";
import { STATE_FORMAT, STATE_VERSION } from "./format.ts";
import type { StateSecret } from "./hmac.ts";
import { leBytes } from "./le_bytes.ts";
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
}

const packr = new Packr({ useRecords: false, variableMapSize: true, moreTypes: false });

/**
 * Serialize a session for the model `opts.config` describes (it gives each flat layer its shape).
 * A snapshot that `decodeSession` would refuse (bad id, non-integer counters, wrong array types or
 * sizes, non-finite state values, history inconsistent with `position` and `pending`) throws a
 * `TnlError` with code `internal`: it is a bug of the caller, not of a client. Signs the payload
 * with HMAC-SHA256 when `opts.secret` is given. Returns a fresh byte array.
 * @example
 * ```ts ignore
 * const bytes = await encodeSession(session.toSnapshot(), {
 *   config: model.config,
 *   modelFingerprint: model.fingerprint,
 *   tokenizerFingerprint: model.tokenizer.fingerprint,
 * });
 * ```
 */
export async function encodeSession(s: SessionSnapshot, opts: EncodeOptions): Promise<Uint8Array> {
  const { config } = opts;
  checkSnapshot(s, config, {
    modelFingerprint: opts.modelFingerprint,
    tokenizerFingerprint: opts.tokenizerFingerprint,
  });
  const layers = s.state.layers.map((l, i) => ({
    dtype: "f32",
    shape: [config.numHeads, stateKeyDim(config, i), config.headDim],
    data: leBytes(l),
  }));
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
  return await writeEnvelope(packr.pack(payload) as Uint8Array, opts.secret);
}
