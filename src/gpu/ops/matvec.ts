/**
 * The decode matrix-vector product (`wgsl/matvec.wgsl`): y = W·x for every sequence of a step,
 * with the fusions the plan asks for (a folded SimpleRMSNorm scale, a gate, a second matrix for
 * the SGLU, a bias, a residual add); its layout (`../matvec_tiling.ts`) follows the matrix shape,
 * so results do not depend on the batch. One op per row chunk of the weights.
 * @module
 */

import { LAYOUT_DEFINES } from "../layout.ts";
import { matvecTiling, matvecTilingDefines } from "../matvec_tiling.ts";
import type { Defines } from "../shaders.ts";
import type { GpuMatrix } from "../weights.ts";
import { type OpTarget, type Rows, weightBindings } from "./context.ts";
import { loadKernel, makeOp, type Op } from "./kernel.ts";

/** A matrix-vector product of the decode plan. */
export interface MatvecSpec {
  /** Kernel label, for timing. */
  label: string;
  /** The matrix. */
  w: GpuMatrix;
  /** SGLU: the second matrix (y = (W·x) ⊙ (W2·x)). */
  w2?: GpuMatrix;
  /** Bias of W. */
  bias?: GPUBuffer;
  /** Bias of W2. */
  bias2?: GPUBuffer;
  /** Input rows (one per sequence). */
  input: Rows;
  /** Gate rows multiplied into the input (u ⊙ srms(o)). */
  gate?: Rows;
  /** Output rows. */
  out: Rows;
  /** Fold SimpleRMSNorm of the input into the product. */
  rmsScale: boolean;
  /** Add into the output (the residual). */
  add: boolean;
}

/** The ops of `spec` for batches handled `nb` sequences per workgroup (one per weight chunk). */
export async function matvecOps(t: OpTarget, spec: MatvecSpec, nb: number): Promise<Op[]> {
  const { w, w2, input, gate, out } = spec;
  if (w2 && (w2.rows !== w.rows || w2.cols !== w.cols)) {
    throw new RangeError(
      `matvec ${spec.label}: W2 is ${w2.rows}×${w2.cols}, W ${w.rows}×${w.cols}`,
    );
  }
  const ctx = t.m.ctx;
  const vec8 = w.cols % 8 === 0;
  const tiling = matvecTiling(
    w.rows,
    w.cols,
    nb,
    ctx.info.fallback,
    Boolean(w2),
    ctx.device.limits.maxComputeWorkgroupStorageSize,
    undefined,
    ctx.info.subgroupSize,
    Boolean(gate),
  );
  const x4 = vec8 && [input.stride, input.off ?? 0, gate?.stride ?? 0, gate?.off ?? 0]
    .every((v) => v % 4 === 0);
  const defines: Defines = {
    ...LAYOUT_DEFINES,
    ...matvecTilingDefines(tiling, w.cols),
    X4: x4,
    VEC8: vec8,
    W_DTYPE: w.dtype,
    W2_DTYPE: w2?.dtype ?? "",
    GLU: Boolean(w2),
    GATE: Boolean(gate),
    RMS_SCALE: spec.rmsScale,
    OUT_ADD: spec.add,
    BIAS: Boolean(spec.bias),
  };
  const k = await loadKernel(t.m.pipelines, "matvec", defines);
  const ops: Op[] = [];
  for (let c = 0; c < w.chunks.length; c++) {
    const chunk = w.chunks[c];
    const x = Math.ceil(chunk.rows / tiling.rowsPerWorkgroup);
    ops.push(
      await makeOp(t.res, k, {
        label: spec.label,
        buffers: {
          ctl: t.m.ctl,
          inp: input.buffer,
          inp2: gate?.buffer,
          outp: out.buffer,
          bias: spec.bias,
          bias2: spec.bias && w2 ? spec.bias2 : undefined,
          ...weightBindings("W", w, c),
          ...weightBindings("W2", w2, c),
        },
        values: () => ({
          rows: chunk.rows,
          cols: w.cols,
          row_base: chunk.rowBase,
          in_stride: input.stride,
          in_off: input.off ?? 0,
          in2_stride: gate?.stride ?? 0,
          in2_off: gate?.off ?? 0,
          out_stride: out.stride,
          out_off: out.off ?? 0,
          batch_base: 0,
        }),
        groups: (n) => [x, Math.ceil(n / tiling.nb), 1],
      }),
    );
  }
  return ops;
}
