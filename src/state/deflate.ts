/**
 * Deflate (zlib, RFC 1950) through the runtime's `CompressionStream`, and a bounded inflate for
 * untrusted input: the output may be exactly the size the layer's shape says and no more.
 *
 * Why inflate feeds its input in small pieces: Deno's `DecompressionStream` inflates a whole
 * written chunk at once, so one 260 KB chunk of a deflate bomb becomes 256 MiB in memory before a
 * reader could stop it. With `INFLATE_PIECE` bytes written at a time (deflate expands at most
 * 1,032:1), no step holds more than about 17 MB, and the reader stops at the first byte beyond the
 * expected size. The stream does not report a stream cut inside its Adler-32 trailer, so the
 * trailer is checked here too.
 * @module
 */

import { invalid } from "./fields.ts";

/** Input bytes written to the inflater at a time (see the module doc). */
export const INFLATE_PIECE = 16 * 1024;

/** Deflate `bytes` (zlib format; the runtime's level). */
export async function deflate(bytes: Uint8Array): Promise<Uint8Array> {
  const cs = new CompressionStream("deflate");
  const writer = cs.writable.getWriter();
  writer.write(bytes as Uint8Array<ArrayBuffer>).catch(() => {});
  writer.close().catch(() => {});
  return await collect(cs.readable);
}

async function collect(readable: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let n = 0;
  for await (const part of readable) {
    parts.push(part);
    n += part.length;
  }
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Adler-32 of `bytes` (RFC 1950 §8.2): sums mod 65521, reduced every 5,552 bytes (no overflow). */
export function adler32(bytes: Uint8Array): number {
  let a = 1;
  let b = 0;
  for (let i = 0; i < bytes.length;) {
    const end = Math.min(bytes.length, i + 5552);
    for (; i < end; i++) {
      a += bytes[i];
      b += a;
    }
    a %= 65521;
    b %= 65521;
  }
  return (b * 65536 + a) >>> 0;
}

/**
 * Inflate zlib `input` that must hold exactly `size` bytes; anything else (not zlib, a wrong
 * checksum, cut short, trailing bytes, more or fewer than `size` bytes) is a `state_invalid`
 * naming `field`. Memory stays bounded whatever the input (see the module doc).
 */
export async function inflateExact(
  input: Uint8Array,
  size: number,
  field: string,
): Promise<Uint8Array> {
  const out = new Uint8Array(size);
  let filled = 0;
  let at = 0;
  const source = new ReadableStream<BufferSource>({
    pull(c) {
      if (at >= input.length) return c.close();
      c.enqueue(input.subarray(at, at + INFLATE_PIECE) as Uint8Array<ArrayBuffer>);
      at += INFLATE_PIECE;
    },
  }, { highWaterMark: 0 });
  const reader = source.pipeThrough(new DecompressionStream("deflate")).getReader();
  try {
    for (;;) {
      let r: ReadableStreamReadResult<Uint8Array>;
      try {
        r = await reader.read();
      } catch (e) {
        invalid(`${field}: not a valid deflate stream (${(e as Error).message})`);
      }
      if (r.done) break;
      if (r.value.length > size - filled) {
        invalid(`${field}: inflates to more than the ${size} bytes its shape holds`);
      }
      out.set(r.value, filled);
      filled += r.value.length;
    }
  } finally {
    reader.cancel().catch(() => {});
  }
  if (filled !== size) invalid(`${field}: inflates to ${filled} bytes, its shape holds ${size}`);
  const n = input.length;
  const trailer = n < 6 ? -1 : ((input[n - 4] << 24) | (input[n - 3] << 16) |
    (input[n - 2] << 8) | input[n - 1]) >>> 0;
  if (trailer !== adler32(out)) invalid(`${field}: deflate checksum does not match (cut short?)`);
  return out;
}
