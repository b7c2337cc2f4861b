/**
 * The recurrent decode step (`wgsl/attention_decode.wgsl`: S = λ·S + kᵀv, o = q·S, with the
 * activation and LRPE of q and k) against the CPU reference (`recurrentStep`): head dims 16 to
 * 128, the doubled LRPE width, positions far out. Tolerance: 2e-5 relative. Its fused output
 * projection (OUT_PROJ: x += srms(o)·(u ⊙ o)·Wᵀ + bias, the last workgroup of a sequence adding
 * the partials) against `linear`, every weight dtype, and the same bits at batch 1 and batch 3.
 */

import assert from "node:assert/strict";
import { recurrentStep } from "../../../src/cpu/attention.ts";
import { activate, linear } from "../../../src/cpu/kernels.ts";
import { assertClose, encodeWeights, randomF32, runKernel, type WeightDType } from "../harness.ts";
import { gpuTest } from "../support.ts";

/** CPU reference of one decode step for one sequence and head (act + LRPE + recurrence). */
function cpuDecodeHead(
  qkvu: Float32Array,
  H: number,
  hd: number,
  h: number,
  lrpe: boolean,
  theta: Float32Array,
  pos: number,
  state: Float32Array,
  sOff: number,
  lambda: number,
): Float32Array {
  const dk = lrpe ? 2 * hd : hd;
  const q = new Float32Array(dk), k = new Float32Array(dk), v = new Float32Array(hd);
  const rq = qkvu.slice(h * hd, h * hd + hd), rk = qkvu.slice(H + h * hd, H + h * hd + hd);
  activate("silu", rq, 0, hd);
  activate("silu", rk, 0, hd);
  for (let i = 0; i < hd; i++) {
    if (lrpe) {
      const a = Math.fround(theta[h * hd + i] * pos);
      q[i] = rq[i] * Math.cos(a);
      q[hd + i] = rq[i] * Math.sin(a);
      k[i] = rk[i] * Math.cos(a);
      k[hd + i] = rk[i] * Math.sin(a);
    } else {
      q[i] = rq[i];
      k[i] = rk[i];
    }
    v[i] = qkvu[2 * H + h * hd + i];
  }
  const o = new Float32Array(hd);
  recurrentStep(state, sOff, dk, hd, lambda, q, 0, k, 0, v, 0, o, 0, new Float64Array(hd));
  return o;
}

gpuTest(
  "kernel attention_decode: head dims 16/32/64/128, LRPE width, positions far out",
  async (ctx) => {
    for (const hd of [16, 32, 64, 128]) {
      for (const lrpe of [false, true]) {
        const heads = 3, B = 2, H = heads * hd, dk = lrpe ? 2 * hd : hd;
        const stride = heads * dk * hd, slots = 3;
        const qkvu = randomF32(B * 4 * H, hd + (lrpe ? 1 : 0), 1.5);
        const state = randomF32(slots * stride, 7, 0.5);
        const theta = Float32Array.from(
          { length: heads * hd },
          (_, i) => 10000 ** (-(i % hd) / hd),
        );
        const decay = Float32Array.of(0.99, 0.9, 0.5);
        const rows = new Uint32Array(B * 16);
        const slotOf = [2, 0], posOf = [5, 40000];
        for (let b = 0; b < B; b++) {
          rows[b * 16] = slotOf[b];
          rows[b * 16 + 1] = posOf[b];
        }
        const bindings: Parameters<typeof runKernel>[3] = {
          0: {
            data: new Uint32Array([heads, hd, dk, H, stride, lrpe ? 1 : 0, 0, 0]),
            uniform: true,
          },
          1: { data: new Uint32Array([B, 0, 0, 0]) },
          2: { data: rows },
          3: { data: qkvu },
          4: { data: state, read: true },
          5: { data: B * H * 4, read: true },
          6: { data: decay },
        };
        if (lrpe) {
          bindings[7] = { data: theta };
        }
        const out = await runKernel(
          ctx,
          "attention_decode",
          {
            ROW_WORDS: 16,
            ACT_SILU: true,
            LRPE: lrpe,
            CB: hd % 32 === 0 ? 32 : 16,
            MAX_DK: 2 * hd,
          },
          bindings,
          [heads * (hd / (hd % 32 === 0 ? 32 : 16)), B],
        );
        const gotO = new Float32Array(out[5]), gotS = new Float32Array(out[4]);
        const refState = state.slice();
        for (let b = 0; b < B; b++) {
          for (let h = 0; h < heads; h++) {
            const o = cpuDecodeHead(
              qkvu.subarray(b * 4 * H),
              H,
              hd,
              h,
              lrpe,
              theta,
              posOf[b],
              refState,
              slotOf[b] * stride + h * dk * hd,
              decay[h],
            );
            assertClose(
              gotO.subarray(b * H + h * hd, b * H + h * hd + hd),
              o,
              2e-5,
              `o hd ${hd} lrpe ${lrpe} b ${b} h ${h}`,
            );
          }
        }
        assertClose(gotS, refState, 2e-6, `state hd ${hd} lrpe ${lrpe}`);
      }
    }
  },
);

