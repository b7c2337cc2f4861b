/**
 * The decode step of the decayed linear attention (`wgsl/attention_decode.wgsl`): per sequence
 * and head, S = λ·S + kᵀv and o = q·S, with LRPE in the layers that have it.
 * @module
 */

import { LAYOUT_DEFINES } from "../layout.ts";
import type { Defines } from "../shaders.ts";
import type { OpTarget } from "./context.ts";
import { loadKernel, makeOp, type Op } from "./kernel.ts";

/** The attention step of one layer. */
export interface AttentionDecodeSpec {
  /** Heads. */
  heads: number;
  /** Head width (dv). */
  headDim: number;
  /** Key width of the state (hd, or 2·hd with LRPE). */
  dk: number;
  /** Hidden width H. */
  hidden: number;
  /** Floats per slot in the layer's state buffer. */
  slotFloats: number;
  /** LRPE angles of the layer; absent: no LRPE. */
  theta?: GPUBuffer;
  /** The q/k activation's define (e.g. ACT_SILU). */
  activation: string;
  /** Per-sequence rows (slot, position, ...). */
  rows: GPUBuffer;
  /** [B, 4H] q, k, v, u. */
  qkvu: GPUBuffer;
  /** The layer's state pool. */
  state: GPUBuffer;
  /** [B, H] output. */
  o: GPUBuffer;
  /** [heads] λ. */
  decay: GPUBuffer;
}

/** The attention op of one layer. */
export async function attentionDecodeOp(t: OpTarget, spec: AttentionDecodeSpec): Promise<Op> {
  const hd = spec.headDim;
  if (hd % 8 !== 0) throw new RangeError(`attention: head width ${hd} is not a multiple of 8`);
  const cb = hd % 32 === 0 ? 32 : hd % 16 === 0 ? 16 : 8;
  const lrpe = Boolean(spec.theta);
  const defines: Defines = {
    ...LAYOUT_DEFINES,
    [spec.activation]: true,
    LRPE: lrpe,
    CB: cb,
    MAX_DK: 2 * hd,
  };
  const k = await loadKernel(t.m.pipelines, "attention_decode", defines);
  const x = spec.heads * (hd / cb);
  return await makeOp(t.res, k, {
    label: "attention",
    buffers: {
      ctl: t.m.ctl,
      rows: spec.rows,
      qkvu: spec.qkvu,
      state: spec.state,
      o: spec.o,
      decay: spec.decay,
      theta: spec.theta,
    },
    values: () => ({
      heads: spec.heads,
      head_dim: hd,
      dk: spec.dk,
      hidden: spec.hidden,
      slot_stride: spec.slotFloats,
      lrpe: lrpe ? 1 : 0,
      batch_base: 0,
    }),
    groups: (n) => [x, n, 1],
  });
}
