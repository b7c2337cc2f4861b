/**
 * Portable msgpack written as a list of parts and joined once: containers' headers are written
 * here, scalars and small values by msgpackr (with `useRecords: false`: no records, no typed-array
 * extensions; byte arrays as `bin`), and large byte arrays (a state's layers, 13 MB at 385M) by
 * reference, so they are copied once, into the final buffer, instead of into msgpackr's growing
 * buffer and again into the envelope.
 * @module
 */

import { Packr } from "../deps.ts";

const packr = new Packr({ useRecords: false, variableMapSize: true, moreTypes: false });

/** Byte arrays at least this long are kept by reference. */
const BY_REFERENCE = 4096;

/** msgpack `bin` header for `n` bytes. */
export function binHeader(n: number): number[] {
  if (n < 0x100) return [0xc4, n];
  if (n < 0x10000) return [0xc5, n >> 8, n & 0xff];
  return [0xc6, n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
}

function header(n: number, fix: number, x16: number, x32: number): number[] {
  if (n < 16) return [fix | n];
  if (n < 0x10000) return [x16, n >> 8, n & 0xff];
  return [x32, n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
}

/** A msgpack document as parts; `byteLength` is their total. */
export class MsgParts {
  /** The parts, in order. */
  readonly parts: Uint8Array[] = [];
  /** Total bytes of the parts. */
  byteLength = 0;

  #push(b: Uint8Array): void {
    this.parts.push(b);
    this.byteLength += b.length;
  }

  /** Append `v`: plain objects as maps and arrays as arrays (recursively), the rest packed. */
  write(v: unknown): this {
    if (v instanceof Uint8Array) {
      if (v.length < BY_REFERENCE) return this.#packed(v);
      this.#push(Uint8Array.from(binHeader(v.length)));
      this.#push(v);
    } else if (Array.isArray(v)) {
      this.#push(Uint8Array.from(header(v.length, 0x90, 0xdc, 0xdd)));
      for (const x of v) this.write(x);
    } else if (v !== null && typeof v === "object" && !ArrayBuffer.isView(v)) {
      const entries = Object.entries(v);
      this.#push(Uint8Array.from(header(entries.length, 0x80, 0xde, 0xdf)));
      for (const [k, x] of entries) this.#packed(k).write(x);
    } else this.#packed(v);
    return this;
  }

  /** msgpackr's bytes of `v` (copied: msgpackr reuses its buffer). */
  #packed(v: unknown): this {
    this.#push((packr.pack(v) as Uint8Array).slice());
    return this;
  }

  /** Copy the parts into `out` at `offset`. */
  copyInto(out: Uint8Array, offset: number): void {
    for (const p of this.parts) {
      out.set(p, offset);
      offset += p.length;
    }
  }
}
