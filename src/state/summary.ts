/**
 * `sessionSummary`: the counters and times of an encoded state, read without its signature check
 * or its layers, for listing a store's own entries.
 * @module
 */

import { PAYLOAD_LIMITS, readLossy } from "./decode.ts";
import { ENVELOPE_LIMITS } from "./envelope.ts";
import { STATE_FORMAT } from "./format.ts";
import { describe, getBin, getInt, getMap, getTime, invalid } from "./fields.ts";
import { isValidSessionId } from "../model/snapshot.ts";
import { isMsgMap, type MsgValue, readMsgpack } from "./msgpack.ts";
import {
  DEFAULT_STATE_ENCODING,
  isStateEncoding,
  lossyOrigin,
  type StateEncoding,
} from "./encodings.ts";

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
  /** How the layers are stored (`"f32"` for version 1 states). */
  encoding: StateEncoding;
  /** Null when the values are an exact run's, else the lossy encoding they passed through. */
  lossy: StateEncoding | null;
}

/**
 * The counters and times of an encoded state, read without checking its signature or decoding its
 * layers (the blobs stay views): for listing a store's own entries, which this server wrote. Throws
 * `StateError` (`state_invalid`) when the bytes are not a state.
 */
export function sessionSummary(bytes: Uint8Array): SessionSummary {
  const env = readMsgpack(bytes, ENVELOPE_LIMITS, "state envelope");
  if (!isMsgMap(env) || env.format !== STATE_FORMAT) invalid("envelope: not a TNL Edge state");
  const payload = getBin(env.payload, "envelope.payload");
  const p = getMap(readMsgpack(payload, PAYLOAD_LIMITS, "state payload"), "payload");
  const id = p.id;
  if (!isValidSessionId(id)) invalid(`id: ${describe(id)} is not a session id`);
  const tokens = p.tokens === null
    ? 0
    : getInt(getMap(p.tokens, "tokens").count, "tokens.count", 0);
  const encoding = layersEncoding(p.layers);
  return {
    id,
    generation: getInt(p.generation, "generation", 0),
    position: getInt(p.position, "position", 0),
    tokens,
    pending: getInt(p.pending, "pending", -1) >= 0,
    createdAt: getTime(p.createdAt, "createdAt"),
    updatedAt: getTime(p.updatedAt, "updatedAt"),
    encoding,
    lossy: p.lossy === undefined ? lossyOrigin(encoding, null) : readLossy(p.lossy, encoding),
  };
}

/** The encoding of the first layer (the decoder checks that all agree). */
function layersEncoding(layers: MsgValue | undefined): StateEncoding {
  if (!Array.isArray(layers) || layers.length === 0) return DEFAULT_STATE_ENCODING;
  const first = getMap(layers[0], "state layer 0");
  const name = `${first.dtype}${first.compression === "deflate" ? "+deflate" : ""}`;
  if (!isStateEncoding(name)) invalid(`state layer 0: unknown encoding ${JSON.stringify(name)}`);
  return name;
}
