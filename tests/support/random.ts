/**
 * Deterministic random inputs shared by the tests: the uniform generator the random weights use
 * (`src/model/random_weights.ts`) and seeded bytes.
 * @module
 */

export { mulberry32 as rng } from "../../src/model/random_weights.ts";

/** `n` deterministic bytes (a linear congruential generator's high bytes) for `seed`. */
export function bytes(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}
