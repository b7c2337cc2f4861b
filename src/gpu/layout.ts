/**
 * Shared GPU buffer layouts: the per-sequence row record the kernels read and update, and the
 * control words. Kept in one place so TypeScript and WGSL agree (WGSL gets them as defines).
 * @module
 */

/** u32 words per sequence row in the `rows` buffer. */
export const ROW_WORDS = 16;

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
  /** Most tokens this row may sample in the submission (the sampler stops it after that many). */
  budget: 8,
  /** Nonzero once the row stopped (end-of-sequence sampled or budget spent); later steps skip it. */
  done: 9,
  /** Flags: bit 0 = stop at end-of-sequence, bit 1 = track token counts (penalties). */
  flags: 10,
} as const;

/** Row flag bits. */
export const ROW_FLAGS = { stopAtEos: 1, penalties: 2 } as const;

/** f32/u32 words of sampling parameters per row in the `sampling` buffer. */
export const SAMPLING_WORDS = 8;

/** Offsets of the sampling parameters. */
export const SAMPLING = {
  temperature: 0,
  topK: 1,
  topP: 2,
  minP: 3,
  repetition: 4,
  presence: 5,
  frequency: 6,
  biasCount: 7,
} as const;

/** Most logit-bias entries per row (OpenAI's limit is 300). */
export const MAX_LOGIT_BIAS = 300;

/** Control words: [0] = sequences in the current batch. */
export const CTL_WORDS = 16;

/** Preprocessor defines every kernel may use. */
export const LAYOUT_DEFINES = { ROW_WORDS } as const;

/** Vocabulary ids per workgroup of the first sampling stage (wgsl/sample_prep.wgsl: 256 × 8). */
export const ARGMAX_BLOCK = 2048;
