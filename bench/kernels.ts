/**
 * Matrix kernels one by one, llm.c style, against the adapter's measured peaks (a plain read of
 * 256 MiB, TB/s; a chain of independent f32 FMAs, TFLOP/s). Each projection of a released shape
 * (qkvu, out_proj, glu, down_proj):
 * - prefill: the GEMM of `wgsl/gemm.wgsl`, every tile the device runs timed with timestamp queries
 *   (the autotuner's own measurement, `src/gpu/gemm_tune.ts`), TFLOP/s, the fastest tile checked
 *   against the CPU reference (`linear`) on 8 tokens;
 * - decode at batch 1: the matrix-vector kernel of `wgsl/matvec.wgsl` in the model's tiling
 *   (SGLU: both weights), µs per dispatch among many in one pass, TB/s of weights, checked
 *   against the CPU reference.
 * Writes `bench/results/kernels_<adapter>[_<label>].json` and `.md`.
 *
 * `--tiles` adds candidate tiles (names as `tileName` writes them) to those the device runs.
 *
 *   deno run -A bench/kernels.ts [--shapes 385M,1B] [--tokens 2048] [--dtypes bf16,q8]
 *     [--tiles 256x128x8/16x8,...]
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { linear } from "../src/cpu/kernels.ts";
import { acquireDevice, type GpuContext } from "../src/gpu/device.ts";
import {
  gemmSplits,
  gemmThreads,
  type GemmTile,
  gemmTileDefines,
  gemmTilesFor,
  gemmWorkgroupBytes,
  parseTile,
  tileName,
} from "../src/gpu/gemm_tiling.ts";
import { tuneGemm } from "../src/gpu/gemm_tune.ts";
import { timePasses } from "../src/gpu/timing.ts";
import { encodeOps, gemmOps, gemmSplitParts } from "../src/gpu/ops/mod.ts";
import { GpuResources } from "../src/gpu/resources.ts";
import { LAYOUT_DEFINES } from "../src/gpu/layout.ts";
import { matvecTiling, matvecTilingDefines } from "../src/gpu/matvec_tiling.ts";
import { PipelineCache } from "../src/gpu/shaders.ts";
import type { GpuDType, GpuMatrix } from "../src/gpu/weights.ts";
import { dequantizeInt8, quantizeInt8 } from "../src/model/quantize.ts";
import { RELEASED_SHAPES } from "../src/model/random_weights.ts";
import { f32ToBf16 } from "../src/model/weights/dtype.ts";

const RESULTS = new URL("./results/", import.meta.url);

/** Deterministic values in [-scale, scale]. */
function random(n: number, seed: number, scale: number): Float32Array {
  let s = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = ((s >>> 0) / 4294967296 * 2 - 1) * scale;
  }
  return out;
}

/** Weights in a dtype: the bytes, the exact values the kernel computes with, q8's scales. */
function encode(v: Float32Array, dtype: GpuDType, rows: number) {
  if (dtype === "q8") {
    const q = quantizeInt8(v, rows, v.length / rows);
    return { bytes: new Uint8Array(q.q.buffer), exact: dequantizeInt8(q), scales: q.scales };
  }
  if (dtype !== "bf16") throw new Error(`--dtypes: bf16 or q8, not ${dtype}`);
  const h = new Uint16Array(v.length);
  const u = new Uint32Array(v.length);
  for (let i = 0; i < v.length; i++) {
    h[i] = f32ToBf16(v[i]);
    u[i] = h[i] << 16;
  }
  return { bytes: new Uint8Array(h.buffer), exact: new Float32Array(u.buffer), scales: undefined };
}

function buffer(dev: GPUDevice, data: ArrayBufferView | number, usage: number): GPUBuffer {
  const bytes = typeof data === "number" ? data : data.byteLength;
  const b = dev.createBuffer({ size: Math.max(16, Math.ceil(bytes / 16) * 16), usage });
  if (typeof data !== "number") {
    const padded = new Uint8Array(b.size);
    padded.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    dev.queue.writeBuffer(b, 0, padded);
  }
  return b;
}

const S = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
const U = GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST;

function bindGroup(dev: GPUDevice, p: GPUComputePipeline, entries: [number, GPUBuffer][]) {
  return dev.createBindGroup({
    layout: p.getBindGroupLayout(0),
    entries: entries.map(([binding, buffer]) => ({ binding, resource: { buffer } })),
  });
}

