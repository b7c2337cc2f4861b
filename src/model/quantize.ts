/**
 * Weight-only int8 quantization: every matrix row (output channel) r gets a scale
 * s_r = max_i |W[r, i]| / 127 and stores q[r, i] = round(W[r, i] / s_r) in [-127, 127]; the model
 * then runs on Ŵ[r, i] = q[r, i] · s_r (an f32 product, the same bits on every backend). Vectors
 * (biases, norm weights, LRPE θ) stay in f32. One function quantizes for both backends, so the CPU
 * reference and the GPU kernels see the very same Ŵ.
 * @module
 */

import { InputError } from "../errors.ts";

/** How matrix weights are held in memory: as stored (`none`), or int8 with per-row scales. */
export type WeightQuantization = "none" | "int8";

/** The accepted values of `WeightQuantization`. */
export const WEIGHT_QUANTIZATIONS: readonly WeightQuantization[] = ["none", "int8"];

/** Check a user-supplied quantization name. */
export function parseQuantization(v: unknown, what = "quantize"): WeightQuantization {
  if (v === undefined || v === null) return "none";
  if (typeof v === "string" && (WEIGHT_QUANTIZATIONS as readonly string[]).includes(v)) {
    return v as WeightQuantization;
  }
  throw new InputError(
    what,
    `expected one of ${WEIGHT_QUANTIZATIONS.join(", ")}, got ${String(v)}`,
  );
}

/** A [rows, cols] matrix as int8 values and one f32 scale per row. */
export interface Int8Matrix {
  /** Rows (output channels). */
  readonly rows: number;
  /** Columns. */
  readonly cols: number;
  /** [rows, cols] row-major. */
  readonly q: Int8Array;
  /** [rows] f32 scales. */
  readonly scales: Float32Array;
}

/**
 * Quantize a row-major f32 matrix per row. Non-finite weights are rejected (they would poison the
 * row's scale). An all-zero row gets scale 0 and zeros.
 */
export function quantizeInt8(
  values: Float32Array,
  rows: number,
  cols: number,
  name = "matrix",
): Int8Matrix {
  if (values.length !== rows * cols) {
    throw new RangeError(`${name}: ${values.length} values for a ${rows}×${cols} matrix`);
  }
  const q = new Int8Array(rows * cols);
  const scales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    scales[r] = quantizeRowInto(values.subarray(base, base + cols), q.subarray(base), name, r);
  }
  return { rows, cols, q, scales };
}

/**
 * Quantize one row (`values`, its `cols` weights) into `q` (from index 0); returns its scale.
 * `quantizeInt8` is this, row by row; loaders call it on one widened row at a time so that a
 * whole matrix is never held in f32. `row` only labels the error of a non-finite weight.
 */
export function quantizeRowInto(
  values: Float32Array,
  q: Int8Array,
  name = "matrix",
  row = 0,
): number {
  const cols = values.length;
  let max = 0;
  for (let i = 0; i < cols; i++) {
    const a = Math.abs(values[i]);
    if (!(a <= max)) {
      if (!Number.isFinite(a)) throw new InputError(name, `row ${row} holds a non-finite weight`);
      max = a;
    }
  }
  const s = Math.fround(max / 127);
  if (s === 0) {
    q.fill(0, 0, cols);
    return s;
  }
  for (let i = 0; i < cols; i++) q[i] = roundHalfAway(values[i] / s);
  return s;
}

/**
 * round(x), halves away from zero, for |x| < 127.5 (|W| ≤ max and s = fround(max / 127) keep
 * |W / s| ≤ 127 · (1 + 2⁻²⁴)). floor(x + 0.5) is exact here except in two cases handled apart:
 * negative halves (floor rounds them up, toward zero) and x = 0.5 − 2⁻⁵⁴, where x + 0.5 rounds up
 * to 1 in f64. No data-dependent branch on the sign: random signs would mispredict, and this loop
 * runs over every weight at load (6× faster than a branch on the sign, measured).
 */
export function roundHalfAway(x: number): number {
  let v = Math.floor(x + 0.5);
  // Both cases leave v − x at 0.5 in f64 (for 0.5 − 2⁻⁵⁴: 1 − x is a tie that rounds to 0.5).
  if (v - x === 0.5) {
    if (x < 0) v -= 1;
    else if (x === 0.49999999999999994) v = 0;
  }
  return v;
}

/** Ŵ = q · s as f32 (each product correctly rounded, as a GPU's f32 multiply gives it). */
export function dequantizeInt8(m: Int8Matrix): Float32Array {
  const out = new Float32Array(m.rows * m.cols);
  for (let r = 0; r < m.rows; r++) {
    const s = m.scales[r];
    const base = r * m.cols;
    // q·s is exact in f64 (8 × 24 significant bits); the store rounds it once to f32.
    for (let i = 0; i < m.cols; i++) out[base + i] = m.q[base + i] * s;
  }
  return out;
}
