/**
 * A strict msgpack reader for untrusted state bytes. It reads the portable core of the format only:
 * nil, booleans, integers, floats, UTF-8 strings, `bin` blobs, arrays and maps with string keys.
 * Everything else is refused with a `StateError` ("state_invalid") naming the byte offset:
 * extension types (msgpackr records, typed arrays, timestamps), non-string or duplicate keys,
 * invalid UTF-8, integers beyond ±2^53, trailing bytes, and nesting deeper than `maxDepth`.
 *
 * Every declared length is checked against the bytes that remain before anything is allocated, and
 * the number of values is capped by `maxNodes`, so memory stays proportional to the input. `bin`
 * values are zero-copy views into the input.
 * @module
 */

import { StateError } from "./errors.ts";

/** A decoded msgpack value. Maps are null-prototype objects with string keys. */
export type MsgValue = null | boolean | number | string | Uint8Array | MsgValue[] | MsgMap;

/** A decoded msgpack map (null prototype, own string keys only). */
export interface MsgMap {
  /** Entries by key. */
  [key: string]: MsgValue;
}

/** Limits of one read. */
export interface MsgReadLimits {
  /** Deepest nesting of arrays and maps (the top-level container is depth 1). */
  maxDepth: number;
  /** Most values (of any kind, keys excluded) in the whole input. */
  maxNodes: number;
  /** Longest string, in UTF-8 bytes. */
  maxStringBytes: number;
}

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

class Reader {
  pos = 0;
  nodes = 0;
  readonly view: DataView;
  constructor(
    readonly bytes: Uint8Array,
    readonly limits: MsgReadLimits,
    readonly what: string,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  fail(detail: string, at = this.pos): never {
    throw new StateError("state_invalid", `${this.what}: ${detail} (at byte ${at})`);
  }

  need(n: number, what: string): void {
    if (n > this.bytes.length - this.pos) {
      this.fail(
        `truncated: ${what} needs ${n} bytes, ${this.bytes.length - this.pos} remain`,
      );
    }
  }

  u8(): number {
    this.need(1, "a value");
    return this.bytes[this.pos++];
  }

  uint(width: 1 | 2 | 4, what: string): number {
    this.need(width, what);
    const p = this.pos;
    this.pos += width;
    return width === 1
      ? this.view.getUint8(p)
      : width === 2
      ? this.view.getUint16(p)
      : this.view.getUint32(p);
  }

  int64(signed: boolean): number {
    this.need(8, "a 64-bit integer");
    const p = this.pos;
    this.pos += 8;
    const v = signed ? this.view.getBigInt64(p) : this.view.getBigUint64(p);
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
      this.fail(`integer ${v} is beyond ±2^53`, p - 1);
    }
    return Number(v);
  }

  str(len: number, at: number): string {
    if (len > this.limits.maxStringBytes) {
      this.fail(`string of ${len} bytes exceeds the limit of ${this.limits.maxStringBytes}`, at);
    }
    this.need(len, "a string");
    const s = this.bytes.subarray(this.pos, this.pos + len);
    this.pos += len;
    try {
      return utf8.decode(s);
    } catch {
      this.fail("string is not valid UTF-8", at);
    }
  }

  bin(len: number): Uint8Array {
    this.need(len, "a bin blob");
    const b = this.bytes.subarray(this.pos, this.pos + len);
    this.pos += len;
    return b;
  }

  count(): void {
    if (++this.nodes > this.limits.maxNodes) {
      this.fail(`more than ${this.limits.maxNodes} values`);
    }
  }

  array(n: number, depth: number, at: number): MsgValue[] {
    if (depth > this.limits.maxDepth) this.fail(`nesting deeper than ${this.limits.maxDepth}`, at);
    // Each element takes at least one byte: refuse counts the input cannot hold before allocating.
    if (n > this.bytes.length - this.pos) {
      this.fail(`array of ${n} elements in ${this.bytes.length - this.pos} remaining bytes`, at);
    }
    if (n > this.limits.maxNodes - this.nodes) {
      this.fail(`more than ${this.limits.maxNodes} values`, at);
    }
    const out: MsgValue[] = [];
    for (let i = 0; i < n; i++) out.push(this.value(depth));
    return out;
  }

