/**
 * The prefill matrix product (`wgsl/gemm.wgsl`): Y[t] = W·A[t] for the tokens of a chunk, tiled
 * as `../gemm_tiling.ts` describes (the tile tuned per shape by `../gemm_tune.ts`), with a bias
 * and an add (residual) epilogue, or the SGLU pair (W·a + b) ⊙ (W2·a + b2) in one product. One op
 * per row chunk of the weights; a product split along its inner dimension (`gemmSplits`: a
 * function of its shape) writes partial sums to `parts` and one more op adds them
 * (`wgsl/gemm_reduce.wgsl`) with the bias and the residual.
 * @module
 */

import {
  gemmGroups,
  gemmSplitCols,
  gemmSplits,
  type GemmTile,
  gemmTileDefines,
  gemmVectorized,
} from "../gemm_tiling.ts";
import type { GpuMatrix } from "../weights.ts";
import { type OpTarget, weightBindings } from "./context.ts";
import { loadKernel, makeOp, type Op, rowGroups } from "./kernel.ts";

/** A matrix product of the prefill plan. */
export interface GemmSpec {
  /** Kernel label, for timing. */
  label: string;
  /** The matrix. */
  w: GpuMatrix;
  /** Input rows (one per token). */
  input: { buffer: GPUBuffer; stride: number };
  /** Output rows. */
  out: { buffer: GPUBuffer; stride: number };
  /** The tile. */
  tile: GemmTile;
  /** Bias added to every row. */
  bias?: GPUBuffer;
  /** SGLU: the second matrix (y = (W·a + bias) ⊙ (W2·a + bias2)), shaped and chunked as W. */
  w2?: GpuMatrix;
  /** Bias of W2. */
  bias2?: GPUBuffer;
  /** Add into the output (the residual). */
  add?: boolean;
  /** First input float for a chunk of n rows at `from` (default 0). */
  inOff?: (n: number, from: number) => number;
  /** Rows the product runs over for a chunk of n (default n). */
  tokens?: (n: number) => number;
  /**
   * Scratch for the partial sums of a split product (`gemmSplitParts` bytes at the largest token
   * count); needed when `gemmSplits` splits the shape.
   */
  parts?: GPUBuffer;
}

/** Bytes of the partial sums of a `rows` × `cols` product over `tokens` (0: not split). */
export function gemmSplitParts(rows: number, cols: number, tokens: number): number {
  const splits = gemmSplits(rows, cols);
  return splits > 1 ? splits * tokens * rows * 4 : 0;
}

/** The ops of `spec`, one per chunk of the matrix. */
export async function gemmOps(t: OpTarget, spec: GemmSpec): Promise<Op[]> {
  const { w, w2, input, out, tile } = spec;
  if (w2) {
    const same = w2.rows === w.rows && w2.cols === w.cols && w2.dtype === w.dtype &&
      w2.chunks.length === w.chunks.length &&
      w2.chunks.every((c, i) => c.rows === w.chunks[i].rows);
    if (!same) {
      throw new RangeError(
        `gemm ${spec.label}: W2 (${w2.rows}×${w2.cols} ${w2.dtype}) is not laid out as W ` +
          `(${w.rows}×${w.cols} ${w.dtype})`,
      );
    }
    if (spec.add) throw new RangeError(`gemm ${spec.label}: the SGLU product has no residual add`);
    if (Boolean(spec.bias) !== Boolean(spec.bias2)) {
      throw new RangeError(`gemm ${spec.label}: W and W2 need a bias each or neither`);
    }
  }
  const splits = w2 ? 1 : gemmSplits(w.rows, w.cols);
  const split = splits > 1;
  if (split && !spec.parts) {
    throw new RangeError(`gemm ${spec.label}: a split product (${w.rows}×${w.cols}) needs parts`);
  }
  const k = await loadKernel(t.m.pipelines, "gemm", {
    ...gemmTileDefines(tile, gemmVectorized(w.cols, input.stride), Boolean(w2), split),
    W_DTYPE: w.dtype,
    W2_DTYPE: w2?.dtype ?? "",
    BIAS: !split && Boolean(spec.bias),
    OUT_ADD: !split && Boolean(spec.add),
  });
  const tokens = spec.tokens ?? ((n: number) => n);
  // A split product writes its planes of partials as a dense [splits][T][rows] output.
  const target = split ? { buffer: spec.parts!, stride: w.rows } : out;
  const ops: Op[] = [];
  for (let c = 0; c < w.chunks.length; c++) {
    const chunk = w.chunks[c];
    ops.push(
      await makeOp(t.res, k, {
        label: spec.label,
        buffers: {
          A: input.buffer,
          Y: target.buffer,
          bias: spec.bias,
          bias2: w2 ? spec.bias2 : undefined,
          ...weightBindings("W", w, c),
          ...weightBindings("W2", w2, c),
        },
        values: (n, from) => ({
          rows: chunk.rows,
          cols: w.cols,
          row_base: chunk.rowBase,
          tokens: tokens(n),
          in_stride: input.stride,
          in_off: spec.inOff?.(n, from) ?? 0,
          out_stride: target.stride,
          out_off: 0,
          ...(split ? { split_cols: gemmSplitCols(w.cols, splits) } : {}),
        }),
        groups: (n) => gemmGroups(tile, chunk.rows, tokens(n), Boolean(w2), splits),
      }),
    );
  }
  if (split) {
    const reduce = await loadKernel(t.m.pipelines, "gemm_reduce", {
      BIAS: Boolean(spec.bias),
      OUT_ADD: Boolean(spec.add),
    });
    ops.push(
      await makeOp(t.res, reduce, {
        label: spec.label,
        buffers: { part: spec.parts!, Y: out.buffer, bias: spec.bias },
        values: (n) => ({
          rows: w.rows,
          tokens: tokens(n),
          splits,
          out_stride: out.stride,
          out_off: 0,
        }),
        // A thread per output element, workgroups of 256 spread over y past 65,535.
        groups: (n) => rowGroups(Math.ceil((tokens(n) * w.rows) / 256)),
      }),
    );
  }
  return ops;
}
