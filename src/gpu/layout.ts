/**
 * Shared GPU buffer layouts: the per-sequence row record the kernels read and update, and the
 * control words. Kept in one place so TypeScript and WGSL agree (WGSL gets them as defines).
 * @module
 */

import { SAMPLING_FIELDS, type SamplingField } from "../engine/sampling_fields.ts";

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
  /** The sampler's last kept threshold τ (f32 bits; tests and diagnostics). */
  tau: 11,
  /**
   * Tokens the row may still sample over this call and the calls that continue it on the device
   * (`wgsl/rows_rollover.wgsl` takes each call's `outCount` off it).
   */
  left: 12,
} as const;

/** The row's field offsets as WGSL defines (`ROW_OUT_COUNT` = 5, ...). */
export const ROW_DEFINES: Readonly<Record<string, number>> = Object.freeze(
  Object.fromEntries(
    Object.entries(ROW).map((
      [k, v],
    ) => [`ROW_${k.replace(/[A-Z]/g, (c) => "_" + c).toUpperCase()}`, v]),
  ),
);

/** Row flag bits. */
export const ROW_FLAGS = { stopAtEos: 1, penalties: 2 } as const;

/**
 * The sampling fields stored on the GPU, in the order of their words in a `sampling` row: the rows
 * of `SAMPLING_FIELDS` (`src/engine/sampling_fields.ts`, a plain data table) that have a GPU word.
 */
export const SAMPLING_WORD_FIELDS: readonly SamplingField[] = SAMPLING_FIELDS.filter((f) =>
  f.gpu !== undefined
);

/** f32/u32 words of sampling parameters per row in the `sampling` buffer. */
export const SAMPLING_WORDS: number = SAMPLING_WORD_FIELDS.length;

/** Offsets of the sampling parameters (`temperature`: 0, `topK`: 1, ..., `biasCount`: 7). */
export const SAMPLING: Readonly<Record<string, number>> = Object.freeze(
  Object.fromEntries(SAMPLING_WORD_FIELDS.map((f, i) => [f.gpu!.name, i])),
);

/** The sampling row as WGSL defines: `SAMPLING_WORDS` and the offsets (`SAMPLING_TOPK` = 1, ...). */
export const SAMPLING_DEFINES: Readonly<Record<string, number>> = Object.freeze({
  SAMPLING_WORDS,
  ...Object.fromEntries(
    SAMPLING_WORD_FIELDS.map((f, i) => [`SAMPLING_${f.gpu!.name.toUpperCase()}`, i]),
  ),
});

/** Most logit-bias entries per row (OpenAI's limit is 300). */
export const MAX_LOGIT_BIAS = 300;

/** Control words: [0] = sequences in the current batch, [1] = steps of the decode call. */
export const CTL_WORDS = 16;

/** Preprocessor defines every kernel may use. */
export const LAYOUT_DEFINES = { ROW_WORDS } as const;

/** Vocabulary ids per workgroup of the first sampling stage (wgsl/sample_prep.wgsl: 256 × 8). */
export const ARGMAX_BLOCK = 2048;
