/**
 * Every WGSL kernel against the CPU reference on random inputs: shapes off the tile sizes, all
 * weight dtypes, head dims 32/64/128 with and without the doubled LRPE width, block boundaries;
 * plus the invariances the engine relies on (decode is batch-invariant, prefill chunk-invariant).
 */

import assert from "node:assert/strict";
import { decayPowers, lightningPrefill, recurrentStep } from "../../src/cpu/attention.ts";
import { activate, linear } from "../../src/cpu/kernels.ts";
import { encodeWeights, randomF32, runKernel, storageBuffer } from "./harness.ts";
import { gpuTest } from "./support.ts";

type DType = "f32" | "bf16" | "f16";

function close(got: Float32Array, want: ArrayLike<number>, tol: number, what: string): void {
  let worst = 0, at = -1;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]) / Math.max(1, Math.abs(want[i]));
    if (!(d <= worst)) {
      worst = d;
      at = i;
    }
  }
  assert.ok(
    worst <= tol,
    `${what}: element ${at} differs by ${worst} (got ${got[at]}, want ${want[at]})`,
  );
}

interface MatvecCase {
  rows: number;
  cols: number;
  batch: number;
  nb: number;
  dtype: DType;
  rms?: boolean;
  gate?: boolean;
  glu?: boolean;
  bias?: boolean;
  add?: boolean;
}

async function matvec(
  ctx: Parameters<Parameters<typeof gpuTest>[1]>[0],
  c: MatvecCase,
  seed: number,
) {
  const { rows, cols, batch: B } = c;
  const w = encodeWeights(randomF32(rows * cols, seed, 0.5), c.dtype);
  const w2 = encodeWeights(randomF32(rows * cols, seed + 1, 0.5), c.dtype);
  const x = randomF32(B * cols, seed + 2, 2);
  const g = randomF32(B * cols, seed + 3, 1);
  const bias = randomF32(rows, seed + 4, 0.3), bias2 = randomF32(rows, seed + 5, 0.3);
  const init = randomF32(B * rows, seed + 6, 1);
  const bindings: Parameters<typeof runKernel>[3] = {
    0: {
      data: new Uint32Array([rows, cols, 0, cols, 0, cols, 0, rows, 0, 0, 0, 0]),
      uniform: true,
    },
    1: { data: new Uint32Array([B, 0, 0, 0]) },
    2: { data: x },
    4: { data: c.add ? init : B * rows * 4, read: true },
    5: { data: w.bytes },
  };
  if (c.gate) bindings[3] = { data: g };
  if (c.glu) bindings[6] = { data: w2.bytes };
  if (c.bias) bindings[7] = { data: bias };
  if (c.bias && c.glu) bindings[8] = { data: bias2 };
  const out = await runKernel(
    ctx,
    "matvec",
    {
      LANES: 32,
      NB: c.nb,
      VEC8: cols % 8 === 0,
      W_DTYPE: c.dtype,
      W2_DTYPE: c.glu ? c.dtype : "",
      GLU: Boolean(c.glu),
      GATE: Boolean(c.gate),
      RMS_SCALE: Boolean(c.rms),
      OUT_ADD: Boolean(c.add),
      BIAS: Boolean(c.bias),
    },
    bindings,
    [Math.ceil(rows / 8), Math.ceil(B / c.nb)],
  );
  // Reference: y = scale·(W·in) + b, in = x (⊙ g).
  const inp = c.gate ? x.map((v, i) => v * g[i]) : x;
  const y1 = new Float32Array(B * rows), y2 = new Float32Array(B * rows);
  linear(inp, B, w.exact, null, rows, cols, y1);
  linear(inp, B, w2.exact, null, rows, cols, y2);
  const want = new Float64Array(B * rows);
  for (let b = 0; b < B; b++) {
    let ss = 0;
    for (let i = 0; i < cols; i++) ss += x[b * cols + i] ** 2;
    const scale = c.rms ? 1 / Math.sqrt(ss / cols + 1e-6) : 1;
    for (let r = 0; r < rows; r++) {
      let v = y1[b * rows + r] * scale + (c.bias ? bias[r] : 0);
      if (c.glu) v *= y2[b * rows + r] * scale + (c.bias ? bias2[r] : 0);
      want[b * rows + r] = (c.add ? init[b * rows + r] : 0) + v;
    }
  }
  return { got: new Float32Array(out[4]), want };
}

