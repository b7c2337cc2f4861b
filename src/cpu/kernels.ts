/**
 * CPU kernels of the reference model: f32 arrays, f64 accumulation in scalars, no allocation.
 * Matrices are row-major; a weight W of a linear layer is [out, in] as PyTorch stores it.
 * @module
 */

import type { Activation } from "../model/config.ts";

/**
 * Y[t, o] = Σ_i X[t, i]·W[o, i] + b[o] for t < T (y = x·Wᵀ + b).
 * Rows of W are visited once and dotted with every input row while in cache.
 */
export function linear(
  x: Float32Array,
  T: number,
  w: Float32Array,
  bias: Float32Array | null,
  outDim: number,
  inDim: number,
  y: Float32Array,
  yStride = outDim,
  yOffset = 0,
): void {
  const n4 = inDim & ~3;
  for (let o = 0; o < outDim; o++) {
    const r = o * inDim;
    const b = bias ? bias[o] : 0;
    for (let t = 0; t < T; t++) {
      const xr = t * inDim;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      let i = 0;
      for (; i < n4; i += 4) {
        s0 += w[r + i] * x[xr + i];
        s1 += w[r + i + 1] * x[xr + i + 1];
        s2 += w[r + i + 2] * x[xr + i + 2];
        s3 += w[r + i + 3] * x[xr + i + 3];
      }
      for (; i < inDim; i++) s0 += w[r + i] * x[xr + i];
      y[yOffset + t * yStride + o] = s0 + s1 + s2 + s3 + b;
    }
  }
}

/** SimpleRMSNorm over rows of width D: y = x / sqrt(mean(x²) + eps), eps 1e-6, no weight. */
export function simpleRmsNorm(x: Float32Array, T: number, D: number, y: Float32Array): void {
  for (let t = 0; t < T; t++) {
    const r = t * D;
    let ss = 0;
    for (let i = 0; i < D; i++) ss += x[r + i] * x[r + i];
    const inv = 1 / Math.sqrt(ss / D + 1e-6);
    for (let i = 0; i < D; i++) y[r + i] = x[r + i] * inv;
  }
}

/** LayerNorm over rows of width D (eps 1e-5, PyTorch's default), with weight and bias. */
export function layerNorm(
  x: Float32Array,
  T: number,
  D: number,
  weight: Float32Array,
  bias: Float32Array,
  y: Float32Array,
): void {
  for (let t = 0; t < T; t++) {
    const r = t * D;
    let mean = 0;
    for (let i = 0; i < D; i++) mean += x[r + i];
    mean /= D;
    let v = 0;
    for (let i = 0; i < D; i++) v += (x[r + i] - mean) ** 2;
    const inv = 1 / Math.sqrt(v / D + 1e-5);
    for (let i = 0; i < D; i++) y[r + i] = (x[r + i] - mean) * inv * weight[i] + bias[i];
  }
}

/** erf by Abramowitz–Stegun 7.1.26 refined (|error| < 1.2e-7), for the exact GELU. */
export function erf(x: number): number {
  // Numerical Recipes erfc (Chebyshev), accurate to ~1.2e-7.
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r = t * Math.exp(
    -z * z - 1.26551223 +
      t * (1.00002368 +
          t * (0.37409196 +
              t * (0.09678418 +
                  t * (-0.18628806 +
                      t * (0.27886807 +
                          t *
                            (-1.13520398 +
                              t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
  );
  return x >= 0 ? 1 - r : r - 1;
}

/** Apply the q/k activation in place to `n` values starting at `offset`, every `stride`. */
export function activate(act: Activation, a: Float32Array, offset: number, n: number): void {
  const end = offset + n;
  switch (act) {
    case "silu":
      for (let i = offset; i < end; i++) a[i] = a[i] / (1 + Math.exp(-a[i]));
      return;
    case "relu":
      for (let i = offset; i < end; i++) if (a[i] < 0) a[i] = 0;
      return;
    case "elu":
      for (let i = offset; i < end; i++) if (a[i] < 0) a[i] = Math.expm1(a[i]);
      return;
    case "1+elu":
      for (let i = offset; i < end; i++) a[i] = a[i] < 0 ? 1 + Math.expm1(a[i]) : 1 + a[i];
      return;
    case "2+elu":
      for (let i = offset; i < end; i++) a[i] = a[i] < 0 ? 2 + Math.expm1(a[i]) : 2 + a[i];
      return;
    case "sigmoid":
      for (let i = offset; i < end; i++) a[i] = 1 / (1 + Math.exp(-a[i]));
      return;
    case "gelu":
      for (let i = offset; i < end; i++) a[i] = 0.5 * a[i] * (1 + erf(a[i] / Math.SQRT2));
      return;
    case "none":
      return;
  }
}
