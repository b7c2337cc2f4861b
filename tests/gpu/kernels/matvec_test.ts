/**
 * The decode matrix-vector kernel (`wgsl/matvec.wgsl`) against the CPU reference (`linear`):
 * every weight dtype, odd shapes, the fused norm, gate, SGLU, bias and residual epilogues; the
 * subgroup lane tree gives the workgroup tree's bits; each sequence's result is the same for every
 * batch size (batch invariance). Tolerance: 2e-5 relative (f32 sums of exact f32 weights).
 */

import assert from "node:assert/strict";
import { linear } from "../../../src/cpu/kernels.ts";
import { matvecTiling, matvecTilingDefines } from "../../../src/gpu/matvec_tiling.ts";
import {
  assertClose,
  encodeWeights,
  GL,
  randomF32,
  runKernel,
  type WeightDType,
} from "../harness.ts";
import { gpuTest } from "../support.ts";

interface MatvecCase {
  rows: number;
  cols: number;
  batch: number;
  nb: number;
  dtype: WeightDType;
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
  /** Force the lanes per row instead of the tiling's choice. */
  lanes?: number;
  /** Rows per lane group where `lanes` is forced (default 1). */
  rpg?: number;
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
    c.lanes ? { nb: c.nb, rpg: c.rpg ?? 1, lanes: c.lanes } : undefined,
  );
  if (c.serial !== undefined) tiling.serial = c.serial;
  if (c.subgroup !== undefined) tiling.subgroup = c.subgroup;
  const out = await runKernel(
    ctx,
    "matvec",
    {
      ...matvecTilingDefines(tiling, cols),
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
          assertClose(got, want, 2e-5, JSON.stringify(c));
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
      // Many sums per lane (the batched layouts): lists split between lanes while even (24 sums:
      // 12, 6, 3), then added whole (28: 14, 7, 7; 15: whole from the start).
      { rows: 45, cols: 96, batch: 9, nb: 8, rpg: 1, dtype: "bf16", rms: true, glu: true },
      { rows: 45, cols: 96, batch: 9, nb: 4, rpg: 3, dtype: "q8", rms: true, glu: true },
      { rows: 45, cols: 96, batch: 9, nb: 5, rpg: 1, dtype: "f16", rms: true, glu: true },
      { rows: 45, cols: 96, batch: 5, nb: 4, rpg: 4, dtype: "bf16", gate: true, add: true },
    ];
    let seed = 500;
    for (const c of cases) {
      const base = { ...c, lanes: sg, serial: false };
      const tree = await matvec(ctx, { ...base, subgroup: false }, seed);
      const shuffled = await matvec(ctx, { ...base, subgroup: true }, seed++);
      const n = c.batch * c.rows;
      assertClose(
        shuffled.got.subarray(0, n),
        shuffled.want.subarray(0, n),
        2e-5,
        JSON.stringify(c),
      );
      assert.deepEqual(
        Array.from(shuffled.got.subarray(0, n)),
        Array.from(tree.got.subarray(0, n)),
        JSON.stringify(c),
      );
    }
    // The tiling picks shuffles wherever the lanes fit a subgroup.
    const t = matvecTiling(1024, 2816, 1, false, false, 16384, undefined, 32);
    assert.equal(t.subgroup, t.lanes <= 32);
    assert.equal(matvecTiling(4096, 1024, 64, false, true, 16384, undefined, 32).subgroup, true);
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
      { rows: 45, cols: 96, dtype: "bf16" as WeightDType, rms: true, glu: true },
      { rows: 45, cols: 96, dtype: "q8" as WeightDType, rms: true, glu: true },
      { rows: 37, cols: 2048, dtype: "bf16" as WeightDType, rms: true, glu: false },
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
