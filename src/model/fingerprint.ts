/**
 * Model fingerprints: SHA-256 over the canonical config and, per tensor in name order, its name,
 * dtype, shape and a digest of its bytes (the first and last MiB, so huge tensors cost little).
 * Computed while the backend reads the weights, so nothing is read twice.
 * @module
 */

import { createHash } from "node:crypto";
import type { ModelConfig } from "./config.ts";
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
  const h = createHash("sha256");
  h.update(String(bytes.byteLength));
  h.update(bytes.subarray(0, SAMPLE));
  if (bytes.byteLength > SAMPLE) {
    h.update(bytes.subarray(Math.max(SAMPLE, bytes.byteLength - SAMPLE)));
  }
  return h.digest("hex");
}

/** A source wrapper that records a digest of every tensor read through it. */
export class FingerprintingSource implements TensorSource {
  /** The wrapped source's tensors. */
  readonly tensors: TensorSource["tensors"];
  readonly #inner: TensorSource;
  readonly #digests = new Map<string, string>();
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

  /** Read through into `dst`, recording the digest. */
  async readInto(name: string, dst: Uint8Array): Promise<void> {
    await readTensorInto(this.#inner, name, dst);
    this.#digests.set(name, tensorDigest(dst));
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