  map(n: number, depth: number, at: number): MsgMap {
    if (depth > this.limits.maxDepth) this.fail(`nesting deeper than ${this.limits.maxDepth}`, at);
    if (n > (this.bytes.length - this.pos) / 2) {
      this.fail(`map of ${n} entries in ${this.bytes.length - this.pos} remaining bytes`, at);
    }
    if (n > this.limits.maxNodes - this.nodes) {
      this.fail(`more than ${this.limits.maxNodes} values`, at);
    }
    const out = Object.create(null) as MsgMap;
    for (let i = 0; i < n; i++) {
      const kAt = this.pos;
      const t = this.u8();
      let key: string;
      if (t >= 0xa0 && t <= 0xbf) key = this.str(t & 0x1f, kAt);
      else if (t === 0xd9) key = this.str(this.uint(1, "a string length"), kAt);
      else if (t === 0xda) key = this.str(this.uint(2, "a string length"), kAt);
      else if (t === 0xdb) key = this.str(this.uint(4, "a string length"), kAt);
      else this.fail(`map key is not a string (type byte 0x${t.toString(16)})`, kAt);
      if (Object.hasOwn(out, key)) this.fail(`duplicate map key ${JSON.stringify(key)}`, kAt);
      out[key] = this.value(depth);
    }
    return out;
  }

  value(depth: number): MsgValue {
    this.count();
    const at = this.pos;
    const t = this.u8();
    if (t <= 0x7f) return t;
    if (t >= 0xe0) return t - 0x100;
    if (t <= 0x8f) return this.map(t & 0x0f, depth + 1, at);
    if (t <= 0x9f) return this.array(t & 0x0f, depth + 1, at);
    if (t <= 0xbf) return this.str(t & 0x1f, at);
    switch (t) {
      case 0xc0:
        return null;
      case 0xc2:
        return false;
      case 0xc3:
        return true;
      case 0xc4:
        return this.bin(this.uint(1, "a bin length"));
      case 0xc5:
        return this.bin(this.uint(2, "a bin length"));
      case 0xc6:
        return this.bin(this.uint(4, "a bin length"));
      case 0xca: {
        this.need(4, "a float32");
        const v = this.view.getFloat32(this.pos);
        this.pos += 4;
        return v;
      }
      case 0xcb: {
        this.need(8, "a float64");
        const v = this.view.getFloat64(this.pos);
        this.pos += 8;
        return v;
      }
      case 0xcc:
        return this.uint(1, "a uint8");
      case 0xcd:
        return this.uint(2, "a uint16");
      case 0xce:
        return this.uint(4, "a uint32");
      case 0xcf:
        return this.int64(false);
      case 0xd0: {
        this.need(1, "an int8");
        return this.view.getInt8(this.pos++);
      }
      case 0xd1: {
        this.need(2, "an int16");
        const v = this.view.getInt16(this.pos);
        this.pos += 2;
        return v;
      }
      case 0xd2: {
        this.need(4, "an int32");
        const v = this.view.getInt32(this.pos);
        this.pos += 4;
        return v;
      }
      case 0xd3:
        return this.int64(true);
      case 0xd9:
        return this.str(this.uint(1, "a string length"), at);
      case 0xda:
        return this.str(this.uint(2, "a string length"), at);
      case 0xdb:
        return this.str(this.uint(4, "a string length"), at);
      case 0xdc:
        return this.array(this.uint(2, "an array length"), depth + 1, at);
      case 0xdd:
        return this.array(this.uint(4, "an array length"), depth + 1, at);
      case 0xde:
        return this.map(this.uint(2, "a map length"), depth + 1, at);
      case 0xdf:
        return this.map(this.uint(4, "a map length"), depth + 1, at);
      case 0xc1:
        return this.fail("type byte 0xc1 is never used in msgpack", at);
      default:
        // 0xc7-0xc9 and 0xd4-0xd8: extension types, which the wire format does not allow.
        return this.fail(`msgpack extension type (byte 0x${t.toString(16)}) is not allowed`, at);
    }
  }
}

/**
 * Read exactly one msgpack value filling all of `bytes`. `what` labels error messages ("state
 * envelope", "state payload"). Throws `StateError` ("state_invalid") for anything malformed.
 */
export function readMsgpack(bytes: Uint8Array, limits: MsgReadLimits, what: string): MsgValue {
  const r = new Reader(bytes, limits, what);
  const v = r.value(0);
  if (r.pos !== bytes.length) r.fail(`${bytes.length - r.pos} trailing bytes after the value`);
  return v;
}

/** Whether `v` is a decoded map. */
export function isMsgMap(v: unknown): v is MsgMap {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}
