/**
 * Worker entry of `CodecPool`: encodes and decodes session states (msgpack, HMAC) and hashes encoded
 * states off the thread that serves HTTP. Answers `{ id, bytes?, digest?, error? }`.
 * @module
 */

/// <reference lib="deno.worker" />

import { type DecodeOptions, decodeSession } from "./decode.ts";
import { sessionDigest } from "./digest.ts";
import { type EncodeOptions, encodeSession } from "./encode.ts";
import type { SessionSnapshot } from "../model/snapshot.ts";
import { buffersOf } from "../model/state.ts";

self.onmessage = async (
  ev: MessageEvent<
    | { id: number; op: "encode"; snapshot: SessionSnapshot; opts: EncodeOptions }
    | { id: number; op: "digest"; bytes: Uint8Array }
    | { id: number; op: "decode"; bytes: Uint8Array; opts: DecodeOptions }
  >,
) => {
  const m = ev.data;
  try {
    if (m.op === "encode") {
      const bytes = await encodeSession(m.snapshot, m.opts);
      const digest = await sessionDigest(bytes);
      // The state's layers came transferred: they go back the same way.
      const layers = m.snapshot.state.layers;
      const buffers = buffersOf(layers);
      self.postMessage({ id: m.id, bytes, digest, layers }, [
        bytes.buffer as ArrayBuffer,
        ...buffers,
      ]);
    } else if (m.op === "decode") {
      const snapshot = await decodeSession(m.bytes, m.opts);
      const buffers = buffersOf(snapshot.state.layers);
      self.postMessage({ id: m.id, snapshot, digest: "" }, buffers);
    } else {
      self.postMessage({ id: m.id, digest: await sessionDigest(m.bytes) });
    }
  } catch (e) {
    const err = e as Error & { code?: string };
    const error = { name: err.name, code: err.code, message: err.message };
    if (m.op !== "encode") return self.postMessage({ id: m.id, error });
    // The lent layers go back with the error too.
    const layers = m.snapshot.state.layers;
    const buffers = buffersOf(layers);
    self.postMessage({ id: m.id, error, layers }, buffers);
  }
};