/** Run one dispatch and read `bytes` of buffer `out` back. */
async function runOnce(
  dev: GPUDevice,
  p: GPUComputePipeline,
  entries: [number, GPUBuffer][],
  groups: [number, number, number],
  out: GPUBuffer,
  bytes: number,
): Promise<Float32Array> {
  const read = dev.createBuffer({
    size: out.size,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const enc = dev.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(p);
  pass.setBindGroup(0, bindGroup(dev, p, entries));
  pass.dispatchWorkgroups(...groups);
  pass.end();
  enc.copyBufferToBuffer(out, 0, read, 0, out.size);
  dev.queue.submit([enc.finish()]);
  await read.mapAsync(GPUMapMode.READ);
  const got = new Float32Array(read.getMappedRange().slice(0, bytes));
  read.unmap();
  read.destroy();
  return got;
}

/** µs per dispatch of `reps` back-to-back dispatches in one timed pass (best of 3). */
async function timeRepeated(
  dev: GPUDevice,
  p: GPUComputePipeline,
  entries: [number, GPUBuffer][],
  groups: [number, number, number],
  reps: number,
): Promise<number> {
  const bg = bindGroup(dev, p, entries);
  const ns = await timePasses(dev, 4, (pass) => {
    pass.setPipeline(p);
    pass.setBindGroup(0, bg);
    for (let i = 0; i < reps; i++) pass.dispatchWorkgroups(...groups);
  });
  return Math.min(...ns.slice(1)) / 1000 / reps;
}

function worstRelative(got: Float32Array, want: Float32Array): number {
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    worst = Math.max(worst, Math.abs(got[i] - want[i]) / Math.max(1, Math.abs(want[i])));
  }
  return worst;
}

/** GPU work before the peaks are timed on a hardware adapter (ms). */
const WARM_UP_MS = 300;

/** The adapter's peaks: a plain read of 256 MiB (16 on a software adapter; TB/s) and independent f32 FMAs (TFLOP/s). */
async function peaks(
  dev: GPUDevice,
  small: boolean,
): Promise<{ readTBs: number; fmaTflops: number }> {
  const bytes = small ? 16 << 20 : 256 << 20;
  const big = dev.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE });
  const sink = dev.createBuffer({ size: 1 << 20, usage: GPUBufferUsage.STORAGE });
  const compile = async (code: string) =>
    await dev.createComputePipelineAsync({
      layout: "auto",
      compute: { module: dev.createShaderModule({ code }), entryPoint: "main" },
    });
  const read = await compile(`@group(0) @binding(0) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> y: array<u32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
  var acc = vec4<u32>(0u);
  let total = arrayLength(&w);
  for (var i = g.x; i < total; i += n.x * 256u) { acc ^= w[i]; }
  if (acc.x == 12345u) { y[g.x % 1024u] = acc.y; }
}`);
  let readUs = await timeRepeated(dev, read, [[0, big], [1, sink]], [4224, 1, 1], 10);
  const fma = await compile(`@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  var a = vec4<f32>(f32(g.x) * 1e-9);
  var b = a + 1e-9; var c = a + 2e-9; var d = a + 3e-9;
  let m = vec4<f32>(0.999999);
  let k = vec4<f32>(1e-7);
  for (var i = 0u; i < 1024u; i++) {
    a = fma(a, m, k); b = fma(b, m, k); c = fma(c, m, k); d = fma(d, m, k);
  }
  let s = a + b + c + d;
  if (s.x == 12345.0) { y[g.x % 1024u] = s.y; }
}`);
  const groups = small ? 64 : 132 * 64;
  let fmaUs = await timeRepeated(dev, fma, [[1, sink]], [groups, 1, 1], 4);
  if (!small) {
    // An idle GPU runs at low clocks (an H200 at 345 MHz) until it has worked a while: about
    // WARM_UP_MS of the FMA kernel, untimed, then both peaks again.
    const n = Math.min(1000, Math.ceil((WARM_UP_MS * 1000) / fmaUs));
    await timeRepeated(dev, fma, [[1, sink]], [groups, 1, 1], Math.ceil(n / 4));
    console.error(`peaks: f32 FMA ${fmaUs.toFixed(1)} µs per dispatch before the warm-up`);
    readUs = await timeRepeated(dev, read, [[0, big], [1, sink]], [4224, 1, 1], 10);
    fmaUs = await timeRepeated(dev, fma, [[1, sink]], [groups, 1, 1], 4);
  }
  big.destroy();
  sink.destroy();
  return {
    readTBs: +(bytes / readUs / 1e6).toPrecision(3),
    fmaTflops: +((groups * 256 * 1024 * 16 * 2) / fmaUs / 1e6).toPrecision(3),
  };
}

