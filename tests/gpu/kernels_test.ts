/**
 * Every WGSL kernel against the CPU reference on random inputs: shapes off the tile sizes, all
 * weight dtypes, head dims 32/64/128 with and without the doubled LRPE width, block boundaries;
 * plus the invariances the engine relies on (decode is batch-invariant, prefill chunk-invariant).
 */

import assert from "node:assert/strict";
import { decayPowers, lightningPrefill, recurrentStep } from "../../src/cpu/attention.ts";
import { activate, linear } from "../../src/cpu/kernels.ts";
import type { RngState } from "../../src/engine/rng.ts";
import {
  type ResolvedSamplingParams,
  Sampler,
  type SamplingParams,
  TokenHistory,
  validateSamplingParams,
} from "../../src/engine/sampler.ts";
import { ARGMAX_BLOCK } from "../../src/gpu/layout.ts";
import { matvecTiling, matvecTilingDefines } from "../../src/gpu/matvec_tiling.ts";
import { encodeWeights, randomF32, runKernel, storageBuffer } from "./harness.ts";
import { gpuTest } from "./support.ts";
import {
  sampleDefines,
  type SampleShape,
  sampleShape,
  sampleThreads,
} from "../../src/gpu/sample_code.ts";

type DType = "f32" | "bf16" | "f16" | "q8";

/** Running on the GL backend (llvmpipe), where large workgroup arrays compile very slowly. */
const GL = Deno.env.get("DENO_WEBGPU_BACKEND") === "gl";

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
  /** Read the inputs as scalars even where vec4 loads would do (the unaligned-input path). */
  scalarInput?: boolean;
  /** Force the lane-tree mode (default: the tiling's choice). */
  serial?: boolean;
  /** Workgroup memory to tile for (default: the adapter's limit; less forces several rounds). */
  storage?: number;
  /** Force the lanes per row (one row per lane group) instead of the tiling's choice. */
  lanes?: number;
  /** Reduce the lanes with subgroup shuffles (needs lanes ≤ the subgroup size). */
  subgroup?: boolean;
}

