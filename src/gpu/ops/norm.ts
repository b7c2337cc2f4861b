/**
 * The row norm kernel (`wgsl/norm.wgsl`): SimpleRMSNorm or LayerNorm of each row, optionally
 * multiplied by a gate row; the same builder for the decode plan (rows counted from `ctl`) and the
 * prefill plan (rows = the chunk's tokens).
 * @module
 */

import { loadKernel, makeOp, type Op, rowGroups } from "./kernel.ts";
import type { OpTarget, Rows } from "./context.ts";

/** A norm dispatch: what it normalizes, where to, and how its rows are counted. */
export interface NormSpec {
  /** Kernel label, for timing. */
  label: string;
  /** Row width. */
  dim: number;
  /** Input rows. */
  input: Rows;
  /** Output rows. */
  output: Rows;
  /** LayerNorm weight and bias; null: SimpleRMSNorm. */
  ln: { w: GPUBuffer; b: GPUBuffer } | null;
  /** Gate rows multiplied in after the norm (u ⊙ norm(o)). */
  gate?: Rows;
  /** "ctl": as many rows as sequences in the step (decode); "n": the op's n (prefill). */
  rows: "ctl" | "n";
}

/** The norm op of `spec`. */
export async function normOp(t: OpTarget, spec: NormSpec): Promise<Op> {
  if (spec.dim <= 0) throw new RangeError(`norm ${spec.label}: width ${spec.dim}`);
  const k = await loadKernel(t.m.pipelines, "norm", {
    LAYER_NORM: Boolean(spec.ln),
    GATE: Boolean(spec.gate),
  });
  const fromCtl = spec.rows === "ctl";
  return await makeOp(t.res, k, {
    label: spec.label,
    buffers: {
      ctl: t.m.ctl,
      x: spec.input.buffer,
      y: spec.output.buffer,
      w: spec.ln?.w,
      bias: spec.ln?.b,
      gate: spec.gate?.buffer,
    },
    values: (n) => ({
      dim: spec.dim,
      in_stride: spec.input.stride,
      in_off: spec.input.off ?? 0,
      out_stride: spec.output.stride,
      out_off: spec.output.off ?? 0,
      rows_from_ctl: fromCtl ? 1 : 0,
      rows: fromCtl ? 0 : n,
      gate_stride: spec.gate?.stride ?? 0,
      gate_off: spec.gate?.off ?? 0,
    }),
    groups: rowGroups,
  });
}
