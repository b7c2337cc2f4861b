/**
 * The constants of the session state format (`docs/state_format.md`): its name, versions, media
 * type and the limits a reader enforces, and the sizes derived from a model's config.
 *
 * Counters leave room to grow: whatever `decodeSession` accepts, the engine can advance and
 * `encodeSession` can write back. `generation` (+1 per save) and `rng.counter` (+1 per draw; a
 * 2×u32 pair on the GPU, read back into a JS number) are read up to `MAX_COUNTER` = 2^48, so
 * 2^53 − 2^48 more steps stay exact safe integers (centuries of saves or draws); `position` is read
 * up to `MAX_POSITION` (the GPU keeps it in a u32, with room for 2^31 more tokens); times up to
 * `MAX_TIME_MS`, the largest a `Date` holds.
 * @module
 */

import type { ModelConfig } from "../model/config.ts";
import { stateLayerSize } from "../model/config.ts";

/** The `format` field of the envelope and the payload. */
export const STATE_FORMAT = "tnl-edge-session";
/**
 * The wire format version this module writes (2: layers carry their encoding; 3: `lossy`, the lossy
 * encoding a state passed through).
 */
export const STATE_VERSION = 3;
/** The versions this module reads: 1 (f32 layers only), 2 and 3. */
export const STATE_READ_VERSIONS: readonly number[] = [1, 2, 3];
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
