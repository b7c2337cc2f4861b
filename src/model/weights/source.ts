/**
 * The common shape of every weights format: a catalogue of tensors whose bytes are read lazily, one
 * tensor at a time, so loading never holds a whole large file in memory twice.
 * @module
 */

import { WeightsError } from "../../errors.ts";
import type { DType } from "./dtype.ts";

/** Where a tensor lives and what it is. */
export interface TensorInfo {
  /** Name as in the checkpoint (`model.layers.0.token_mixer.qkvu_proj.weight`). */
  readonly name: string;
  /** Stored element type. */
  readonly dtype: DType;
  /** Shape, outermost first. */
  readonly shape: readonly number[];
  /** Bytes of the tensor's data (product of the shape times the element size). */
  readonly byteLength: number;
  /** The file holding it (for messages). */
  readonly file: string;
}

/** A set of tensors whose data can be read on demand. */
export interface TensorSource {
  /** Every tensor, by name. */
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  /** Read one tensor's bytes (little-endian, contiguous, row-major, in the stored dtype). */
  read(name: string): Promise<Uint8Array>;
  /**
   * Read bytes [offset, offset + dst.byteLength) of one tensor straight into `dst`, with no buffer
   * of the source's own (a loader can then read a matrix in slices of rows); optional
   * ({@link readTensorInto} checks the range and falls back to `read` and a copy).
   */
  readInto?(name: string, dst: Uint8Array, offset?: number): Promise<void>;
  /** Release open files. */
  close(): void;
}

/**
 * Read bytes [offset, offset + dst.byteLength) of tensor `name` into `dst` (the whole tensor by
 * default): in place where the source can (a loader then never holds a second copy of a matrix),
 * else through `read`.
 * @example
 * ```ts
 * import { memorySource } from "./safetensors.ts";
 * const src = memorySource([{ name: "w", dtype: "F32", shape: [2], data: new Uint8Array(8) }]);
 * const dst = new Uint8Array(8);
 * await readTensorInto(src, "w", dst);
 * await readTensorInto(src, "w", dst.subarray(0, 4), 4); // its second value only
 * ```
 */
export async function readTensorInto(
  source: TensorSource,
  name: string,
  dst: Uint8Array,
  offset = 0,
): Promise<void> {
  const info = source.tensors.get(name);
  if (!info) throw new WeightsError("(source)", name, "missing");
  checkRange(info, dst.byteLength, offset);
  if (source.readInto) return await source.readInto(name, dst, offset);
  const bytes = await source.read(name);
  if (bytes.byteLength !== info.byteLength) {
    throw new WeightsError(
      info.file,
      name,
      `read ${bytes.byteLength} bytes, expected ${info.byteLength}`,
    );
  }
  dst.set(bytes.subarray(offset, offset + dst.byteLength));
}

/** Check that `length` bytes from `offset` lie inside the tensor of `info`. */
export function checkRange(info: TensorInfo, length: number, offset: number): void {
  if (!Number.isInteger(offset) || offset < 0 || offset + length > info.byteLength) {
    throw new WeightsError(
      info.file,
      info.name,
      `bytes [${offset}, ${offset + length}) are outside its ${info.byteLength}`,
    );
  }
}