gpuTest("kernel matvec: dtypes, odd shapes, fused norm/gate/GLU/bias/residual", async (ctx) => {
  let seed = 1;
  for (const dtype of ["f32", "bf16", "f16"] as const) {
    for (const [rows, cols] of [[1, 8], [7, 24], [37, 64], [300, 256], [9, 5], [13, 37]]) {
      for (
        const flags of [{}, { rms: true }, { rms: true, gate: true, add: true }, {
          rms: true,
          glu: true,
          bias: true,
        }, { bias: true, add: true }]
      ) {
        const c = { rows, cols, batch: 3, nb: 2, dtype, ...flags };
        const { got, want } = await matvec(ctx, c, seed++);
        close(got, want, 2e-5, JSON.stringify(c));
      }
    }
  }
});

gpuTest(
  "kernel matvec: each sequence's result is the same for every batch size (batch invariance)",
  async (ctx) => {
    // With the same seed, the inputs of a smaller batch are the first rows of the larger one's, so
    // the outputs of those sequences must agree bit for bit whatever the batch size and grouping.
    const base = { rows: 45, cols: 96, dtype: "bf16" as DType, rms: true, glu: true };
    const ref = await matvec(ctx, { ...base, batch: 9, nb: 8 }, 77);
    for (const [batch, nb] of [[1, 1], [2, 2], [4, 4], [5, 8], [9, 1], [9, 4]]) {
      const r = await matvec(ctx, { ...base, batch, nb }, 77);
      const n = batch * base.rows;
      assert.deepEqual(
        Array.from(r.got.subarray(0, n)),
        Array.from(ref.got.subarray(0, n)),
        `batch ${batch}, NB ${nb}`,
      );
    }
  },
);

interface GemmCase {
  rows: number;
  cols: number;
  tokens: number;
  dtype: DType;
  glu?: boolean;
  bias?: boolean;
  add?: boolean;
}

async function gemm(ctx: Parameters<Parameters<typeof gpuTest>[1]>[0], c: GemmCase, seed: number) {
  const { rows, cols, tokens: T } = c;
  const w = encodeWeights(randomF32(rows * cols, seed, 0.5), c.dtype);
  const w2 = encodeWeights(randomF32(rows * cols, seed + 1, 0.5), c.dtype);
  const a = randomF32(T * cols, seed + 2, 1);
  const bias = randomF32(rows, seed + 4, 0.3), bias2 = randomF32(rows, seed + 5, 0.3);
  const init = randomF32(T * rows, seed + 6, 1);
  const bindings: Parameters<typeof runKernel>[3] = {
    0: { data: new Uint32Array([rows, cols, 0, T, cols, 0, rows, 0]), uniform: true },
    2: { data: a },
    4: { data: c.add ? init : T * rows * 4, read: true },
    5: { data: w.bytes },
  };
  if (c.glu) bindings[6] = { data: w2.bytes };
  if (c.bias) bindings[7] = { data: bias };
  if (c.bias && c.glu) bindings[8] = { data: bias2 };
  const out = await runKernel(
    ctx,
    "gemm",
    {
      W_DTYPE: c.dtype,
      W2_DTYPE: c.glu ? c.dtype : "",
      GLU: Boolean(c.glu),
      BIAS: Boolean(c.bias),
      OUT_ADD: Boolean(c.add),
    },
    bindings,
    [Math.ceil(rows / 64), Math.ceil(T / 64)],
  );
  const y1 = new Float32Array(T * rows), y2 = new Float32Array(T * rows);
  linear(a, T, w.exact, c.bias ? bias : null, rows, cols, y1);
  linear(a, T, w2.exact, c.bias ? bias2 : null, rows, cols, y2);
  const want = y1.map((v, i) => (c.add ? init[i] : 0) + (c.glu ? v * y2[i] : v));
  return { got: new Float32Array(out[4]), want };
}

gpuTest("kernel gemm: dtypes, shapes off the 64×64×16 tile, GLU/bias/residual", async (ctx) => {
  let seed = 100;
  for (const dtype of ["f32", "bf16", "f16"] as const) {
    for (
      const [rows, cols, tokens] of [[1, 5, 1], [65, 16, 63], [129, 37, 65], [64, 64, 130], [
        3,
        200,
        7,
      ]]
    ) {
      for (const flags of [{}, { glu: true, bias: true }, { add: true, bias: true }]) {
        const c = { rows, cols, tokens, dtype, ...flags };
        const { got, want } = await gemm(ctx, c, seed++);
        close(got, want, 2e-5, JSON.stringify(c));
      }
    }
  }
});

