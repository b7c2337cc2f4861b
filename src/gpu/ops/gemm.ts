/**
 * The prefill matrix product (`wgsl/gemm.wgsl`): Y[t] = W·A[t] for the tokens of a chunk, tiled
 * as `../gemm_tiling.ts` describes (the tile tuned per shape by `../gemm_tune.ts`), with a bias
 * and an add (residual) epilogue, or the SGLU pair (W·a + b) ⊙ (W2·a + b2) in one product. One op
 * per row chunk of the weights.
 * @module
 */

import { gemmGroups, type GemmTile, gemmTileDefines, gemmVectorized } from "../gemm_tiling.ts";
import type { GpuMatrix } from "../weights.ts";
import { type OpTarget, weightBindings } from "./context.ts";
import { loadKernel, makeOp, type Op } from "./kernel.ts";

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
  const k = await loadKernel(t.m.pipelines, "gemm", {
    ...gemmTileDefines(tile, gemmVectorized(w.cols, input.stride), Boolean(w2)),
    W_DTYPE: w.dtype,
    W2_DTYPE: w2?.dtype ?? "",
    BIAS: Boolean(spec.bias),
    OUT_ADD: Boolean(spec.add),
  });
  const tokens = spec.tokens ?? ((n: number) => n);
  const ops: Op[] = [];
  for (let c = 0; c < w.chunks.length; c++) {
    const chunk = w.chunks[c];
    ops.push(
      await makeOp(t.res, k, {
        label: spec.label,
        buffers: {
          A: input.buffer,
          Y: out.buffer,
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
          out_stride: out.stride,
          out_off: 0,
        }),
        groups: (n) => gemmGroups(tile, chunk.rows, tokens(n), Boolean(w2)),
      }),
    );
  }
  return ops;
}
