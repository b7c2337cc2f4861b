/**
 * Model fingerprints: SHA-256 over the canonical config and, per tensor in name order, its name,
 * dtype, shape and a digest of its bytes (the first and last MiB, so huge tensors cost little).
 * Computed while the backend reads the weights, so nothing is read twice.
 * @module
 */

import { createHash } from "node:crypto";
import type { ModelConfig } from "./config.ts";
import { WeightsError } from "../errors.ts";
import { readTensorInto, type TensorSource } from "./weights/source.ts";
import type { WeightQuantization } from "./quantize.ts";

const SAMPLE = 1 << 20;

/** JSON with object keys sorted, for hashing. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    return `{${
      Object.keys(o).sort().map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(",")
    }}`;
  }
  return JSON.stringify(v) ?? "null";
}

/** Digest of one tensor's bytes (first and last MiB, and the length). */
function tensorDigest(bytes: Uint8Array): string {
  const [head, tail] = sampled(bytes.byteLength);
  return sampleDigest(bytes.byteLength, bytes.subarray(...head), bytes.subarray(...tail));
}

/** The byte ranges of a tensor of `length` bytes that its digest samples: [head, tail). */
function sampled(length: number): [[number, number], [number, number]] {
  const tail = Math.min(length, Math.max(SAMPLE, length - SAMPLE)); // empty when length ≤ SAMPLE
  return [[0, Math.min(SAMPLE, length)], [tail, length]];
}

/** The digest of a tensor of `length` bytes from its sampled bytes. */
function sampleDigest(length: number, head: Uint8Array, tail: Uint8Array): string {
  const h = createHash("sha256");
  h.update(String(length));
  h.update(head);
  if (length > SAMPLE) h.update(tail);
  return h.digest("hex");
}

/** A tensor being read in slices: where the next slice starts, and its sampled bytes so far. */
interface Slices {
  next: number;
  head: Uint8Array;
  tail: Uint8Array;
}

/** A source wrapper that records a digest of every tensor read through it. */
export class FingerprintingSource implements TensorSource {
  /** The wrapped source's tensors. */
  readonly tensors: TensorSource["tensors"];
  readonly #inner: TensorSource;
  readonly #digests = new Map<string, string>();
  readonly #slices = new Map<string, Slices>();
  readonly #onRead?: (name: string) => void;

  /** Wrap `inner`; `onRead` is told of every tensor read (for progress). */
  constructor(inner: TensorSource, onRead?: (name: string) => void) {
    this.#inner = inner;
    this.tensors = inner.tensors;
    this.#onRead = onRead;
  }

  /** Read through, recording the digest. */
  async read(name: string): Promise<Uint8Array> {
    const bytes = await this.#inner.read(name);
    this.#digests.set(name, tensorDigest(bytes));
    this.#onRead?.(name);
    return bytes;
  }

  /**
   * Read through into `dst`, recording the digest: at once for a whole tensor, after its last
   * slice for slices, which must come in order from the tensor's start.
   */
  async readInto(name: string, dst: Uint8Array, offset = 0): Promise<void> {
    const info = this.tensors.get(name);
    let s = this.#slices.get(name);
    if (info && offset !== (s?.next ?? 0)) {
      throw new WeightsError(
        info.file,
        name,
        `slice at byte ${offset} read out of order (the fingerprint reads a tensor from its start)`,
      );
    }
    await readTensorInto(this.#inner, name, dst, offset);
    const length = info!.byteLength, end = offset + dst.byteLength;
    if (offset === 0 && end === length) {
      this.#digests.set(name, tensorDigest(dst));
      this.#onRead?.(name);
      return;
    }
    const [head, tail] = sampled(length);
    if (!s) {
      s = {
        next: 0,
        head: new Uint8Array(head[1] - head[0]),
        tail: new Uint8Array(tail[1] - tail[0]),
      };
      this.#slices.set(name, s);
    }
    // The parts of [offset, end) in each sampled range, copied to their place.
    for (const [[a, b], into] of [[head, s.head], [tail, s.tail]] as const) {
      const from = Math.max(a, offset), to = Math.min(b, end);
      if (from < to) into.set(dst.subarray(from - offset, to - offset), from - a);
    }
    s.next = end;
    if (end < length) return;
    this.#slices.delete(name);
    this.#digests.set(name, sampleDigest(length, s.head, s.tail));
    this.#onRead?.(name);
  }

  /** Close the wrapped source. */
  close(): void {
    this.#inner.close();
  }

  /**
   * The fingerprint of `config`, every tensor read so far and the weight quantization (hex
   * SHA-256; unquantized models keep the fingerprint they always had).
   */
  fingerprint(config: ModelConfig, quantize: WeightQuantization = "none"): string {
    const h = createHash("sha256");
    h.update("tnl-model-v1\n");
    h.update(canonicalJson(config.raw));
    if (quantize !== "none") h.update(`\nquantize|${quantize}`);
    for (const name of [...this.#digests.keys()].sort()) {
      const info = this.tensors.get(name)!;
      h.update(`\n${name}|${info.dtype}|${info.shape.join("x")}|${this.#digests.get(name)}`);
    }
    return h.digest("hex");
  }
}
