/**
 * The prefill GEMM (`wgsl/gemm.wgsl`) against the CPU reference for every tile the autotuner may
 * choose, every weight dtype, the wide and the element-wise paths, shapes off every tile, all
 * epilogues; every tile gives the same bits; a token's row does not depend on the chunk; the tuner.
 */

import assert from "node:assert/strict";
import { linear } from "../../../src/cpu/kernels.ts";
import type { GpuContext } from "../../../src/gpu/device.ts";
import {
  GEMM_TILES,
  gemmGroups,
  gemmSplitCols,
  gemmSplits,
  type GemmTile,
  gemmTileDefines,
  gemmTilesFor,
  gemmVectorized,
  parseTile,
  tileName,
} from "../../../src/gpu/gemm_tiling.ts";
import { canTune, tuneGemm } from "../../../src/gpu/gemm_tune.ts";
import { PipelineCache } from "../../../src/gpu/shaders.ts";
import {
  assertClose,
  encodeWeights,
  GL,
  randomF32,
  runKernel,
  type WeightDType,
} from "../harness.ts";
import { gpuTest } from "../support.ts";

/**
 * The tiles to test on this adapter: all it runs, except on the GL backend (llvmpipe) only the
 * default: its GL compiler takes minutes over the larger register tiles, and the backend never
 * tunes on a software adapter (`canTune`), so the default is the only tile it runs there. Every
 * tile is tested on lavapipe (Vulkan).
 */
function testTiles(ctx: GpuContext): GemmTile[] {
  const tiles = gemmTilesFor(ctx.device.limits);
  return GL ? tiles.slice(0, 1) : tiles;
}

interface GemmCase {
  rows: number;
  cols: number;
  tokens: number;
  dtype: WeightDType;
  /** Input row stride (default cols) and offset of the first row (default 0). */
  stride?: number;
  off?: number;
  bias?: boolean;
  add?: boolean;
  /** The SGLU pair: (W·a + bias) ⊙ (W2·a + bias2). */
  glu?: boolean;
  /** The plain product of W2 and bias2 instead of W and bias. */
  second?: boolean;
  /** Parts of the inner dimension (SPLIT, then `gemm_reduce.wgsl`). */
  splits?: number;
}

async function gemm(ctx: GpuContext, tile: GemmTile, c: GemmCase, seed: number) {
  const { rows, cols, tokens: T } = c;
  const stride = c.stride ?? cols, off = c.off ?? 0;
  let w = encodeWeights(randomF32(rows * cols, seed, 0.5), c.dtype, rows);
  let w2 = encodeWeights(randomF32(rows * cols, seed + 1, 0.5), c.dtype, rows);
  const a = randomF32(off + T * stride, seed + 2, 1);
  let bias = randomF32(rows, seed + 4, 0.3), bias2 = randomF32(rows, seed + 5, 0.3);
  if (c.second) [w, w2, bias, bias2] = [w2, w, bias2, bias];
  const init = randomF32(T * rows, seed + 6, 1);
  const splits = c.splits ?? 1;
  const split = splits > 1;
  const words = [rows, cols, 0, T, stride, off, rows, 0];
  if (split) words.push(gemmSplitCols(cols, splits));
  const bindings: Parameters<typeof runKernel>[3] = {
    0: { data: new Uint32Array(words), uniform: true },
    2: { data: a },
    4: split ? { data: splits * T * rows * 4, read: true } : {
      data: c.add ? init : T * rows * 4,
      read: true,
    },
    5: { data: w.bytes },
  };
  if (c.bias && !split) bindings[7] = { data: bias };
  if (w.scales) bindings[9] = { data: w.scales };
  if (c.glu) bindings[6] = { data: w2.bytes };
  if (c.glu && c.bias) bindings[8] = { data: bias2 };
  if (c.glu && w2.scales) bindings[10] = { data: w2.scales };
  let out = await runKernel(
    ctx,
    "gemm",
    {
      ...gemmTileDefines(tile, gemmVectorized(cols, stride), Boolean(c.glu), split),
      W_DTYPE: c.dtype,
      W2_DTYPE: c.glu ? c.dtype : "",
      BIAS: Boolean(c.bias) && !split,
      OUT_ADD: Boolean(c.add) && !split,
    },
    bindings,
    gemmGroups(tile, rows, T, c.glu, splits),
  );
  if (split) {
    const reduce: Parameters<typeof runKernel>[3] = {
      0: { data: new Uint32Array([rows, T, splits, rows, 0]), uniform: true },
      1: { data: new Float32Array(out[4]) },
      2: { data: c.add ? init : T * rows * 4, read: true },
    };
    if (c.bias) reduce[3] = { data: bias };
    const g = Math.ceil((T * rows) / 256);
    out = await runKernel(
      ctx,
      "gemm_reduce",
      { BIAS: Boolean(c.bias), OUT_ADD: Boolean(c.add) },
      reduce,
      [
        g,
      ],
    );
    out[4] = out[2];
  }
  // The reference on the same rows of A (a dense copy).
  const dense = new Float32Array(T * cols);
  for (let t = 0; t < T; t++) {
    dense.set(a.subarray(off + t * stride, off + t * stride + cols), t * cols);
  }
  const y = new Float32Array(T * rows), y2 = new Float32Array(T * rows);
  linear(dense, T, w.exact, c.bias ? bias : null, rows, cols, y);
  linear(dense, T, w2.exact, c.bias ? bias2 : null, rows, cols, y2);
  const want = y.map((v, i) => (c.add ? init[i] + v : c.glu ? v * y2[i] : v));
  return { got: new Float32Array(out[4]), want };
}

