/**
 * A seeded, counter-based random generator. Its whole state is the plain value
 * `{ seed, counter }`: draw number `counter` is a pure function of the seed and the counter, so a
 * session saved with its RNG state resumes with exactly the numbers it would have drawn, and the
 * GPU sampler (WGSL, u32 arithmetic only) draws the same numbers as this file.
 *
 * ## The exact function (port this to WGSL verbatim)
 *
 * All values are u32; `*` is the wrapping 32-bit multiply (`Math.imul` here, `*` on `u32` in
 * WGSL), `+` wraps modulo 2^32, `rotl(x, r) = (x << r) | (x >> (32 - r))`.
 *
 * ```
 * absorb(h, k):                         // one MurmurHash3 x86_32 block
 *   k = k * 0xcc9e2d51;  k = rotl(k, 15);  k = k * 0x1b873593
 *   h = h ^ k;  h = rotl(h, 13);  h = h * 5 + 0xe6546b64
 *   return h
 *
 * rngU32(seedLo, seedHi, counterLo, counterHi):
 *   h = 0
 *   h = absorb(h, seedLo);  h = absorb(h, seedHi)
 *   h = absorb(h, counterLo);  h = absorb(h, counterHi)
 *   h = h ^ 16                          // the key length in bytes
 *   h = h ^ (h >> 16);  h = h * 0x85ebca6b
 *   h = h ^ (h >> 13);  h = h * 0xc2b2ae35
 *   h = h ^ (h >> 16)
 *   return h
 *
 * uniform(state):                       // a float in [0, 1) with 24 random bits
 *   seedLo = seed mod 2^32;  seedHi = floor(seed / 2^32)
 *   counterLo = counter mod 2^32;  counterHi = floor(counter / 2^32)
 *   x = rngU32(seedLo, seedHi, counterLo, counterHi)
 *   counter = counter + 1
 *   return f32(x >> 8) * 2^-24          // exact in f32
 * ```
 *
 * `rngU32` is exactly MurmurHash3 x86_32 (seed 0) of the 16 bytes of the four words, little
 * endian. For a fixed seed it is a bijection of `counterLo`, so the first 2^32 draws of a stream
 * are distinct u32 values.
 * @module
 */

import { InputError } from "../errors.ts";

/** The whole state of a random stream: plain, JSON- and msgpack-friendly. */
export interface RngState {
  /** Any non-negative safe integer; split into two u32 words (low, high). */
  seed: number;
  /** Draws made so far: a non-negative safe integer, incremented by each draw. */
  counter: number;
}

const TWO_32 = 4294967296;
const TWO_M24 = 1 / 16777216;

function absorb(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

/**
 * The generator's hash: a u32 (as a non-negative number) from the seed words and the counter
 * words. Each argument is taken modulo 2^32. See the module doc for the exact function.
 */
export function rngU32(seedLo: number, seedHi: number, counter: number, counterHi = 0): number {
  let h = absorb(0, seedLo);
  h = absorb(h, seedHi);
  h = absorb(h, counter);
  h = absorb(h, counterHi);
  h ^= 16;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** The four u32 words `[seedLo, seedHi, counterLo, counterHi]` the next draw hashes (for the GPU). */
export function rngWords(state: Readonly<RngState>): [number, number, number, number] {
  return [
    state.seed >>> 0,
    Math.floor(state.seed / TWO_32) >>> 0,
    state.counter >>> 0,
    Math.floor(state.counter / TWO_32) >>> 0,
  ];
}

/** The next u32 of the stream; advances `state.counter` by one. */
export function rngNextU32(state: RngState): number {
  const s = state.seed;
  const c = state.counter;
  const x = rngU32(s >>> 0, Math.floor(s / TWO_32), c >>> 0, Math.floor(c / TWO_32));
  state.counter = c + 1;
  return x;
}

/** A uniform float in [0, 1) with 24 random bits (`(u32 >>> 8) · 2^-24`); advances `state.counter`. */
export function rngUniform(state: RngState): number {
  return (rngNextU32(state) >>> 8) * TWO_M24;
}

function checkSeed(seed: unknown, field: string): number {
  if (typeof seed !== "number" || !Number.isSafeInteger(seed) || seed < 0) {
    throw new InputError(field, `must be a non-negative safe integer, got ${String(seed)}`);
  }
  return seed;
}

/**
 * A fresh state at counter 0. With no `seed`, one is drawn from `crypto.getRandomValues`
 * (53 random bits). Throws `InputError` ("seed") for a seed that is not a non-negative safe integer.
 */
export function newRngState(seed?: number): RngState {
  if (seed === undefined) {
    const w = crypto.getRandomValues(new Uint32Array(2));
    return { seed: (w[1] & 0x1fffff) * TWO_32 + w[0], counter: 0 };
  }
  return { seed: checkSeed(seed, "seed"), counter: 0 };
}

/**
 * Check a deserialized RNG state (from a saved session) and return a fresh copy of it. Throws
 * `InputError` naming `field` when it is not `{ seed, counter }` with non-negative safe integers.
 */
export function parseRngState(value: unknown, field = "rng"): RngState {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new InputError(field, "must be an object { seed, counter }");
  }
  const v = value as Record<string, unknown>;
  return {
    seed: checkSeed(v.seed, `${field}.seed`),
    counter: checkSeed(v.counter, `${field}.counter`),
  };
}
