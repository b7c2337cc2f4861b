/**
 * Sampling on the device, two ops per step: `sample_prep` (logit bias, penalties and block
 * arg-maxes over the whole vocabulary, wide) and `sample` (per sequence: the next token, the ring
 * append, counters and stop flags; `../sample_code.ts` sizes it for the device).
 * @module
 */

import { LAYOUT_DEFINES, SAMPLING_DEFINES } from "../layout.ts";
import { sampleDefines, sampleShape } from "../sample_code.ts";
import type { OpTarget } from "./context.ts";
import { loadKernel, makeOp, type Op } from "./kernel.ts";

/** The buffers and sizes of the sampling ops. */
export interface SampleSpec {
  /** Vocabulary size. */
  vocab: number;
  /** Ring capacity per sequence. */
  ring: number;
  /** End-of-sequence id. */
  eos: number;
  /** Logit-bias entries per sequence. */
  maxBias: number;
  /** u32 words per slot of the seen bitset. */
  seenWords: number;
  /** Arg-max blocks per row of the first stage. */
  blocks: number;
  /** Per-sequence rows (slot, position, pending token, ...). */
  rows: GPUBuffer;
  /** [B, V] logits, rewritten in place. */
  logits: GPUBuffer;
  /** [B, ring] sampled tokens. */
  ringBuffer: GPUBuffer;
  /** [B, SAMPLING_WORDS] sampling parameters. */
  sampling: GPUBuffer;
  /** [B, maxBias, 2] logit-bias entries. */
  bias: GPUBuffer;
  /** [slots, V] generated-token counts. */
  counts: GPUBuffer;
  /** [slots, seenWords] seen-token bitsets. */
  seen: GPUBuffer;
  /** [B, blocks, 2] block arg-maxes between the two ops. */
  best: GPUBuffer;
}

/** The two sampling ops of a decode step. */
export async function sampleOps(t: OpTarget, s: SampleSpec): Promise<Op[]> {
  // The threshold searches count in f32, exact up to 2^24 values.
  if (s.vocab > 2 ** 24) {
    throw new RangeError(
      `sampling: a vocabulary of ${s.vocab} ids is above 2^24, the most it counts`,
    );
  }
  const defines = { ...LAYOUT_DEFINES, ...SAMPLING_DEFINES };
  const [prep, pick] = await Promise.all([
    loadKernel(t.m.pipelines, "sample_prep", defines),
    loadKernel(t.m.pipelines, "sample", {
      ...defines,
      ...sampleDefines(sampleShape(t.m.ctx.info.limits)),
    }),
  ]);
  const values = () => ({
    vocab: s.vocab,
    ring: s.ring,
    eos: s.eos,
    max_bias: s.maxBias,
    seen_words: s.seenWords,
    blocks: s.blocks,
  });
  const common = {
    ctl: t.m.ctl,
    seqs: s.rows,
    logits: s.logits,
    sp: s.sampling,
    counts: s.counts,
    seen: s.seen,
    best: s.best,
  };
  return [
    await makeOp(t.res, prep, {
      label: "sample",
      buffers: { ...common, bias: s.bias },
      values,
      groups: (n) => [s.blocks, n, 1],
    }),
    await makeOp(t.res, pick, {
      label: "sample",
      buffers: { ...common, ring: s.ringBuffer },
      values,
      groups: (n) => [n, 1, 1],
    }),
  ];
}