/** Decode batch 1: the matvec (SGLU: two weights) in the model's tiling, timed and checked. */
async function gemv(
  ctx: GpuContext,
  pipelines: PipelineCache,
  rows: number,
  cols: number,
  dtype: GpuDType,
  glu: boolean,
): Promise<{ us: number; tbs: number; lanes: number; maxRelErr: number }> {
  const dev = ctx.device;
  const t = matvecTiling(
    rows,
    cols,
    1,
    ctx.info.fallback,
    glu,
    dev.limits.maxComputeWorkgroupStorageSize,
  );
  const vec8 = cols % 8 === 0;
  const p = await pipelines.get("matvec", {
    ...LAYOUT_DEFINES,
    ...matvecTilingDefines(t, cols),
    X4: vec8,
    VEC8: vec8,
    W_DTYPE: dtype,
    W2_DTYPE: glu ? dtype : "",
    GLU: glu,
    GATE: false,
    RMS_SCALE: false,
    OUT_ADD: false,
    BIAS: false,
  });
  const w = encode(random(rows * cols, 21, 0.05), dtype, rows);
  const w2 = encode(random(rows * cols, 23, 0.05), dtype, rows);
  const x = random(cols, 25, 1);
  const bufs: GPUBuffer[] = [];
  const mk = (d: ArrayBufferView | number, usage = S) => {
    const b = buffer(dev, d, usage);
    bufs.push(b);
    return b;
  };
  const y = mk(rows * 4);
  const entries: [number, GPUBuffer][] = [
    [0, mk(new Uint32Array([rows, cols, 0, cols, 0, 0, 0, rows, 0, 0, 0, 0]), U)],
    [1, mk(new Uint32Array([1, 0, 0, 0]))],
    [2, mk(x)],
    [4, y],
    [5, mk(w.bytes)],
  ];
  if (glu) entries.push([6, mk(w2.bytes)]);
  if (w.scales) entries.push([9, mk(w.scales)]);
  if (glu && w2.scales) entries.push([10, mk(w2.scales)]);
  const groups: [number, number, number] = [Math.ceil(rows / t.rowsPerWorkgroup), 1, 1];
  const got = await runOnce(dev, p, entries, groups, y, rows * 4);
  const us = await timeRepeated(dev, p, entries, groups, 100);
  for (const b of bufs) b.destroy();
  const want = new Float32Array(rows);
  linear(x, 1, w.exact, null, rows, cols, want);
  if (glu) {
    const v = new Float32Array(rows);
    linear(x, 1, w2.exact, null, rows, cols, v);
    for (let i = 0; i < rows; i++) want[i] *= v[i];
  }
  const weightBytes = w.bytes.byteLength * (glu ? 2 : 1);
  return {
    us: +us.toFixed(2),
    tbs: +(weightBytes / us / 1e6).toPrecision(3),
    lanes: t.lanes,
    maxRelErr: worstRelative(got, want),
  };
}

/**
 * The product as the prefill runs it (`gemmOps`: a split shape's partial products and their sum):
 * its worst relative error on `tokens` tokens against the CPU reference, and the µs of the ops
 * after the first (a split shape's sum, at `timeTokens` tokens; 0 when not split).
 */