gpuTest(
  "kernel gemm: a token's row does not depend on how many tokens share the chunk",
  async (ctx) => {
    // The inputs of a shorter chunk are a prefix of the longer one's (same generator, same seed).
    const big = await gemm(ctx, { rows: 70, cols: 48, tokens: 130, dtype: "bf16" }, 5);
    for (const tokens of [1, 64, 65, 100]) {
      const small = await gemm(ctx, { rows: 70, cols: 48, tokens, dtype: "bf16" }, 5);
      assert.deepEqual(
        Array.from(small.got),
        Array.from(big.got.subarray(0, tokens * 70)),
        `${tokens} tokens`,
      );
    }
  },
);

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
  "kernel attention_decode: head dims 32/64/128, LRPE width, positions far out",
  async (ctx) => {
    for (const hd of [32, 64, 128]) {
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
        const rows = new Uint32Array(B * 8);
        const slotOf = [2, 0], posOf = [5, 40000];
        for (let b = 0; b < B; b++) {
          rows[b * 8] = slotOf[b];
          rows[b * 8 + 1] = posOf[b];
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
            ROW_WORDS: 8,
            ACT_SILU: true,
            LRPE: lrpe,
            WG: Math.max(32, hd),
            MAX_DK: 2 * hd,
          },
          bindings,
          [heads, B],
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
            close(
              gotO.subarray(b * H + h * hd, b * H + h * hd + hd),
              o,
              2e-5,
              `o hd ${hd} lrpe ${lrpe} b ${b} h ${h}`,
            );
          }
        }
        close(gotS, refState, 2e-6, `state hd ${hd} lrpe ${lrpe}`);
      }
    }
  },
);

gpuTest(
  "kernel lightning prefill (prep, block KV, scan, block output): block boundaries and LRPE",
  async (ctx) => {
    for (const hd of [32, 64, 128]) {
      for (const lrpe of [false, true]) {
        for (const T of [1, 31, 32, 33, 100]) {
          const heads = 2, H = heads * hd, dk = lrpe ? 2 * hd : hd, blk = 32;
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
          const common = { ACT_SILU: true, LRPE: lrpe, BLK: blk, BLK2_4: (blk * blk) / 4, HD: hd };
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
          }, [Math.ceil(dk / 32), nblocks, heads]);
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
          close(new Float32Array(out[8]), refO, 5e-5, `o, ${what}`);
          close(new Float32Array(st[7]), refState, 5e-5, `state, ${what}`);
          for (const b of [bq, bqp, bkp, bkvs, bstate, bo, brates, btheta]) b.destroy();
        }
      }
    }
  },
);

gpuTest(
  "kernel argmax: lowest id wins ties; next token, ring and position updated",
  async (ctx) => {
    const V = 1000, B = 3;
    const logits = randomF32(B * V, 9, 5);
    logits[0 * V + 17] = 99;
    logits[0 * V + 900] = 99;
    logits[2 * V + 999] = 50;
    const rows = new Uint32Array(B * 8);
    rows[1 * 8 + 5] = 2; // sequence 1 already wrote 2 tokens
    const out = await runKernel(ctx, "argmax", { ROW_WORDS: 8 }, {
      0: { data: new Uint32Array([V, 4, 0, 0]), uniform: true },
      1: { data: new Uint32Array([B, 0, 0, 0]) },
      2: { data: rows, read: true },
      3: { data: logits },
      4: { data: B * 4 * 4, read: true },
    }, [B]);
    const r = new Uint32Array(out[2]), ring = new Uint32Array(out[4]);
    const want1 = Array.from(logits.subarray(V, 2 * V)).reduce(
      (bi, v, i, a) => (v > a[bi] ? i : bi),
      0,
    );
    assert.deepEqual([r[2], r[8 + 2], r[16 + 2]], [17, want1, 999]);
    assert.deepEqual([r[1], r[8 + 1], r[16 + 1]], [1, 1, 1]);
    assert.deepEqual([r[5], r[8 + 5], r[16 + 5]], [1, 3, 1]);
    assert.deepEqual([ring[0], ring[4 + 2], ring[8]], [17, want1, 999]);
  },
);