gpuTest(
  "gemm: every tile × dtype, wide and element-wise paths, odd shapes, all epilogues",
  async (ctx) => {
    const tiles = testTiles(ctx);
    assert.equal(tiles[0], GEMM_TILES[0], "the default tile fits every device");
    const flagSets = [
      {},
      { bias: true, glu: true },
      { add: true, bias: true },
      { glu: true },
      { splits: 2, add: true, bias: true },
      { splits: 3 },
    ];
    // Wide (cols % 8 == 0): off the tile in every direction, fewer columns than a step, a strided
    // input with an offset (the head's last row); element-wise: cols not a multiple of 8.
    const wide = [
      { rows: 130, cols: 72, tokens: 67 },
      { rows: 3, cols: 8, tokens: 1 },
      { rows: 70, cols: 48, tokens: 9, stride: 52, off: 104 },
    ];
    const narrow = [{ rows: 65, cols: 37, tokens: 130 }, { rows: 1, cols: 5, tokens: 1 }];
    let seed = 300;
    for (const tile of tiles) {
      for (const dtype of ["f32", "bf16", "f16", "q8"] as const) {
        const flags = flagSets[seed % flagSets.length];
        for (const shape of [...wide, ...narrow]) {
          const c = { ...shape, dtype, ...flags };
          const { got, want } = await gemm(ctx, tile, c, seed++);
          assertClose(got, want, 2e-5, `${tileName(tile)} ${JSON.stringify(c)}`);
        }
      }
    }
  },
);

gpuTest(
  "gemm: every tile gives the same bits (each output summed in column order)",
  async (ctx) => {
    const tiles = testTiles(ctx);
    if (tiles.length < 2) return; // GL: one tile, nothing to compare
    for (
      const c of [
        { rows: 150, cols: 96, tokens: 70 },
        { rows: 33, cols: 45, tokens: 20 },
        { rows: 70, cols: 136, tokens: 33, splits: 2, add: true },
      ]
    ) {
      const ref = await gemm(ctx, tiles[0], { ...c, dtype: "bf16", bias: true }, 11);
      for (const tile of tiles.slice(1)) {
        const r = await gemm(ctx, tile, { ...c, dtype: "bf16", bias: true }, 11);
        assert.deepEqual(Array.from(r.got), Array.from(ref.got), `${tileName(tile)} ${c.cols}`);
      }
    }
  },
);

gpuTest(
  "gemm: the SGLU pair in one product gives the bits of the two products multiplied",
  async (ctx) => {
    // (W·a + b) and (W2·a + b2) are the plain products' sums (column order, one thread each), so
    // the pair is their f32 product exactly: what two passes (write, then multiply in) gave.
    for (const tile of testTiles(ctx)) {
      for (
        const [c, dtype] of [[{ rows: 70, cols: 48, tokens: 67 }, "bf16"], [
          { rows: 33, cols: 45, tokens: 5 },
          "q8",
        ]] as const
      ) {
        const base = { ...c, dtype, bias: true };
        const pair = await gemm(ctx, tile, { ...base, glu: true }, 21);
        const one = await gemm(ctx, tile, base, 21);
        const two = await gemm(ctx, tile, { ...base, second: true }, 21);
        const want = one.got.map((v, i) => Math.fround(v * two.got[i]));
        assert.deepEqual(Array.from(pair.got), Array.from(want), `${tileName(tile)} ${dtype}`);
      }
    }
  },
);

