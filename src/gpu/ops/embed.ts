/**
 * The embedding gather (`wgsl/embed.wgsl`): x[r] = embed_scale · E[token_r], one op per row chunk
 * of the table; the same builder for the decode plan (tokens in the per-sequence rows, count from
 * `ctl`) and the prefill plan (a plain token list, count = the chunk's tokens).
 * @module
 */

import type { GpuMatrix } from "../weights.ts";
import { type OpTarget, weightBindings } from "./context.ts";
import { loadKernel, makeOp, type Op, rowGroups } from "./kernel.ts";

/** An embedding gather. */
export interface EmbedSpec {
  /** The table (tied with the head). */
  table: GpuMatrix;
  /** Scale applied to every gathered row. */
  scale: number;
  /** Output rows [n, dim]. */
  x: GPUBuffer;
  /** Token of row r at `buffer[r·stride + off]` (u32). */
  tokens: { buffer: GPUBuffer; stride: number; off: number };
  /** "ctl": as many rows as sequences in the step (decode); "n": the op's n (prefill). */
  rows: "ctl" | "n";
}

/** The gather ops of `spec`, one per chunk of the table. */
export async function embedOps(t: OpTarget, spec: EmbedSpec): Promise<Op[]> {
  const k = await loadKernel(t.m.pipelines, "embed", { E_DTYPE: spec.table.dtype });
  const fromCtl = spec.rows === "ctl";
  const ops: Op[] = [];
  for (let c = 0; c < spec.table.chunks.length; c++) {
    const chunk = spec.table.chunks[c];
    ops.push(
      await makeOp(t.res, k, {
        label: "embed",
        buffers: {
          ctl: t.m.ctl,
          seqs: spec.tokens.buffer,
          x: spec.x,
          ...weightBindings("E", spec.table, c),
        },
        values: (n) => ({
          dim: spec.table.cols,
          row_base: chunk.rowBase,
          rows: chunk.rows,
          scale: spec.scale,
          tok_stride: spec.tokens.stride,
          tok_off: spec.tokens.off,
          count_from_ctl: fromCtl ? 1 : 0,
          count: fromCtl ? 0 : n,
        }),
        groups: rowGroups,
      }),
    );
  }
  return ops;
}
