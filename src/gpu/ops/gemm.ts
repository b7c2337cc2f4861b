/**
 * The prefill matrix product (`wgsl/gemm.wgsl`): Y[t] = W·A[t] for the tokens of a chunk, tiled
 * as `../gemm_tiling.ts` describes (the tile tuned per shape by `../gemm_tune.ts`), with a bias
 * and an add (residual) or multiply (SGLU) epilogue. One op per row chunk of the weights.
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
  /** Add into the output (the residual). */
  add?: boolean;
  /** Multiply into the output (SGLU: g ⊙= a·W2ᵀ). */
  mul?: boolean;
  /** First input float for a chunk of n rows at `from` (default 0). */
  inOff?: (n: number, from: number) => number;
  /** Rows the product runs over for a chunk of n (default n). */
  tokens?: (n: number) => number;
}

/** The ops of `spec`, one per chunk of the matrix. */
export async function gemmOps(t: OpTarget, spec: GemmSpec): Promise<Op[]> {
  const { w, input, out, tile } = spec;
  if (spec.add && spec.mul) throw new RangeError(`gemm ${spec.label}: add and mul both asked`);
  const k = await loadKernel(t.m.pipelines, "gemm", {
    ...gemmTileDefines(tile, gemmVectorized(w.cols, input.stride)),
    W_DTYPE: w.dtype,
    BIAS: Boolean(spec.bias),
    OUT_ADD: Boolean(spec.add),
    OUT_MUL: Boolean(spec.mul),
  });
  const tokens = spec.tokens ?? ((n: number) => n);
  const ops: Op[] = [];
  for (let c = 0; c < w.chunks.length; c++) {
    const chunk = w.chunks[c];
    ops.push(
      await makeOp(t.res, k, {
        label: spec.label,
        buffers: { A: input.buffer, Y: out.buffer, bias: spec.bias, ...weightBindings("W", w, c) },
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
        groups: (n) => gemmGroups(tile, chunk.rows, tokens(n)),
      }),
    );
  }
  return ops;
}
