/**
 * Session encoding off the serving thread: a few workers run `encodeSession` / `decodeSession`
 * (msgpack, HMAC) and `sessionDigest` (SHA-256). At 385M a state is 13 MB, and encoding plus hashing it takes a quarter
 * of a second of CPU on our 2-core machines: on the thread that serves HTTP, 64 kept sessions
 * ending together froze it for seconds. Where the runtime has no `Worker` (some edge hosts), or a
 * worker fails to start, the work runs in the calling thread as before.
 * @module
 */

import { TnlError, type TnlErrorCode } from "../errors.ts";
import type { SessionSnapshot } from "../model/snapshot.ts";
import { buffersOf } from "../model/state.ts";
import { type DecodedSession, type DecodeOptions, decodeSession } from "./decode.ts";
import { sessionDigest } from "./digest.ts";
import { stateByteSize } from "./format.ts";
import { type EncodeOptions, encodeSession } from "./encode.ts";

/** An encoded state and its SHA-256 (hex). */
export interface EncodedSession {
  /** The msgpack bytes. */
  bytes: Uint8Array;
  /** SHA-256 of `bytes`, hex (the ETag's value). */
  digest: string;
}

/** A worker's answer: the bytes and digest, and the lent state layers back. */
type Answer = {
  bytes?: Uint8Array;
  digest: string;
  layers?: Float32Array<ArrayBuffer>[];
  snapshot?: DecodedSession;
};
type Pending = { resolve: (v: Answer) => void; reject: (e: unknown) => void };

/**
 * A pool of codec workers, started on first use.
 * @example
 * ```ts ignore
 * const pool = new CodecPool(2);
 * const { bytes, digest } = await pool.encode(session.toSnapshot(), {
 *   config, modelFingerprint, tokenizerFingerprint, encoding: "f32+deflate",
 * });
 * pool.close();
 * ```
 */
export class CodecPool {
  readonly #size: number;
  readonly #workers: Worker[] = [];
  readonly #pending = new Map<number, Pending>();
  #next = 0;
  #id = 1;
  #inThread = typeof Worker === "undefined";

  readonly #minBytes: number;

  /**
   * A pool of `size` workers (0: everything in the calling thread); hashing states smaller than
   * `minWorkerBytes` (default 1 MiB), and decoding states whose bytes and decoded layers are both
   * smaller, stay in the calling thread (not worth a copy).
   */
  constructor(size: number, minWorkerBytes = 1 << 20) {
    this.#size = Math.max(0, Math.floor(size));
    this.#minBytes = minWorkerBytes;
    if (this.#size === 0) this.#inThread = true;
  }

  #worker(): Worker | null {
    if (this.#inThread) return null;
    if (this.#workers.length < this.#size) {
      try {
        const w = new Worker(new URL("./codec_worker.ts", import.meta.url), { type: "module" });
        w.onmessage = (ev) => this.#answer(ev.data);
        w.onerror = (ev) => {
          ev.preventDefault();
          this.#failAll(new TnlError("internal", `a codec worker failed: ${ev.message}`));
        };
        this.#workers.push(w);
      } catch {
        this.#inThread = true;
        return null;
      }
    }
    return this.#workers[this.#next++ % this.#workers.length];
  }

  #answer(
    m: Answer & { id: number; error?: { name: string; code?: string; message: string } },
  ): void {
    const p = this.#pending.get(m.id);
    if (!p) return;
    this.#pending.delete(m.id);
    if (m.error) {
      const e = m.error.code
        ? new TnlError(m.error.code as TnlErrorCode, m.error.message)
        : new Error(m.error.message);
      if (m.error.code) e.name = m.error.name;
      if (m.layers) Object.assign(e, { layers: m.layers });
      p.reject(e);
    } else p.resolve(m);
  }

  #failAll(e: Error): void {
    for (const p of this.#pending.values()) p.reject(e);
    this.#pending.clear();
    for (const w of this.#workers) w.terminate();
    this.#workers.length = 0;
  }

  #post(w: Worker, msg: Record<string, unknown>, transfer: Transferable[] = []): Promise<Answer> {
    const id = this.#id++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      w.postMessage({ ...msg, id }, transfer);
    });
  }

  /**
   * Encode a snapshot (its layers are lent to the worker) and hash the result; `opts.encoding`
   * picks the layers' encoding as in `encodeSession` (deflate runs in the worker too).
   */
  async encode(snapshot: SessionSnapshot, opts: EncodeOptions): Promise<EncodedSession> {
    const w = this.#worker();
    if (!w) {
      const bytes = await encodeSession(snapshot, opts);
      return { bytes, digest: await sessionDigest(bytes) };
    }
    // The layers are lent to the worker (transferred, not copied: 13 MB at 385M) and come back in
    // its answer; until then the snapshot's state must not be used (its session is being saved).
    const state = snapshot.state;
    const lent = buffersOf(state.layers);
    const back = (layers?: Float32Array<ArrayBuffer>[]) =>
      layers?.forEach((l, i) => (state.layers[i] = l));
    const r = await this.#post(w, { op: "encode", snapshot, opts }, lent).catch((e) => {
      back((e as { layers?: Float32Array<ArrayBuffer>[] }).layers);
      throw e;
    });
    back(r.layers);
    return { bytes: r.bytes!, digest: r.digest };
  }

  /**
   * Decode and check a state (`decodeSession`); its layers come back transferred. The work follows
   * the decoded size, not the input's (a deflated q8 state is a tenth of its f32 layers), so a
   * state goes to a worker when either reaches `minWorkerBytes`.
   */
  async decode(bytes: Uint8Array, opts: DecodeOptions): Promise<DecodedSession> {
    const w = this.#worker();
    const work = Math.max(bytes.length, stateByteSize(opts.config));
    if (!w || work < this.#minBytes) return await decodeSession(bytes, opts);
    return (await this.#post(w, { op: "decode", bytes, opts })).snapshot!;
  }

  /** SHA-256 of encoded bytes, hex. */
  async digest(bytes: Uint8Array): Promise<string> {
    const w = this.#worker();
    if (!w || bytes.length < this.#minBytes) return await sessionDigest(bytes);
    return (await this.#post(w, { op: "digest", bytes })).digest;
  }

  /** Stop the workers (work in flight fails). */
  close(): void {
    this.#failAll(new TnlError("backend_unavailable", "the codec pool is closed"));
  }
}