gpuTest("gemm: a token's row does not depend on how many tokens share the chunk", async (ctx) => {
  // The inputs of a shorter chunk are a prefix of the longer one's (same generator, same seed).
  const tiles = testTiles(ctx);
  for (const [tile, splits] of [[tiles[0], 1], [tiles.at(-1)!, 1], [tiles[0], 2]] as const) {
    const c = { rows: 70, cols: 48, dtype: "bf16", splits } as const;
    const big = await gemm(ctx, tile, { ...c, tokens: 130 }, 5);
    for (const tokens of [1, 64, 65, 100]) {
      const small = await gemm(ctx, tile, { ...c, tokens }, 5);
      assert.deepEqual(
        Array.from(small.got),
        Array.from(big.got.subarray(0, tokens * 70)),
        `${tileName(tile)} (${splits} parts): ${tokens} tokens`,
      );
    }
  }
});

gpuTest("gemm tuner: times every tile the device runs and keeps the fastest", async (ctx) => {
  // Timed even on lavapipe here (the backend skips tuning there: `canTune`); not on GL (above).
  if (!ctx.device.features.has("timestamp-query") || GL) return;
  const pipelines = PipelineCache.for(ctx.device);
  const shape = { rows: 64, cols: 64, dtype: "bf16" as const, tokens: 64 };
  const r = await tuneGemm(ctx, pipelines, shape, 1);
  const tiles = gemmTilesFor(ctx.device.limits);
  assert.deepEqual(r.times.map((t) => tileName(t.tile)), tiles.map(tileName));
  // The SGLU pair is tuned on its own.
  const pair = await tuneGemm(ctx, pipelines, { ...shape, glu: true }, 1);
  assert.notEqual(pair, r);
  assert.deepEqual(pair.times.map((t) => tileName(t.tile)), tiles.map(tileName));
  const best = Math.min(...r.times.map((t) => t.us));
  assert.equal(r.times.find((t) => t.tile === r.tile)!.us, best);
  assert.ok(r.times.every((t) => t.us > 0 && Number.isFinite(t.us)));
  assert.equal(await tuneGemm(ctx, pipelines, shape, 1), r, "cached by adapter and shape");
  assert.equal(canTune(ctx), !ctx.info.fallback);
});

Deno.test("gemm tiles: valid shapes, limits respected, the default fits WebGPU's minimums", () => {
  for (const t of GEMM_TILES) gemmTileDefines(t, true);
  const minimum = {
    maxComputeInvocationsPerWorkgroup: 256,
    maxComputeWorkgroupSizeX: 256,
    maxComputeWorkgroupStorageSize: 16384,
  } as GPUSupportedLimits;
  const fit = gemmTilesFor(minimum);
  assert.equal(fit[0], GEMM_TILES[0]);
  assert.ok(fit.every((t) => 2 * t.bk * (t.bm + t.bn) * 4 <= 16384));
  for (const t of GEMM_TILES) gemmTileDefines(t, true, true);
  assert.deepEqual(gemmGroups(GEMM_TILES[0], 65, 1, true), [3, 1, 1], "32 output rows per tile");
  assert.throws(() => gemmTileDefines({ bm: 64, bn: 64, bk: 12, tm: 4, tn: 4 }, true));
  assert.deepEqual(gemmGroups(GEMM_TILES[0], 65, 1), [2, 1, 1]);
  assert.equal(gemmVectorized(72, 52), true);
  assert.equal(gemmVectorized(37, 37), false);
  for (const t of GEMM_TILES) assert.deepEqual(parseTile(tileName(t)), t);
  // Split: outputs of at most 1,024 rows over at least 512 columns (the 385M's out_proj and
  // down_proj, the 6M's down_proj); parts end on multiples of 32 columns.
  assert.deepEqual(
    [[1024, 1024], [1024, 2816], [4096, 1024], [2816, 1024], [256, 256], [256, 704]].map((
      [r, c],
    ) => gemmSplits(r, c)),
    [2, 2, 1, 1, 1, 2],
  );
  assert.deepEqual([gemmSplitCols(2816, 2), gemmSplitCols(704, 2), gemmSplitCols(37, 2)], [
    1408,
    352,
    32,
  ]);
  assert.throws(() => gemmTileDefines(GEMM_TILES[0], true, true, true), /not split/);
  assert.throws(() => parseTile("128x128/8x8"), /BMxBNxBK\/TMxTN/);
});
