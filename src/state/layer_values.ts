/**
 * A layer's f32 values to the bytes of a value type and back (format version 2):
 *
 * - `f32`: the values' bits, exact.
 * - `bf16`: the upper 16 bits of each f32, rounded to nearest, ties to even (the usual f32→bf16
 *   rule); a finite value that would round to infinity saturates to ±3.3895e38 (bf16's largest),
 *   so a finite state stays finite. Relative error ≤ 2^-8 (half a bf16 ulp) for normal values.
 * - `q8`: per row of a head's matrix (the `dv` values of `[h, r, ·]`), a scale
 *   s = fround(max|x| / 127) (lowered by one ulp while fround(127·s) would overflow) and
 *   q = round-half-away-from-zero(x / s) in [-127, 127]; the value read back is fround(q · s), so
 *   |x − fround(q · s)| ≤ s/2 plus the f32 roundings of s and of the product. A row of zeros has
 *   s = 0.
 *
 * Bytes are little-endian per value. With `planes`, byte j of every value is stored together
 * (plane j = bytes j of values 0..n−1, planes in order): the exponent bytes of nearby state values
 * are alike, so deflate finds more to compress (q8 has one byte per value: planes change nothing).
 * Reading checks every value (and q8 scale) is finite, and that no q8 value is −128.
 * @module
 */

import type { LayerDtype } from "./encodings.ts";
import { invalid } from "./fields.ts";
import { copyLe, leBytes } from "./le_bytes.ts";

/** A layer as stored: its value bytes and, for q8, one f32 scale per row (little-endian). */
export interface PackedLayer {
  /** Value bytes: n × the type's width, in value order or in byte planes. */
  data: Uint8Array;
  /** q8 only: one little-endian f32 scale per row of `dv` values; null otherwise. */
  scales: Uint8Array | null;
}

/** Where a layer's values sit: `dk` rows of `dv` per head (for messages and q8 rows). */
export interface LayerDims {
  /** Rows per head. */
  dk: number;
  /** Values per row (the head width). */
  dv: number;
}

const BF16_MAX = 0x7f7f;

const one = new Float32Array(1);
const oneBits = new Uint32Array(one.buffer);

/** The f32 just below a positive f32 `s`. */
function previousF32(s: number): number {
  one[0] = s;
  oneBits[0]--;
  return one[0];
}

/** Store `values` as `dtype`; `planes` splits the bytes into byte planes (for deflate). */
export function packLayer(
  values: Float32Array,
  dtype: LayerDtype,
  dims: LayerDims,
  planes: boolean,
): PackedLayer {
  if (dtype === "q8") return packQ8(values, dims.dv);
  const n = values.length;
  if (dtype === "f32" && !planes) return { data: leBytes(values), scales: null };
  const bits = new Uint32Array(values.buffer, values.byteOffset, n);
  if (dtype === "f32") {
    const out = new Uint8Array(4 * n);
    for (let i = 0; i < n; i++) {
      const b = bits[i];
      out[i] = b & 0xff;
      out[n + i] = (b >>> 8) & 0xff;
      out[2 * n + i] = (b >>> 16) & 0xff;
      out[3 * n + i] = b >>> 24;
    }
    return { data: out, scales: null };
  }
  const out = new Uint8Array(2 * n);
  const [lo, hi, step] = planes ? [0, n, 1] : [0, 1, 2];
  for (let i = 0; i < n; i++) {
    const b = bits[i];
    // Round to nearest even on the 16 dropped bits; finite inputs cannot wrap past 2^32.
    let h = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
    if ((h & 0x7f80) === 0x7f80) h = (h & 0x8000) | BF16_MAX;
    out[lo + i * step] = h & 0xff;
    out[hi + i * step] = h >>> 8;
  }
  return { data: out, scales: null };
}

function packQ8(values: Float32Array, dv: number): PackedLayer {
  const n = values.length;
  const rows = n / dv;
  const data = new Uint8Array(n);
  const scales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    const base = r * dv;
    let m = 0;
    for (let c = 0; c < dv; c++) m = Math.max(m, Math.abs(values[base + c]));
    if (m === 0) continue; // scale 0, values 0
    let s = Math.fround(m / 127);
    // fround(127·s) must stay finite: the reader computes every q·s in f32.
    while (!Number.isFinite(Math.fround(127 * s))) s = previousF32(s);
    scales[r] = s;
    for (let c = 0; c < dv; c++) {
      const t = values[base + c] / s;
      let q = t < 0 ? -Math.floor(0.5 - t) : Math.floor(t + 0.5);
      q = q > 127 ? 127 : q < -127 ? -127 : q;
      data[base + c] = q & 0xff;
    }
  }
  return { data, scales: leBytes(scales) };
}

/** `state layer l: non-finite value v at [h,r,c]`. */
function nonFinite(label: string, i: number, dims: LayerDims, v: number): never {
  const { dk, dv } = dims;
  const h = Math.floor(i / (dk * dv)), r = Math.floor((i % (dk * dv)) / dv), c = i % dv;
  invalid(`${label}: non-finite value ${v} at [${h},${r},${c}]`);
}

/**
 * Read `n` values stored as `dtype` (lengths already checked against the shape); `label` names
 * the layer in errors. Returns a fresh, aligned array.
 */
export function unpackLayer(
  stored: PackedLayer,
  dtype: LayerDtype,
  n: number,
  dims: LayerDims,
  planes: boolean,
  label: string,
): Float32Array<ArrayBuffer> {
  const d = stored.data;
  const f = new Float32Array(n);
  const bits = new Uint32Array(f.buffer);
  if (dtype === "f32") {
    if (planes) {
      for (let i = 0; i < n; i++) {
        bits[i] = (d[i] | (d[n + i] << 8) | (d[2 * n + i] << 16) | (d[3 * n + i] << 24)) >>> 0;
      }
    } else copyLe(d, f);
    for (let i = 0; i < n; i++) {
      if ((bits[i] & 0x7f800000) === 0x7f800000) nonFinite(label, i, dims, f[i]);
    }
  } else if (dtype === "bf16") {
    const [lo, hi, step] = planes ? [0, n, 1] : [0, 1, 2];
    for (let i = 0; i < n; i++) {
      const h = d[lo + i * step] | (d[hi + i * step] << 8);
      bits[i] = (h << 16) >>> 0;
      if ((h & 0x7f80) === 0x7f80) nonFinite(label, i, dims, f[i]);
    }
  } else {
    const scales = copyLe(stored.scales!, new Float32Array(n / dims.dv));
    for (let r = 0; r < scales.length; r++) {
      const s = scales[r];
      if (!(s >= 0 && s <= 3.4028234663852886e38)) {
        invalid(`${label}.scales: row ${r} has scale ${s}, expected a finite number ≥ 0`);
      }
      for (let c = 0, i = r * dims.dv; c < dims.dv; c++, i++) {
        const q = (d[i] << 24) >> 24;
        if (q === -128) {
          invalid(`${label}: q8 value -128 at index ${i} (values are in [-127, 127])`);
        }
        const v = Math.fround(q * s);
        if (!Number.isFinite(v)) nonFinite(label, i, dims, v);
        f[i] = v;
      }
    }
  }
  return f;
}