/** The fused attention + output projection for `B` sequences; returns x and the states. */
async function attentionOut(
  ctx: Parameters<Parameters<typeof gpuTest>[1]>[0],
  c: { hd: number; heads: number; D: number; lrpe: boolean; dtype: WeightDType; bias: boolean },
  B: number,
  seed: number,
) {
  const { hd, heads, D, lrpe } = c;
  const H = heads * hd, dk = lrpe ? 2 * hd : hd, cb = hd % 32 === 0 ? 32 : hd % 16 === 0 ? 16 : 8;
  const nwg = heads * (hd / cb), stride = heads * dk * hd, slots = 3;
  // Sequence b's inputs do not depend on B (batch invariance is checked on the same rows).
  const qkvu = randomF32(3 * 4 * H, seed, 1.5).subarray(0, B * 4 * H);
  const state = randomF32(slots * stride, seed + 1, 0.5);
  const x = randomF32(3 * D, seed + 2, 1).subarray(0, B * D);
  const w = encodeWeights(randomF32(D * H, seed + 3, 0.5), c.dtype, D);
  const bias = randomF32(D, seed + 4, 0.3);
  const theta = Float32Array.from({ length: heads * hd }, (_, i) => 10000 ** (-(i % hd) / hd));
  const decay = Float32Array.from({ length: heads }, (_, h) => 0.99 - 0.2 * h);
  const rows = new Uint32Array(B * 16);
  const slotOf = [2, 0, 1], posOf = [5, 40000, 77];
  for (let b = 0; b < B; b++) {
    rows[b * 16] = slotOf[b];
    rows[b * 16 + 1] = posOf[b];
  }
  const bindings: Parameters<typeof runKernel>[3] = {
    0: { data: new Uint32Array([heads, hd, dk, H, stride, lrpe ? 1 : 0, 0, D]), uniform: true },
    1: { data: new Uint32Array([B, 0, 0, 0]) },
    2: { data: rows },
    3: { data: qkvu },
    4: { data: state, read: true },
    6: { data: decay },
    8: { data: w.bytes },
    10: { data: x, read: true },
    11: { data: B * nwg * D * 4 },
    12: { data: B * nwg * 4 },
    13: { data: new Uint32Array(B), read: true },
  };
  if (lrpe) bindings[7] = { data: theta };
  if (w.scales) bindings[9] = { data: w.scales };
  if (c.bias) bindings[14] = { data: bias };
  const out = await runKernel(
    ctx,
    "attention_decode",
    {
      ROW_WORDS: 16,
      ACT_SILU: true,
      LRPE: lrpe,
      CB: cb,
      MAX_DK: 2 * hd,
      OUT_PROJ: true,
      NWG: nwg,
      RPT: Math.ceil(D / 256),
      W_DTYPE: c.dtype,
      BIAS: c.bias,
    },
    bindings,
    [nwg, B],
  );
  // Reference: per sequence o from the recurrence, then x + srms(o)·(u ⊙ o)·Wᵀ + bias.
  const refState = state.slice();
  const want = new Float64Array(B * D);
  for (let b = 0; b < B; b++) {
    const o = new Float32Array(H);
    for (let h = 0; h < heads; h++) {
      o.set(
        cpuDecodeHead(
          qkvu.subarray(b * 4 * H),
          H,
          hd,
          h,
          lrpe,
          theta,
          posOf[b],
          refState,
          slotOf[b] * stride + h * dk * hd,
          decay[h],
        ),
        h * hd,
      );
    }
    let ss = 0;
    for (let i = 0; i < H; i++) ss += o[i] * o[i];
    const scale = 1 / Math.sqrt(ss / H + 1e-6);
    const gated = o.map((v, i) => v * qkvu[b * 4 * H + 3 * H + i]);
    const y = new Float32Array(D);
    linear(gated, 1, w.exact, null, D, H, y);
    for (let d = 0; d < D; d++) {
      want[b * D + d] = x[b * D + d] + y[d] * scale + (c.bias ? bias[d] : 0);
    }
  }
  return {
    x: new Float32Array(out[10]),
    state: new Float32Array(out[4]),
    count: new Uint32Array(out[13]),
    want,
    refState,
  };
}

gpuTest(
  "kernel attention_decode OUT_PROJ: fused output projection, every dtype, batch-invariant",
  async (ctx) => {
    const cases = [
      { hd: 16, heads: 3, D: 37, lrpe: true, dtype: "f32", bias: true },
      { hd: 32, heads: 2, D: 300, lrpe: false, dtype: "bf16", bias: false },
      { hd: 64, heads: 2, D: 256, lrpe: true, dtype: "f16", bias: false },
      { hd: 16, heads: 4, D: 520, lrpe: false, dtype: "q8", bias: true },
    ] as const;
    let seed = 11;
    for (const c of cases) {
      const three = await attentionOut(ctx, c, 3, seed);
      const one = await attentionOut(ctx, c, 1, seed);
      seed += 10;
      assertClose(three.x, three.want, 2e-5, `x ${JSON.stringify(c)}`);
      assertClose(three.state, three.refState, 2e-6, `state ${JSON.stringify(c)}`);
      // The last workgroup of each sequence leaves its counter at 0 for the next dispatch.
      assert.deepEqual([...three.count], [0, 0, 0]);
      // Sequence 0 alone gives the same bits as in a batch of three.
      assert.deepEqual(
        new Uint32Array(one.x.buffer.slice(0, c.D * 4)),
        new Uint32Array(three.x.buffer.slice(0, c.D * 4)),
        `batch invariance ${JSON.stringify(c)}`,
      );
    }
  },
);
