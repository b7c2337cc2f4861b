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

/**
 * How the decode step splits a head's state: `rg` row groups (a thread sums rows i ≡ r mod rg of
 * its columns; 256 / 32, 16 or 8 by the head width, as the additions' order), `ct` threads of `vw`
 * columns each per block of vw·ct columns, `blocks` per head, and `u` rows a thread loads before it
 * updates them. Only `rg` sets the numbers. `wide` (large batches, with workgroups to spare) takes
 * four columns per thread (vec4) in blocks as wide as the head allows, up to 256 threads, 8 rows at
 * a time; otherwise a thread takes one column (`vw` 1) in blocks of 32, 16 or 8 columns, 256
 * threads each, and `NARROW_ROWS` (4) rows at a time: at batch 1 the state's load latency is the
 * kernel's time, and vec4 threads (a quarter as many) were slower there on the H200.
 */
export function attentionDecodeLayout(
  headDim: number,
  wide = true,
  dk = headDim,
): { rg: number; ct: number; vw: number; blocks: number; u: number } {
  if (headDim % 8 !== 0) {
    throw new RangeError(`attention: head width ${headDim} is not a multiple of 8`);
  }
  const unit = headDim % 32 === 0 ? 32 : headDim % 16 === 0 ? 16 : 8;
  const rg = 256 / unit;
  const rows = Math.ceil(dk / rg);
  if (!wide) return { rg, ct: unit, vw: 1, blocks: headDim / unit, u: Math.min(NARROW_ROWS, rows) };
  const m = [4, 2, 1].find((f) => headDim % (unit * f) === 0)!;
  const ct = (unit * m) / 4;
  return { rg, ct, vw: 4, blocks: headDim / (4 * ct), u: Math.min(8, rows) };
}

/** Rows of the state a thread of a narrow block loads before it updates them. */
const NARROW_ROWS = 4;

/** Sequences per workgroup of the decode plan from which the attention takes wide blocks. */
const WIDE_FROM = 8;

/** The attention op of one layer, for the decode plan of `nb` sequences per workgroup. */
export async function attentionDecodeOp(
  t: OpTarget,
  spec: AttentionDecodeSpec,
  nb = 1,
): Promise<Op> {
  const hd = spec.headDim;
  const { rg, ct, vw, blocks, u } = attentionDecodeLayout(hd, nb >= WIDE_FROM, spec.dk);
  const lrpe = Boolean(spec.theta);
  const defines: Defines = {
    ...LAYOUT_DEFINES,
    [spec.activation]: true,
    LRPE: lrpe,
    RG: rg,
    CT: ct,
    VEC4: vw === 4,
    DK: spec.dk,
    U: u,
  };
  const k = await loadKernel(t.m.pipelines, "attention_decode", defines);
  const x = spec.heads * blocks;
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
