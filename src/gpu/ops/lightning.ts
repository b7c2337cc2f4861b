/**
 * Lightning Attention prefill of one layer (`wgsl/lightning.wgsl`), four ops: PREP (activated,
 * LRPE-rotated q′, k′ head-major), KV (each block's decayed kᵀv), SCAN (the state before each
 * block; the slot ends at the final state), OUT (intra-block masked part + inter-block part).
 * @module
 */

import type { Defines } from "../shaders.ts";
import type { OpTarget } from "./context.ts";
import { loadKernel, makeOp, type Op } from "./kernel.ts";

/** Tokens per Lightning block on the GPU. */
export function lightningBlock(headDim: number): number {
  return headDim <= 128 ? 32 : 16;
}

/** The buffers and sizes of one layer's Lightning prefill. */
export interface LightningSpec {
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
  /** The q/k activation's define (e.g. ACT_SILU). */
  activation: string;
  /** LRPE angles of the layer; absent: no LRPE. */
  theta?: GPUBuffer;
  /** [heads] decay rates (λ = exp(-rate)). */
  rates: GPUBuffer;
  /** [T, 4H] q, k, v, u. */
  qkvu: GPUBuffer;
  /** [h][T][dk] q′. */
  qp: GPUBuffer;
  /** [h][T][dk] k′. */
  kp: GPUBuffer;
  /** [h][blocks][dk][dv] per-block KV. */
  kvs: GPUBuffer;
  /** The layer's state pool. */
  state: GPUBuffer;
  /** [T, H] output. */
  o: GPUBuffer;
}

/** The four ops of one layer, in order. */
export async function lightningOps(t: OpTarget, s: LightningSpec): Promise<Op[]> {
  const blk = lightningBlock(s.headDim);
  const lrpe = Boolean(s.theta);
  const base: Defines = { [s.activation]: true, LRPE: lrpe, BLK: blk, BLK2_4: (blk * blk) / 4 };
  const values = (n: number, pos0: number, slot: number) => ({
    tokens: n,
    heads: s.heads,
    head_dim: s.headDim,
    dk: s.dk,
    hidden: s.hidden,
    pos0,
    slot_off: slot * s.slotFloats,
    nblocks: Math.ceil(n / blk),
    lrpe: lrpe ? 1 : 0,
  });
  const spread = (count: number): [number, number, number] => {
    const g = Math.ceil(count / 256);
    return [Math.min(g, 65535), Math.ceil(g / 65535), 1];
  };
  const stage = async (
    name: string,
    define: string,
    buffers: Record<string, GPUBuffer | undefined>,
    groups: Op["groups"],
  ) =>
    await makeOp(t.res, await loadKernel(t.m.pipelines, "lightning", { ...base, [define]: true }), {
      label: `lightning.${name}`,
      buffers,
      values,
      groups,
    });
  return [
    await stage(
      "prep",
      "STAGE_PREP",
      { qkvu: s.qkvu, qp: s.qp, kp: s.kp, theta: s.theta },
      (n) => spread(n * s.hidden),
    ),
    await stage(
      "kv",
      "STAGE_KV",
      { rates: s.rates, qkvu: s.qkvu, kp: s.kp, kvs: s.kvs },
      // A thread per 8 key dims × 2 vec4 columns (dk·hd/64 of a block), 128 a workgroup.
      (n) => [Math.ceil((s.dk * s.headDim) / 64 / 128), Math.ceil(n / blk), s.heads],
    ),
    await stage(
      "scan",
      "STAGE_SCAN",
      { rates: s.rates, kvs: s.kvs, state: s.state },
      () => spread(s.heads * s.dk * s.headDim),
    ),
    await stage(
      "out",
      "STAGE_OUT",
      { rates: s.rates, qkvu: s.qkvu, qp: s.qp, kp: s.kp, kvs: s.kvs, o: s.o },
      (n) => [Math.ceil(n / blk), s.heads, 1],
    ),
  ];
}
