/**
 * Tensor element types as stored in checkpoints, and their conversion to f32.
 * @module
 */

/** Element types a checkpoint may hold (safetensors spelling). */
export type DType = "F32" | "F16" | "BF16" | "F64" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

/** Bytes per element of each dtype. */
export const DTYPE_BYTES: Readonly<Record<DType, number>> = {
  F32: 4,
  F16: 2,
  BF16: 2,
  F64: 8,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/** Whether `s` names a known dtype. */
export function isDType(s: string): s is DType {
  return Object.hasOwn(DTYPE_BYTES, s);
}

/** Floating dtypes a model's weights may use. */
export type FloatDType = "F32" | "F16" | "BF16";

/** Whether `d` is one of the weight dtypes the backends accept. */
export function isFloatDType(d: DType): d is FloatDType {
  return d === "F32" || d === "F16" || d === "BF16";
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** IEEE half → f32 (exact). */
export function f16ToF32(h: number): number {
  const s = (h & 0x8000) ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** bfloat16 → f32 (exact: the upper 16 bits of an f32). */
export function bf16ToF32(h: number): number {
  u32Scratch[0] = h << 16;
  return f32Scratch[0];
}

/** f32 → bfloat16 bits, round to nearest even (NaN stays NaN). */
export function f32ToBf16(x: number): number {
  f32Scratch[0] = x;
  const u = u32Scratch[0];
  if ((u & 0x7f800000) === 0x7f800000 && (u & 0x7fffff) !== 0) return (u >>> 16) | 0x40;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** f32 → IEEE half bits, round to nearest even. */
export function f32ToF16(x: number): number {
  f32Scratch[0] = x;
  const u = u32Scratch[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    if (rem > half || (rem === half && (r & 1))) r++;
    return sign | r;
  }
  let r = mant >>> 13;
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (r & 1))) {
    r++;
    if (r === 0x400) {
      r = 0;
      e++;
      if (e >= 31) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | r;
}

/**
 * Widen little-endian `bytes` of a float dtype into `out` (a new array when omitted).
 * Only float dtypes are accepted; the caller has checked the element count.
 */
export function toFloat32(bytes: Uint8Array, dtype: FloatDType, out?: Float32Array): Float32Array {
  const n = bytes.byteLength / DTYPE_BYTES[dtype];
  const dst = out ?? new Float32Array(n);
  if (dtype === "F32") {
    if (bytes.byteOffset % 4 === 0) {
      dst.set(new Float32Array(bytes.buffer, bytes.byteOffset, n));
    } else {
      new Uint8Array(dst.buffer, dst.byteOffset, n * 4).set(bytes);
    }
    return dst;
  }
  const src = bytes.byteOffset % 2 === 0
    ? new Uint16Array(bytes.buffer, bytes.byteOffset, n)
    : new Uint16Array(bytes.slice().buffer);
  if (dtype === "BF16") {
    const dst32 = new Uint32Array(dst.buffer, dst.byteOffset, n);
    for (let i = 0; i < n; i++) dst32[i] = src[i] << 16;
  } else {
    for (let i = 0; i < n; i++) dst[i] = f16ToF32(src[i]);
  }
  return dst;
}
