/**
 * Lightning Attention prefill (`wgsl/lightning.wgsl`: prep, block KV, scan, block output) against
 * the CPU reference (`lightningPrefill` in blocks of 64: any block size gives the same sums): head
 * dims off 32 and up to 256, with and without LRPE, prompts across block boundaries, the slot's
 * final state. Tolerance: 5e-5 relative.
 */

import { decayPowers, lightningPrefill } from "../../../src/cpu/attention.ts";
import { activate } from "../../../src/cpu/kernels.ts";
import { assertClose, randomF32, runKernel, storageBuffer } from "../harness.ts";
import { gpuTest } from "../support.ts";

gpuTest(
  "kernel lightning prefill (prep, block KV, scan, block output): block boundaries, LRPE, head dims",
  async (ctx) => {
    // Head dims off 32 (40: columns past the head), and 256 with the 16-token blocks it gets.
    for (const hd of [32, 40, 64, 128, 256]) {
      for (const lrpe of [false, true]) {
        for (const T of [1, 31, 32, 33, 100]) {
          const heads = 2, H = heads * hd, dk = lrpe ? 2 * hd : hd, blk = hd <= 128 ? 32 : 16;
          const nblocks = Math.ceil(T / blk), pos0 = 17, slot = 1, stride = heads * dk * hd;
          const rates = Float32Array.of(0.05, 0.4);
          const theta = Float32Array.from(
            { length: heads * hd },
            (_, i) => 10000 ** (-(i % hd) / hd) * 1.1,
          );
          const qkvu = randomF32(T * 4 * H, T + hd, 1);
          const state0 = randomF32(2 * stride, 3, 0.3);
          const words = new Uint32Array([
            T,
            heads,
            hd,
            dk,
            H,
            pos0,
            slot * stride,
            nblocks,
            lrpe ? 1 : 0,
            0,
            0,
            0,
          ]);
          const common = { ACT_SILU: true, LRPE: lrpe, BLK: blk, BLK2_4: (blk * blk) / 4 };
          const bq = storageBuffer(ctx, qkvu),
            bqp = storageBuffer(ctx, T * heads * dk * 4),
            bkp = storageBuffer(ctx, T * heads * dk * 4);
          const bkvs = storageBuffer(ctx, nblocks * heads * dk * hd * 4),
            bstate = storageBuffer(ctx, state0);
          const bo = storageBuffer(ctx, T * H * 4),
            brates = storageBuffer(ctx, rates),
            btheta = storageBuffer(ctx, theta);
          const u = { data: words, uniform: true };
          const prep: Parameters<typeof runKernel>[3] = {
            0: u,
            2: { buffer: bq },
            3: { buffer: bqp },
            4: { buffer: bkp },
          };
          if (lrpe) {
            prep[5] = { buffer: btheta };
          }
          await runKernel(ctx, "lightning", { ...common, STAGE_PREP: true }, prep, [
            Math.ceil((T * H) / 256),
          ]);
          await runKernel(ctx, "lightning", { ...common, STAGE_KV: true }, {
            0: u,
            1: { buffer: brates },
            2: { buffer: bq },
            4: { buffer: bkp },
            6: { buffer: bkvs },
          }, [Math.ceil((dk * hd) / 64 / 128), nblocks, heads]);
          await runKernel(ctx, "lightning", { ...common, STAGE_SCAN: true }, {
            0: u,
            1: { buffer: brates },
            6: { buffer: bkvs },
            7: { buffer: bstate },
          }, [Math.ceil((heads * dk * hd) / 256)]);
          const out = await runKernel(ctx, "lightning", { ...common, STAGE_OUT: true }, {
            0: u,
            1: { buffer: brates },
            2: { buffer: bq },
            3: { buffer: bqp },
            4: { buffer: bkp },
            6: { buffer: bkvs },
            8: { buffer: bo, read: true, bytes: T * H * 4 },
          }, [nblocks, heads]);
          const st = await runKernel(ctx, "lightning", { ...common, STAGE_SCAN: true }, {
            0: {
              data: new Uint32Array([T, heads, hd, dk, H, pos0, slot * stride, 0, 0, 0, 0, 0]),
              uniform: true,
            },
            1: { buffer: brates },
            6: { buffer: bkvs },
            7: { buffer: bstate, read: true },
          }, [1]);
          // CPU reference: act + LRPE, then Lightning blocks of 64 (any block size gives the same).
          const q = new Float32Array(heads * T * dk), k = new Float32Array(heads * T * dk);
          for (let t = 0; t < T; t++) {
            const rq = qkvu.slice(t * 4 * H, t * 4 * H + H),
              rk = qkvu.slice(t * 4 * H + H, t * 4 * H + 2 * H);
            activate("silu", rq, 0, H);
            activate("silu", rk, 0, H);
            for (let h = 0; h < heads; h++) {
              for (let i = 0; i < hd; i++) {
                const dst = (h * T + t) * dk;
                if (lrpe) {
                  const a = Math.fround(theta[h * hd + i] * (pos0 + t));
                  q[dst + i] = rq[h * hd + i] * Math.cos(a);
                  q[dst + hd + i] = rq[h * hd + i] * Math.sin(a);
                  k[dst + i] = rk[h * hd + i] * Math.cos(a);
                  k[dst + hd + i] = rk[h * hd + i] * Math.sin(a);
                } else {
                  q[dst + i] = rq[h * hd + i];
                  k[dst + i] = rk[h * hd + i];
                }
              }
            }
          }
          const refState = state0.slice(), refO = new Float32Array(T * H);
          for (let h = 0; h < heads; h++) {
            lightningPrefill(
              refState,
              slot * stride + h * dk * hd,
              dk,
              hd,
              T,
              64,
              decayPowers(rates[h], 64),
              q,
              h * T * dk,
              k,
              h * T * dk,
              dk,
              qkvu,
              2 * H + h * hd,
              4 * H,
              refO,
              h * hd,
              H,
              new Float64Array(hd),
            );
          }
          const what = `hd ${hd} lrpe ${lrpe} T ${T}`;
          assertClose(new Float32Array(out[8]), refO, 5e-5, `o, ${what}`);
          assertClose(new Float32Array(st[7]), refState, 5e-5, `state, ${what}`);
          for (const b of [bq, bqp, bkp, bkvs, bstate, bo, brates, btheta]) b.destroy();
        }
      }
    }
  },
);