async function matvec(
  ctx: Parameters<Parameters<typeof gpuTest>[1]>[0],
  c: MatvecCase,
  seed: number,
) {
  const { rows, cols, batch: B } = c;
  const w = encodeWeights(randomF32(rows * cols, seed, 0.5), c.dtype, rows);
  const w2 = encodeWeights(randomF32(rows * cols, seed + 1, 0.5), c.dtype, rows);
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
  if (w.scales) bindings[9] = { data: w.scales };
  if (w2.scales && c.glu) bindings[10] = { data: w2.scales };
  // The layout of real GPUs (lanes up to 256, several rows per lane group) is
  // tested wherever compiles are quick; GL on llvmpipe gets the small layout it uses in practice.
  const tiling = matvecTiling(
    rows,
    cols,
    c.nb,
    GL,
    Boolean(c.glu),
    c.storage ?? ctx.device.limits.maxComputeWorkgroupStorageSize,
    c.lanes ? { nb: c.nb, rpg: 1, lanes: c.lanes } : undefined,
  );
  if (c.serial !== undefined) tiling.serial = c.serial;
  if (c.subgroup !== undefined) tiling.subgroup = c.subgroup;
  const out = await runKernel(
    ctx,
    "matvec",
    {
      ...matvecTilingDefines(tiling, cols, {
        glu: Boolean(c.glu),
        gate: Boolean(c.gate),
        x4: cols % 8 === 0 && !c.scalarInput,
      }),
      VEC8: cols % 8 === 0,
      X4: cols % 8 === 0 && !c.scalarInput,
      W_DTYPE: c.dtype,
      W2_DTYPE: c.glu ? c.dtype : "",
      GLU: Boolean(c.glu),
      GATE: Boolean(c.gate),
      RMS_SCALE: Boolean(c.rms),
      OUT_ADD: Boolean(c.add),
      BIAS: Boolean(c.bias),
    },
    bindings,
    [Math.ceil(rows / tiling.rowsPerWorkgroup), Math.ceil(B / tiling.nb)],
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

gpuTest(
  "kernel matvec: dtypes (q8 too), odd shapes, fused norm/gate/GLU/bias/residual",
  async (ctx) => {
    // Every shape with every dtype; the flag sets rotate over the shapes (each pipeline variant
    // compiles once, which keeps the software GL adapter's compile time in bounds).
    const shapes = [[1, 8], [7, 24], [37, 64], [300, 256], [9, 5], [13, 37], [3, 2048], [1100, 40]];
    const flagSets = [
      {},
      { rms: true },
      { rms: true, gate: true, add: true },
      { rms: true, glu: true, bias: true },
      { bias: true, add: true },
    ];
    let seed = 1;
    for (const dtype of ["f32", "bf16", "f16", "q8"] as const) {
      for (let i = 0; i < shapes.length; i++) {
        for (const k of [0, 1]) {
          const [rows, cols] = shapes[i];
          const shift = { f32: 0, bf16: 1, f16: 3, q8: 2 }[dtype];
          const flags = flagSets[(i + 2 * k + shift) % flagSets.length];
          const c = { rows, cols, batch: 3, nb: 2, dtype, scalarInput: k === 1, ...flags };
          const { got, want } = await matvec(ctx, c, seed++);
          close(got, want, 2e-5, JSON.stringify(c));
        }
      }
    }
  },
);

gpuTest(
  "kernel matvec: the subgroup lane tree gives the bits of the workgroup-memory tree",
  async (ctx) => {
    const sg = ctx.info.subgroupSize;
    if (!sg) return; // no subgroups here (GL): the backend never builds the subgroup variant
    // Lanes = the subgroup size (the H200 case: 32 lanes, subgroups of 32); odd shapes, the
    // element-wise path, every dtype, fused norm, gate and GLU, batches of 1 to 3.
    const cases: Omit<MatvecCase, "subgroup">[] = [
      { rows: 45, cols: 96, batch: 1, nb: 1, dtype: "bf16", rms: true },
      { rows: 45, cols: 96, batch: 3, nb: 2, dtype: "q8", rms: true, glu: true, bias: true },
      { rows: 13, cols: 37, batch: 2, nb: 1, dtype: "f32", rms: true, gate: true, add: true },
      { rows: 300, cols: 256, batch: 1, nb: 1, dtype: "f16", glu: true },
      { rows: 7, cols: 2048, batch: 2, nb: 2, dtype: "bf16", rms: true },
    ];
    let seed = 500;
    for (const c of cases) {
      const base = { ...c, lanes: sg, serial: false };
      const tree = await matvec(ctx, { ...base, subgroup: false }, seed);
      const shuffled = await matvec(ctx, { ...base, subgroup: true }, seed++);
      const n = c.batch * c.rows;
      close(shuffled.got.subarray(0, n), shuffled.want.subarray(0, n), 2e-5, JSON.stringify(c));
      assert.deepEqual(
        Array.from(shuffled.got.subarray(0, n)),
        Array.from(tree.got.subarray(0, n)),
        JSON.stringify(c),
      );
    }
    // The tiling picks shuffles only where the lanes fit a subgroup and the tree is not serial.
    const t = matvecTiling(1024, 2816, 1, false, false, 16384, undefined, 32);
    assert.equal(t.subgroup, t.lanes <= 32 && !t.serial);
    assert.equal(matvecTiling(1024, 2816, 1, false, false, 16384, undefined, 0).subgroup, false);
    assert.equal(matvecTiling(1024, 2816, 1, false, false, 16384, undefined, 8).subgroup, false);
  },
);

gpuTest(
  "kernel matvec: each sequence's result is the same for every batch size (batch invariance)",
  async (ctx) => {
    // With the same seed, the inputs of a smaller batch are the first rows of the larger one's, so
    // the outputs of those sequences must agree bit for bit whatever the batch size and grouping.
    // The lane tree is reduced either by all lanes together or one sum per thread (SERIAL): both
    // modes are run on each layout. 32 lanes (45×96, GLU; bf16 and q8) and 256 lanes in one
    // group (37×2048).
    const bases = [
      { rows: 45, cols: 96, dtype: "bf16" as DType, rms: true, glu: true },
      { rows: 45, cols: 96, dtype: "q8" as DType, rms: true, glu: true },
      { rows: 37, cols: 2048, dtype: "bf16" as DType, rms: true, glu: false },
    ];
    const layouts = GL
      ? [[1, 1], [2, 2], [9, 2]]
      : [[1, 1], [2, 2], [4, 4], [5, 8], [9, 1], [9, 4], [9, 16], [20, 16]];
    for (const base of bases) {
      const ref = await matvec(ctx, { ...base, batch: 20, nb: GL ? 2 : 8 }, 77);
      for (const [batch, nb] of layouts) {
        // The smallest workgroup memory WebGPU allows splits the sums into several rounds.
        const modes: [boolean, number | undefined][] = [[false, undefined], [true, undefined], [
          true,
          16384,
        ]];
        for (const [serial, storage] of modes) {
          const c = { ...base, batch, nb, serial, storage };
          const r = await matvec(ctx, c, 77);
          const n = batch * base.rows;
          assert.deepEqual(
            Array.from(r.got.subarray(0, n)),
            Array.from(ref.got.subarray(0, n)),
            `${base.rows}×${base.cols}: batch ${batch}, NB ${nb}, serial ${serial}, ${storage}`,
          );
        }
      }
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
          }, [Math.ceil(dk / 64), nblocks, heads]);
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

/** Run the sampler kernel on one row per case; returns the tokens and the rows after. */
async function gpuSample(
  ctx: Parameters<Parameters<typeof gpuTest>[1]>[0],
  logits: Float32Array[],
  params: ResolvedSamplingParams[],
  rng: RngState[],
  extra: {
    budget?: number;
    flags?: number;
    seen?: Uint32Array;
    counts?: Uint32Array;
    outCount?: number[];
    /** Threads and thresholds per search pass (the device's shape unless given). */
    shape?: Partial<SampleShape>;
  } = {},
) {
  const B = logits.length, V = logits[0].length, RW = 16, SW = 8, MAXB = 300;
  const rows = new Uint32Array(B * RW);
  const sp = new ArrayBuffer(B * SW * 4);
  const spf = new Float32Array(sp), spu = new Uint32Array(sp);
  const bias = new Uint32Array(B * MAXB * 2);
  const biasF = new Float32Array(bias.buffer);
  for (let b = 0; b < B; b++) {
    rows[b * RW + 0] = b; // slot
    rows[b * RW + 3] = rng[b].counter;
    rows[b * RW + 5] = extra.outCount?.[b] ?? 0;
    rows[b * RW + 6] = rng[b].seed >>> 0;
    rows[b * RW + 7] = Math.floor(rng[b].seed / 2 ** 32);
    rows[b * RW + 8] = extra.budget ?? 100;
    rows[b * RW + 10] = extra.flags ?? 1;
    const p = params[b];
    spf[b * SW] = p.temperature;
    spu[b * SW + 1] = p.topK;
    spf[b * SW + 2] = p.topP;
    spf[b * SW + 3] = p.minP;
    spf[b * SW + 4] = p.repetitionPenalty;
    spf[b * SW + 5] = p.presencePenalty;
    spf[b * SW + 6] = p.frequencyPenalty;
    spu[b * SW + 7] = p.biasIds.length;
    p.biasIds.forEach((t, i) => {
      bias[(b * MAXB + i) * 2] = t;
      biasF[(b * MAXB + i) * 2 + 1] = p.biasValues[i];
    });
  }
  const all = new Float32Array(B * V);
  logits.forEach((l, b) => all.set(l, b * V));
  const seenWords = Math.ceil(V / 32);
  const blocks = Math.ceil(V / ARGMAX_BLOCK);
  const defines = { ROW_WORDS: RW, SAMPLING_WORDS: SW };
  const kernelParams = new Uint32Array([V, 4, 2, MAXB, seenWords, blocks, 0, 0]);
  // The two stages share every buffer, as in the decode loop.
  const shared = {
    2: storageBuffer(ctx, rows),
    3: storageBuffer(ctx, all),
    7: storageBuffer(ctx, extra.counts ?? B * V * 4),
    8: storageBuffer(ctx, extra.seen ?? B * seenWords * 4),
    9: storageBuffer(ctx, B * blocks * 8),
  };
  const common = {
    0: { data: kernelParams, uniform: true },
    1: { data: new Uint32Array([B, 0, 0, 0]) },
    5: { data: new Float32Array(sp) },
  };
  await runKernel(ctx, "sample_prep", defines, {
    ...common,
    2: { buffer: shared[2] },
    3: { buffer: shared[3] },
    6: { data: bias },
    7: { buffer: shared[7] },
    8: { buffer: shared[8] },
    9: { buffer: shared[9] },
  }, [blocks, B]);
  const out = await runKernel(ctx, "sample", {
    ...defines,
    ...sampleDefines({ ...sampleShape(ctx.info.limits), ...extra.shape }),
  }, {
    ...common,
    2: { buffer: shared[2], read: true },
    3: { buffer: shared[3] },
    4: { data: B * 4 * 4, read: true },
    7: { buffer: shared[7], read: true },
    8: { buffer: shared[8], read: true },
    9: { buffer: shared[9] },
  }, [B]);
  for (const b of Object.values(shared)) b.destroy();
  const r = new Uint32Array(out[2]);
  return {
    tokens: Array.from({ length: B }, (_, b) => r[b * RW + 2]),
    rows: r,
    ring: new Uint32Array(out[4]),
    counts: new Uint32Array(out[7]),
    seen: new Uint32Array(out[8]),
  };
}

gpuTest(
  "kernel sample: the same tokens as the CPU sampler (greedy, temperature, top-k/p, min-p, bias)",
  async (ctx) => {
    const sampler = new Sampler();
    const V = 1000;
    const settings: SamplingParams[] = [
      { temperature: 0 },
      { temperature: 1 },
      { temperature: 0.7, topK: 40 },
      { temperature: 1, topP: 0.9 },
      { temperature: 0.8, topK: 50, topP: 0.95, minP: 0.05 },
      { temperature: 1.3, minP: 0.1 },
      { temperature: 1, topK: 1 },
      { temperature: 0.5, logitBias: { 3: 5, 17: -100, 999: 2 } },
    ];
    for (let seed = 1; seed <= 12; seed++) {
      const logits = settings.map((_, i) => randomF32(V, seed * 31 + i, 4));
      const params = settings.map((p) => validateSamplingParams(p, V));
      const rng = settings.map((_, i) => ({ seed: seed * 1000 + i, counter: seed + i }));
      const gpu = await gpuSample(ctx, logits, params, rng.map((r) => ({ ...r })));
      settings.forEach((p, i) => {
        const r = { ...rng[i] };
        const want = sampler.sample(logits[i], params[i], null, r);
        // The GPU computes the softmax in f32 and the CPU in f64; a draw within rounding of a
        // boundary could differ, but none of these seeds does.
        assert.equal(gpu.tokens[i], want, `seed ${seed} ${JSON.stringify(p)}`);
        assert.equal(
          gpu.rows[i * 16 + 3],
          r.counter,
          `one draw per sampled token, ${JSON.stringify(p)}`,
        );
      });
    }
  },
);

gpuTest(
  "kernel sample: every search arity keeps the same tokens as the binary search (splits 1)",
  async (ctx) => {
    // Several arg-max blocks; cut-offs at the extremes (k = 1, 2, V - 1; p near 0 and 1) and
    // combined with min-p, which the searches start from.
    const V = 2 * ARGMAX_BLOCK + 777;
    const settings: SamplingParams[] = [
      { temperature: 1, topK: 1 },
      { temperature: 1, topK: 2 },
      { temperature: 0.9, topK: 50 },
      { temperature: 1, topK: V - 1 },
      { temperature: 1, topP: 0.01 },
      { temperature: 1.2, topP: 0.5 },
      { temperature: 1, topP: 0.999 },
      { temperature: 0.8, topK: 50, topP: 0.95 },
      { temperature: 1, topK: 200, topP: 0.9, minP: 0.02 },
      { temperature: 1, topP: 0.9, minP: 0.5 },
      { temperature: 1, topK: 5000, minP: 0.3 },
    ];
    const params = settings.map((p) => validateSamplingParams(p, V));
    for (let seed = 1; seed <= 4; seed++) {
      // Logits with many ties (rounded to 1/8) and a long flat tail, as top-k/p must handle.
      const logits = settings.map((_, i) =>
        randomF32(V, seed * 97 + i, 6).map((x, j) => j % 3 === 0 ? -8 : Math.round(x * 8) / 8)
      );
      const rng = () => settings.map((_, i) => ({ seed: seed * 7 + i, counter: 3 * seed }));
      // Equal sums need equal thread counts: each arity against bisection at the most threads
      // its workgroup memory allows (GL's llvmpipe: 32 KiB).
      const binary = new Map<number, number[]>();
      for (const splits of [2, 3, 15]) {
        const threads = sampleThreads(ctx.info.limits, splits);
        if (!binary.has(threads)) {
          const b = await gpuSample(ctx, logits, params, rng(), { shape: { threads, splits: 1 } });
          binary.set(threads, b.tokens);
        }
        const r = await gpuSample(ctx, logits, params, rng(), { shape: { threads, splits } });
        assert.deepEqual(r.tokens, binary.get(threads), `seed ${seed}, ${threads}×${splits}`);
      }
    }
  },
);

gpuTest("kernel sample: greedy ties go to the lowest id", async (ctx) => {
  const V = 1000;
  const a = randomF32(V, 9, 5), b = randomF32(V, 10, 5);
  a[17] = 99;
  a[900] = 99;
  b[999] = 50;
  const greedy = validateSamplingParams({ temperature: 0 }, V);
  const r = await gpuSample(ctx, [a, b], [greedy, greedy], [{ seed: 1, counter: 0 }, {
    seed: 1,
    counter: 0,
  }]);
  assert.deepEqual(r.tokens, [17, 999]);
  assert.deepEqual([r.rows[3], r.rows[16 + 3]], [0, 0], "greedy draws nothing");
  // Several blocks of ids in the first stage: ties across blocks, the maximum in a later block,
  // the last (partial) block, NaN as -inf.
  const W = 2 * ARGMAX_BLOCK + 300;
  const c = randomF32(W, 11, 5), d = randomF32(W, 12, 5), e = randomF32(W, 13, 5);
  c[ARGMAX_BLOCK + 5] = 70;
  c[2 * ARGMAX_BLOCK + 7] = 70;
  d[ARGMAX_BLOCK - 1] = 60;
  d[ARGMAX_BLOCK] = 61;
  e[0] = NaN;
  e[W - 1] = 80;
  const g = validateSamplingParams({ temperature: 0 }, W);
  const rng = () => ({ seed: 1, counter: 0 });
  const r2 = await gpuSample(ctx, [c, d, e], [g, g, g], [rng(), rng(), rng()]);
  assert.deepEqual(r2.tokens, [ARGMAX_BLOCK + 5, ARGMAX_BLOCK, W - 1]);
});

gpuTest(
  "kernel sample: penalties use the slot's history; counts, ring, stop at EOS and budget",
  async (ctx) => {
    const sampler = new Sampler();
    const V = 300;
    const logits = randomF32(V, 5, 3);
    const p = validateSamplingParams({
      temperature: 0.9,
      repetitionPenalty: 1.3,
      presencePenalty: 0.5,
      frequencyPenalty: 0.4,
    }, V);
    const history = new TokenHistory([1, 2, 3, 40, 41], [40, 40, 7, 250]);
    const seen = new Uint32Array(Math.ceil(V / 32));
    for (const t of history.seenIds) seen[t >>> 5] |= 1 << (t & 31);
    const counts = new Uint32Array(V);
    history.generatedIds.forEach((t, i) => (counts[t] = history.generatedCounts[i]));
    const rng = { seed: 99, counter: 7 };
    const gpu = await gpuSample(ctx, [logits], [p], [{ ...rng }], { seen, counts, flags: 3 });
    const want = sampler.sample(logits, p, history, { ...rng });
    assert.equal(gpu.tokens[0], want);
    assert.equal(gpu.counts[want], counts[want] + 1, "generated count of the new token");
    assert.equal((gpu.seen[want >>> 5] >>> (want & 31)) & 1, 1, "seen bit of the new token");
    assert.equal(gpu.ring[0], want);
    assert.deepEqual(
      [gpu.rows[1], gpu.rows[5], gpu.rows[9]],
      [1, 1, 0],
      "position, ring count, not done",
    );
    // End-of-sequence (id 2 here) stops the row; so does a spent budget.
    const eos = new Float32Array(V).fill(-10);
    eos[2] = 10;
    const greedy = validateSamplingParams({ temperature: 0 }, V);
    assert.equal(
      (await gpuSample(ctx, [eos], [greedy], [{ ...rng }])).rows[9],
      1,
      "EOS stops the row",
    );
    assert.equal(
      (await gpuSample(ctx, [eos], [greedy], [{ ...rng }], { flags: 0 })).rows[9],
      0,
      "unless EOS is ignored",
    );
    const spent = await gpuSample(ctx, [logits], [greedy], [{ ...rng }], {
      outCount: [2],
      budget: 3,
      flags: 0,
    });
    assert.equal(spent.rows[9], 1, "the budget stops the row");
    assert.equal(spent.ring[2], spent.tokens[0], "appended at its count");
  },
);
