/**
 * `rows_rollover`: the rows of a sampled decode call that continues the one before on the device
 * (`wgsl/rows_rollover.wgsl`), before the host has read that call back.
 * @module
 */

import { LAYOUT_DEFINES, ROW_DEFINES, ROW_FLAGS } from "../layout.ts";
import type { OpTarget } from "./context.ts";
import { loadKernel, makeOp, type Op } from "./kernel.ts";

/** The buffers of the rollover. */
export interface RowsRolloverSpec {
  /** Ring capacity per row (no call samples more). */
  ring: number;
  /** End-of-sequence id. */
  eos: number;
  /** [rows, ring] the call before's sampled tokens (its last one tells whether a row ended). */
  ringBuffer: GPUBuffer;
  /** The rows the next call's steps read and update. */
  rows: GPUBuffer;
  /** The rows as the call before left them (copied at the end of its submission). */
  prev: GPUBuffer;
  /** One u32 per row: 0 for a row left out (it stays stopped), else 1. */
  keep: GPUBuffer;
}

/** One thread per row: carry each row over, its budget renewed (`ctl[1]` = the call's steps). */
export async function rowsRolloverOp(t: OpTarget, s: RowsRolloverSpec): Promise<Op> {
  const k = await loadKernel(t.m.pipelines, "rows_rollover", {
    ...LAYOUT_DEFINES,
    ...ROW_DEFINES,
    ROW_FLAG_STOP_AT_EOS: ROW_FLAGS.stopAtEos,
  });
  return await makeOp(t.res, k, {
    label: "rows_rollover",
    buffers: { ctl: t.m.ctl, seqs: s.rows, prev: s.prev, ring: s.ringBuffer, keep: s.keep },
    values: () => ({ ring: s.ring, eos: s.eos }),
    groups: (n) => [Math.ceil(n / 64), 1, 1],
  });
}
