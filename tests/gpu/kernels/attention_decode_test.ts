/**
 * The recurrent decode step (`wgsl/attention_decode.wgsl`: S = λ·S + kᵀv, o = q·S, with the
 * activation and LRPE of q and k) against the CPU reference (`recurrentStep`): head dims 16 to
 * 128 (block widths of 8 to 128 columns), the doubled LRPE width, positions far out. Tolerance:
 * 2e-5 relative; the narrow blocks of small batches give the wide blocks' bits.
 */

import { recurrentStep } from "../../../src/cpu/attention.ts";
import assert from "node:assert/strict";
import { activate } from "../../../src/cpu/kernels.ts";
import { attentionDecodeLayout } from "../../../src/gpu/ops/mod.ts";
import { assertClose, randomF32, runKernel } from "../harness.ts";
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
  "kernel attention_decode: head dims 16 to 128, LRPE width, positions far out",
  async (ctx) => {
    for (const hd of [16, 24, 32, 64, 96, 128]) {
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
        // Narrow and wide blocks: the same row groups, so the same bits.
        const run = async (wide: boolean) => {
          const lay = attentionDecodeLayout(hd, wide, dk);
          return await runKernel(
            ctx,
            "attention_decode",
            {
              ROW_WORDS: 16,
              ACT_SILU: true,
              LRPE: lrpe,
              RG: lay.rg,
              CT: lay.ct,
              VEC4: lay.vw === 4,
              DK: dk,
              U: lay.u,
            },
            bindings,
            [heads * lay.blocks, B],
          );
        };
        const [out, narrow] = [await run(true), await run(false)];
        for (const k of [4, 5]) {
          assert.deepEqual(new Uint32Array(narrow[k]), new Uint32Array(out[k]), `hd ${hd} ${k}`);
        }
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
