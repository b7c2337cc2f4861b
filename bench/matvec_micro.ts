/**
 * Microbenchmark of the decode matrix-vector kernel against a plain read kernel and the GEMM, on
 * one bf16 matrix: µs per dispatch (many dispatches in one pass, timed with timestamps), for
 * several tilings and batch sizes. Prints JSON lines.
 *
 *   deno run -A bench/matvec_micro.ts [--shapes 4096x1024,2816x1024g --layouts 1,64,64:8:4:16]
 *     [--cold (each dispatch reads its weights from another of several copies spanning 1 GiB, so
 *      none finds its matrix in the L2 cache, as no layer of a model does)]
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { acquireDevice } from "../src/gpu/device.ts";
import { microBuffers, microMatvec } from "./micro_gpu.ts";
import { GEMM_TILES, gemmGroups, gemmTileDefines } from "../src/gpu/gemm_tiling.ts";
import { PipelineCache } from "../src/gpu/shaders.ts";
import { timePasses } from "../src/gpu/timing.ts";

const args = parseArgs(Deno.args, {
  string: ["shapes", "layouts"],
  boolean: ["no-gemm", "cold"],
});
const ctx = await acquireDevice();
const dev = ctx.device;
const cache = PipelineCache.for(dev);

const { buf, uni } = microBuffers(dev);

async function time(
  pipeline: GPUComputePipeline,
  entries: [number, GPUBuffer][],
  groups: [number, number],
  reps = 200,
  cold?: { binding: number; bytes: number },
): Promise<number> {
  // With `cold`, one bind group per copy of the weights: binding `cold.binding` at offsets a
  // multiple of 256 bytes apart through the whole buffer.
  const stride = cold ? Math.ceil(cold.bytes / 256) * 256 : 0;
  const copies = cold
    ? Math.max(1, Math.floor(entries.find(([b]) => b === cold.binding)![1].size / stride))
    : 1;
  const bgs = Array.from({ length: copies }, (_, k) =>
    dev.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: entries.map(([binding, buffer]) => ({
        binding,
        resource: cold && binding === cold.binding
          ? { buffer, offset: k * stride, size: cold.bytes }
          : { buffer },
      })),
    }));
  let best = Infinity;
  for (let round = 0; round < 3; round++) {
    const [ns] = await timePasses(dev, 1, (pass) => {
      pass.setPipeline(pipeline);
      for (let i = 0; i < reps; i++) {
        if (i < copies || copies > 1) pass.setBindGroup(0, bgs[i % copies]);
        pass.dispatchWorkgroups(groups[0], groups[1]);
      }
    });
    best = Math.min(best, ns / 1000 / reps);
  }
  return best;
}

const rows = 4096, cols = 1024;
const out: Record<string, unknown>[] = [];

// Default: the tiling the model uses at each batch size, then other (sequences, rows) per thread at
// 64. `--shapes` and `--layouts` sweep instead: shapes as ROWSxCOLS with a `g` suffix for the SGLU
// pair, layouts as B (the model's tiling at batch B) or B:NB:RPG:LANES.
type Layout = [number, boolean, { nb: number; rpg: number; lanes?: number }?, string?];
const layouts: Layout[] = [
  [1, false],
  [1, true],
  [8, false],
  [16, false],
  [64, false],
  [64, true],
  ...[[8, 8], [16, 4], [4, 16], [8, 4], [32, 2]].map(([nb, rpg]) =>
    [64, false, { nb, rpg }] as Layout
  ),
  ...[[8, 4], [4, 8], [16, 2], [8, 2]].map(([nb, rpg]) => [64, true, { nb, rpg }] as Layout),
];
const other = (lanes?: number) =>
  [
    [1, false],
    [64, false],
    [1, false, { nb: 1, rpg: 1, lanes }],
    [64, false, { nb: 8, rpg: 8, lanes }],
  ] as Layout[];
// The 128-lane shapes (down and output projections) as chosen and with 32 lanes.
let shapes: [number, number, Layout[]][] = [
  [rows, cols, layouts],
  [1024, 2816, other(32)],
  [1024, 1024, other(32)],
];
if (args.shapes) {
  // A layout may end in flags: `/s` without subgroups, `/g` with the gate input (out_proj).
  const list = String(args.layouts ?? "1,64").split(",").map((l) => {
    const [nums, flags = ""] = l.split("/");
    const [b, nb, rpg, lanes] = nums.split(":").map(Number);
    return [b, nb, rpg, lanes, flags] as [number, number, number, number, string];
  });
  shapes = String(args.shapes).split(",").map((s) => {
    const glu = s.endsWith("g");
    const [r, c] = s.replace(/g$/, "").split("x").map(Number);
    return [
      r,
      c,
      list.map(([b, nb, rpg, lanes, flags]) =>
        [b, glu, nb ? { nb, rpg, lanes } : undefined, flags] as Layout
      ),
    ];
  });
}
const maxElems = Math.max(...shapes.map(([r, c]) => r * c));
const maxCols = Math.max(...shapes.map(([, c]) => c));
const maxRows = Math.max(...shapes.map(([r]) => r));
const coldBytes = args.cold ? Math.min(1 << 30, dev.limits.maxBufferSize) : 0;
const W = buf(Math.max(maxElems * 2, coldBytes)), W2 = buf(Math.max(maxElems * 2, coldBytes));
const X = buf(64 * maxCols * 4), Y = buf(64 * maxRows * 4);
// Plain read: each thread reads vec4<u32> strided, sums, writes one value per workgroup.
{
  const code = `@group(0) @binding(0) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> y: array<u32>;
@compute @workgroup_size(256) fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
  var acc = vec4<u32>(0u);
  let total = arrayLength(&w);
  for (var i = g.x; i < total; i += n.x * 256u) { acc ^= w[i]; }
  if (acc.x == 12345u) { y[g.x] = acc.y; }
}`;
  const m = dev.createShaderModule({ code });
  const p = await dev.createComputePipelineAsync({
    layout: "auto",
    compute: { module: m, entryPoint: "main" },
  });
  for (const wgs of [264, 1056, 4224]) {
    const us = await time(p, [[0, W], [1, Y]], [wgs, 1]);
    out.push({ kernel: "read", workgroups: wgs, us, gbps: W.size / us / 1e3 });
  }
}

for (const [rows, cols, list] of shapes) {
  for (const [B, glu, shape, flags = ""] of list) {
    const mv = await microMatvec(ctx, cache, {
      rows,
      cols,
      batch: B,
      glu,
      gate: flags.includes("g"),
      shape,
      subgroups: !flags.includes("s"),
    });
    const t = mv.tiling;
    const entries: [number, GPUBuffer][] = [[0, mv.params], [1, mv.ctl], [2, X], [4, Y], [5, W]];
    if (glu) entries.push([6, W2]);
    if (flags.includes("g")) entries.push([3, X]);
    const us = await time(
      mv.pipeline,
      entries,
      mv.groups,
      100,
      args.cold ? { binding: 5, bytes: rows * cols * 2 } : undefined,
    );
    out.push({
      kernel: glu ? "matvec-glu" : "matvec",
      rows,
      cols,
      ...t,
      batch: B,
      flags,
      cold: Boolean(args.cold),
      us,
      gbps: (rows * cols * 2 * (glu ? 2 : 1)) / us / 1e3,
    });
  }
}

for (const T of args["no-gemm"] ? [] : [1, 16, 64]) {
  // The default tile (bench/kernels.ts times them all).
  const p = await cache.get("gemm", {
    ...gemmTileDefines(GEMM_TILES[0], true),
    W_DTYPE: "bf16",
    BIAS: false,
    OUT_ADD: false,
  });
  const params = uni([rows, cols, 0, T, cols, 0, rows, 0]);
  const [gx, gy] = gemmGroups(GEMM_TILES[0], rows, T);
  const us = await time(p, [[0, params], [2, X], [4, Y], [5, W]], [gx, gy], 100);
  out.push({ kernel: "gemm", tokens: T, us, tflops: (2 * rows * cols * T) / us / 1e6 });
}
for (const r of out) console.log(JSON.stringify(r));
