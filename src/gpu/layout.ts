/**
 * Shared GPU buffer layouts: the per-sequence row record the kernels read and update, and the
 * control words. Kept in one place so TypeScript and WGSL agree (WGSL gets them as defines).
 * @module
 */

/** u32 words per sequence row in the `rows` buffer. */
export const ROW_WORDS = 8;

/** Field offsets within a row. */
export const ROW = {
  /** State slot of the sequence. */
  slot: 0,
  /** Absolute position of the token fed this step. */
  pos: 1,
  /** Token fed this step (the sampler writes the next one here). */
  token: 2,
  /** RNG counter, low word. */
  rngLo: 3,
  /** RNG counter, high word. */
  rngHi: 4,
  /** Tokens written to the output ring in this submission. */
  outCount: 5,
  /** RNG seed, low word. */
  seedLo: 6,
  /** RNG seed, high word. */
  seedHi: 7,
} as const;

/** Control words: [0] = sequences in the current batch. */
export const CTL_WORDS = 16;

/** Preprocessor defines every kernel may use. */
export const LAYOUT_DEFINES = { ROW_WORDS } as const;