async function check(
  ctx: GpuContext,
  pipelines: PipelineCache,
  tile: GemmTile,
  rows: number,
  cols: number,
  dtype: GpuDType,
  tokens: number,
  timeTokens: number,
  glu = false,
): Promise<{ maxRelErr: number; sumUs: number }> {
  const dev = ctx.device;
  const w = encode(random(rows * cols, 7, 0.05), dtype, rows);
  const w2 = encode(random(rows * cols, 8, 0.05), dtype, rows);
  const a = random(timeTokens * cols, 9, 1);
  const bufs: GPUBuffer[] = [];
  const mk = (d: ArrayBufferView | number) => {
    bufs.push(buffer(dev, d, S));
    return bufs.at(-1)!;
  };
  const matrix = (x: typeof w): GpuMatrix => ({
    dtype,
    rows,
    cols,
    chunks: [{ buffer: mk(x.bytes), rowBase: 0, rows }],
    scales: x.scales ? mk(x.scales) : null,
  });
  const y = mk(timeTokens * rows * 4);
  const parts = glu ? 0 : gemmSplitParts(rows, cols, timeTokens);
  const res = new GpuResources(dev);
  const ops = await gemmOps({ m: { pipelines, ctx, ctl: y }, res }, {
    label: "check",
    w: matrix(w),
    w2: glu ? matrix(w2) : undefined,
    input: { buffer: mk(a), stride: cols },
    out: { buffer: y, stride: rows },
    tile,
    parts: parts ? mk(parts) : undefined,
  });
  for (const op of ops) res.writeUniform(op.params, op.words(tokens, 0, 0));
  const read = dev.createBuffer({
    size: y.size,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const enc = dev.createCommandEncoder();
  const pass = enc.beginComputePass();
  encodeOps(pass, ops, tokens);
  pass.end();
  enc.copyBufferToBuffer(y, 0, read, 0, y.size);
  dev.queue.submit([enc.finish()]);
  await read.mapAsync(GPUMapMode.READ);
  const got = new Float32Array(read.getMappedRange().slice(0, tokens * rows * 4));
  read.destroy();
  let sumUs = 0;
  if (ops.length > 1) {
    for (const op of ops) res.writeUniform(op.params, op.words(timeTokens, 0, 0));
    const ns = await timePasses(dev, 4, (p) => encodeOps(p, ops.slice(1), timeTokens));
    sumUs = Math.min(...ns.slice(1)) / 1000;
  }
  res.destroy();
  for (const b of bufs) b.destroy();
  const want = new Float32Array(tokens * rows);
  linear(a.subarray(0, tokens * cols), tokens, w.exact, null, rows, cols, want);
  if (glu) {
    const want2 = new Float32Array(tokens * rows);
    linear(a.subarray(0, tokens * cols), tokens, w2.exact, null, rows, cols, want2);
    for (let i = 0; i < want.length; i++) want[i] *= want2[i];
  }
  return { maxRelErr: worstRelative(got, want), sumUs };
}

if (import.meta.main) {
  const args = parseArgs(Deno.args, {
    string: ["shapes", "tokens", "dtypes", "rounds", "tiles", "label"],
  });
  const shapes = String(args.shapes ?? "385M").split(",");
  const tokens = Number(args.tokens ?? 2048);
  const dtypes = String(args.dtypes ?? "bf16").split(",") as GpuDType[];
  const rounds = Number(args.rounds ?? 5);
  const ctx = await acquireDevice();
  if (!ctx.device.features.has("timestamp-query")) throw new Error("needs timestamp-query");
  const pipelines = PipelineCache.for(ctx.device);
  const lim = ctx.device.limits;
  const extra = args.tiles ? String(args.tiles).split(",").map(parseTile) : [];
  for (const t of extra) {
    gemmTileDefines(t, true); // throws on a shape the generator cannot write
    if (
      gemmThreads(t) > lim.maxComputeInvocationsPerWorkgroup ||
      gemmWorkgroupBytes(t) > lim.maxComputeWorkgroupStorageSize
    ) throw new Error(`--tiles: ${tileName(t)} exceeds this device's workgroup limits`);
  }
  const candidates = extra.length ? [...gemmTilesFor(lim), ...extra] : undefined;
  const adapter = ctx.info.description;
  console.error(`adapter: ${adapter}, subgroup size ${ctx.info.subgroupSize || "none"}`);
  const peak = await peaks(ctx.device, ctx.info.fallback);
  console.error(JSON.stringify(peak));
  const gemmRows: Record<string, unknown>[] = [];
  const gemvRows: Record<string, unknown>[] = [];
  for (const shape of shapes) {
    const s = RELEASED_SHAPES[shape] as Record<string, number>;
    if (!s) throw new Error(`--shapes: unknown ${shape}`);
    const D = s.decoder_embed_dim, H = s.hidden_dim, G = s.glu_dim;
    // The SGLU pair is one product of two matrices (`glu`).
    const projections: [string, number, number, boolean][] = [
      ["qkvu", 4 * H, D, false],
      ["out_proj", D, H, false],
      ["glu", G, D, true],
      ["down_proj", D, G, false],
    ];
    for (const dtype of dtypes) {
      for (const [kernel, r, c, glu] of projections) {
        const res = await tuneGemm(
          ctx,
          pipelines,
          { rows: r, cols: c, dtype, tokens, glu },
          rounds,
          candidates,
        );
        const flop = (glu ? 4 : 2) * tokens * r * c;
        const { maxRelErr: err, sumUs } = await check(
          ctx,
          pipelines,
          res.tile,
          r,
          c,
          dtype,
          8,
          tokens,
          glu,
        );
        // A split shape's time includes the sum of its parts (the same for every tile).
        const times = res.times.map((t) => ({ tile: t.tile, us: t.us + sumUs }));
        const best = times.find((t) => t.tile === res.tile)!;
        const row = {
          shape,
          dtype,
          kernel,
          rows: r,
          cols: c,
          tokens,
          tile: tileName(res.tile),
          splits: glu ? 1 : gemmSplits(r, c),
          us: +best.us.toFixed(1),
          sumUs: +sumUs.toFixed(1),
          tflops: +(flop / best.us / 1e6).toPrecision(3),
          maxRelErr: err,
          tflopsByTile: Object.fromEntries(
            times.map((t) => [tileName(t.tile), +(flop / t.us / 1e6).toPrecision(3)]),
          ),
        };
        gemmRows.push(row);
        console.error(JSON.stringify(row));
        const v = await gemv(ctx, pipelines, r, c, dtype, kernel === "glu");
        const vrow = { shape, dtype, kernel, rows: r, cols: c, ...v };
        gemvRows.push(vrow);
        console.error(JSON.stringify(vrow));
      }
    }
  }
  const date = new Date().toISOString().slice(0, 10);
  const slug = adapter.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "") +
    (args.label ? `_${args.label}` : "");
  const report = {
    date,
    adapter,
    subgroupSize: ctx.info.subgroupSize,
    deno: Deno.version.deno,
    command: `deno run -A bench/kernels.ts ${Deno.args.join(" ")}`.trim(),
    peak,
    gemm: gemmRows,
    gemv: gemvRows,
  };
  await Deno.mkdir(RESULTS, { recursive: true });
  await Deno.writeTextFile(
    new URL(`kernels_${slug}.json`, RESULTS),
    JSON.stringify(report, null, 1),
  );
  const err = (e: unknown) => (e as number).toExponential(1);
  const md = [
    `# Matrix kernels on ${adapter}, ${date}`,
    "",
    `\`${report.command}\`. Peaks measured here: read ${peak.readTBs} TB/s, f32 FMA`,
    `${peak.fmaTflops} TFLOP/s.`,
    "",
    `## Prefill GEMM, ${tokens} tokens`,
    "",
    "Every tile timed (best of the rounds, timestamp queries); the fastest checked against the CPU",
    "reference on 8 tokens as the prefill runs it. A shape split along its inner dimension (parts > 1)",
    "includes the sum of its parts (sum µs) in every time.",
    "",
    "| shape | weights | kernel | rows×cols | parts | tile | µs | sum µs | TFLOP/s | max rel err | TFLOP/s by tile |",
    "| ----- | ------- | ------ | --------- | ----- | ---- | -- | ------ | ------- | ----------- | --------------- |",
    ...gemmRows.map((r) =>
      `| ${r.shape} | ${r.dtype} | ${r.kernel} | ${r.rows}×${r.cols} | ${r.splits} | ${r.tile} | ${r.us} | ${r.sumUs} | ${r.tflops} | ${
        err(r.maxRelErr)
      } | ${
        Object.entries(r.tflopsByTile as Record<string, number>).map(([k, v]) => `${k} ${v}`)
          .join(", ")
      } |`
    ),
    "",
    "## Decode matrix-vector product, batch 1",
    "",
    "µs per dispatch among 100 in one pass; TB/s of weights read (glu: both SGLU weights).",
    "",
    "| shape | weights | kernel | rows×cols | lanes | µs | TB/s | max rel err |",
    "| ----- | ------- | ------ | --------- | ----- | -- | ---- | ----------- |",
    ...gemvRows.map((r) =>
      `| ${r.shape} | ${r.dtype} | ${r.kernel} | ${r.rows}×${r.cols} | ${r.lanes} | ${r.us} | ${r.tbs} | ${
        err(r.maxRelErr)
      } |`
    ),
    "",
  ].join("\n");
  await Deno.writeTextFile(new URL(`kernels_${slug}.md`, RESULTS), md);
  console.log(md);
}
