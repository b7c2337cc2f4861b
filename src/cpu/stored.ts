/**
 * Weight matrices of the CPU backend in their stored precision: f32, bf16 and f16 as 16-bit, int8
 * with one f32 scale per row. The WebAssembly kernels widen them in registers; the helpers here
 * give the same f32 values for the JS reference and for embedding lookups.
 * @module
 */

import { f16ToF32 } from "../model/weights/dtype.ts";

/** A [rows, cols] row-major matrix as it is held in memory. */
export type StoredMatrix =
  | {
    readonly dtype: "f32";
    readonly rows: number;
    readonly cols: number;
    readonly data: Float32Array;
  }
  | {
    readonly dtype: "bf16" | "f16";
    readonly rows: number;
    readonly cols: number;
    /** Raw 16-bit patterns. */
    readonly data: Uint16Array;
  }
  | {
    readonly dtype: "int8";
    readonly rows: number;
    readonly cols: number;
    /** q in [-127, 127]. */
    readonly data: Int8Array;
    /** One scale per row: ŵ = q·s, rounded once to f32 (see `src/model/quantize.ts`). */
    readonly scales: Float32Array;
  };

/** The dtypes a stored matrix may have. */
export type StoredDType = StoredMatrix["dtype"];

/** Where stored matrices and biases are allocated: the wasm arena, or the JS heap. */
export interface MatrixAllocator {
  /** A zeroed f32 array of n values. */
  allocF32(n: number): Float32Array;
  /** A zeroed u16 array of n values. */
  allocU16(n: number): Uint16Array;
  /** A zeroed i8 array of n values. */
  allocI8(n: number): Int8Array;
}

/** Plain typed arrays (where the wasm kernels are not used). */
export const HEAP_ALLOCATOR: MatrixAllocator = {
  allocF32: (n) => new Float32Array(n),
  allocU16: (n) => new Uint16Array(n),
  allocI8: (n) => new Int8Array(n),
};

/** Bytes a matrix of `n` elements takes in a dtype (int8 scales not included). */
export function storedBytes(dtype: StoredDType, n: number): number {
  return n * (dtype === "f32" ? 4 : dtype === "int8" ? 1 : 2);
}

const u32 = new Uint32Array(1);
const f32 = new Float32Array(u32.buffer);

/** Row `row` widened to f32 into `out` at `outOff` (the exact values the kernels compute with). */
export function widenRow(m: StoredMatrix, row: number, out: Float32Array, outOff = 0): void {
  const n = m.cols, base = row * n;
  switch (m.dtype) {
    case "f32":
      out.set(m.data.subarray(base, base + n), outOff);
      return;
    case "bf16":
      for (let i = 0; i < n; i++) {
        u32[0] = m.data[base + i] << 16;
        out[outOff + i] = f32[0];
      }
      return;
    case "f16":
      for (let i = 0; i < n; i++) out[outOff + i] = f16ToF32(m.data[base + i]);
      return;
    case "int8": {
      // q·s is exact in f64 (8 × 24 significant bits); the store rounds it once to f32.
      const s = m.scales[row];
      for (let i = 0; i < n; i++) out[outOff + i] = m.data[base + i] * s;
      return;
    }
  }
}

/** The whole matrix widened to f32 (for the JS reference kernels; never on the wasm path). */
export function widenMatrix(m: StoredMatrix): Float32Array {
  if (m.dtype === "f32") return m.data;
  const out = new Float32Array(m.rows * m.cols);
  for (let r = 0; r < m.rows; r++) widenRow(m, r, out, r * m.cols);
  return out;
}
