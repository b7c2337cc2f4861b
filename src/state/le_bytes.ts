/**
 * Little-endian bytes of 4-byte typed arrays, both ways: the wire holds numbers little-endian
 * whatever the host (a view on little-endian hosts, a byte-swapped copy elsewhere).
 * @module
 */

/** Whether this host stores numbers little-endian. */
export const LITTLE_ENDIAN: boolean = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Little-endian bytes of a typed array: a view on little-endian hosts, a swapped copy otherwise. */
export function leBytes(a: Float32Array | Int32Array): Uint8Array {
  const view = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  if (LITTLE_ENDIAN) return view;
  const out = new Uint8Array(view.length);
  for (let i = 0; i < view.length; i += 4) {
    out[i] = view[i + 3];
    out[i + 1] = view[i + 2];
    out[i + 2] = view[i + 1];
    out[i + 3] = view[i];
  }
  return out;
}

/** Copy little-endian bytes into a fresh, aligned typed array of `n` 4-byte elements. */
export function copyLe<T extends Float32Array<ArrayBuffer> | Int32Array<ArrayBuffer>>(
  src: Uint8Array,
  out: T,
): T {
  const dst = new Uint8Array(out.buffer);
  dst.set(src);
  if (!LITTLE_ENDIAN) {
    for (let i = 0; i < dst.length; i += 4) {
      const a = dst[i];
      const b = dst[i + 1];
      dst[i] = dst[i + 3];
      dst[i + 1] = dst[i + 2];
      dst[i + 2] = b;
      dst[i + 3] = a;
    }
  }
  return out;
}
