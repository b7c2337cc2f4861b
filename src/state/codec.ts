/**
 * The session state codec: a `SessionSnapshot` to portable msgpack bytes and back, optionally
 * HMAC-SHA256-signed (the format: `docs/state_format.md`). One module per step, read in order:
 *
 * | module               | holds                                                             |
 * |----------------------|-------------------------------------------------------------------|
 * | `format.ts`          | format name, version, media type, limits, state sizes             |
 * | `encodings.ts`       | the layer encodings (`f32`, `bf16`, `q8`, each `+deflate`)        |
 * | `snapshot_check.ts`  | what the encoder refuses (whatever the decoder would)             |
 * | `layer_values.ts`    | a layer's values to f32, bf16 or q8 bytes (and byte planes), back |
 * | `deflate.ts`         | deflate, and the bounded inflate of untrusted layers              |
 * | `encode.ts`          | `encodeSession`: the payload map                                  |
 * | `hmac.ts`            | HMAC-SHA256 of the payload                                        |
 * | `envelope.ts`        | the envelope bytes, and the signature policy on read              |
 * | `msgpack.ts`         | the strict, bounded msgpack reader                                |
 * | `fields.ts`          | strict readers of decoded fields, and the three state errors      |
 * | `decode.ts`          | `decodeSession`: every field checked against the loaded model     |
 * | `summary.ts`         | `sessionSummary`: counters without the signature check or layers  |
 * | `digest.ts`          | `sessionDigest`: SHA-256 of the bytes (the ETag)                  |
 *
 * This module gathers the codec's API in one import.
 * @module
 */

export { type DecodedSession, type DecodeOptions, decodeSession } from "./decode.ts";
export { sessionDigest } from "./digest.ts";
export { type EncodeOptions, encodeSession } from "./encode.ts";
export {
  defaultMaxStateBytes,
  FIELDS_ALLOWANCE_BYTES,
  HISTORY_ALLOWANCE_BYTES,
  MAX_COUNTER,
  MAX_HELD_STOP_BYTES,
  MAX_PENDING_TEXT_BYTES,
  MAX_POSITION,
  MAX_TIME_MS,
  STATE_FORMAT,
  STATE_MEDIA_TYPE,
  STATE_READ_VERSIONS,
  STATE_VERSION,
  stateByteSize,
} from "./format.ts";
export {
  DEFAULT_STATE_ENCODING,
  isExactEncoding,
  isStateEncoding,
  STATE_ENCODINGS,
  type StateEncoding,
} from "./encodings.ts";
export type { StateSecret } from "./hmac.ts";
export { type SessionSummary, sessionSummary } from "./summary.ts";
