/**
 * The common shape of every weights format: a catalogue of tensors whose bytes are read lazily, one
 * tensor at a time, so loading never holds a whole large file in memory twice.
 * @module
 */

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
  /** Release open files. */
  close(): void;
}
