/**
 * Does warming the L2 cache with the next kernel's weights pay at batch 1? A kernel that keeps 32
 * workgroups busy (like the decode attention at batch 1, which leaves most SMs idle) is followed by
 * a matrix-vector product over weights no dispatch has read recently (copies spread over 1 GiB).
 * With `prefetch`, the first kernel's spare workgroups read those weights first (one word per 32
 * bytes), so the product finds them in L2. Prints JSON lines: µs per (busy kernel, product) pair,
 * and each alone.
 *
 *   deno run -A bench/l2_prefetch.ts [--shapes 1024x1024,2816x1024g,1024x2816] [--spin 2000]
 *     [--prefetch-groups 100]
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { acquireDevice } from "../src/gpu/device.ts";
import { microBuffers, microMatvec } from "./micro_gpu.ts";
import { PipelineCache } from "../src/gpu/shaders.ts";
import { timePasses } from "../src/gpu/timing.ts";

const args = parseArgs(Deno.args, {
  string: ["shapes", "spin", "prefetch-groups"],
  default: {
    shapes: "1024x1024,2816x1024g,1024x2816,4096x1024",
    spin: "2000",
    "prefetch-groups": "100",
  },
});
const ctx = await acquireDevice();
const dev = ctx.device;
const cache = PipelineCache.for(dev);
const SPIN = Number(args.spin), PF_GROUPS = Number(args["prefetch-groups"]);

const { buf, uni } = microBuffers(dev);

// Workgroups below 32 run a chain of SPIN dependent FMAs (the busy kernel); the others, when
// P.prefetch is set, read one word per 32 bytes of w0 and w1 (grid-stride), xor-ing them so the
// loads stay. A single matrix is bound as both (its second pass finds it in L2), as in the runs of
// bench/results/b1_experiments_nvidia-h100_2026-12-05/.
const busyCode = `
struct Params { spin: u32, prefetch: u32, magic: u32, pad: u32 };
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> w0: array<u32>;
@group(0) @binding(2) var<storage, read> w1: array<u32>;
@group(0) @binding(3) var<storage, read_write> sink: array<u32>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
  if (wid.x < 32u) {
    var a = f32(tid);
    for (var i = 0u; i < P.spin; i++) { a = fma(a, 0.999, 0.5); }
    if (bitcast<u32>(a) == P.magic) { sink[tid] = 1u; }
    return;
  }
  if (P.prefetch == 0u) { return; }
  let t = (wid.x - 32u) * 256u + tid;
  let n = (nw.x - 32u) * 256u;
  var acc = 0u;
  let n0 = arrayLength(&w0) / 8u;
  for (var i = t; i < n0; i += n) { acc ^= w0[i * 8u]; }
  let n1 = arrayLength(&w1) / 8u;
  for (var i = t; i < n1; i += n) { acc ^= w1[i * 8u]; }
  if (acc == P.magic) { sink[tid] = acc; }
}`;
const busy = await dev.createComputePipelineAsync({
  layout: "auto",
  compute: { module: dev.createShaderModule({ code: busyCode }), entryPoint: "main" },
});

const shapes = String(args.shapes).split(",").map((s) => {
  const glu = s.endsWith("g");
  const [r, c] = s.replace(/g$/, "").split("x").map(Number);
  return { rows: r, cols: c, glu };
});
const maxCols = Math.max(...shapes.map((s) => s.cols));
const maxRows = Math.max(...shapes.map((s) => s.rows));
const SPAN = Math.min(1 << 30, dev.limits.maxBufferSize);
const W = buf(SPAN), W2 = buf(SPAN);
const X = buf(maxCols * 4), Y = buf(maxRows * 4), sink = buf(1024);
dev.queue.writeBuffer(X, 0, new Float32Array(maxCols).fill(0.01));
const reps = 60;

for (const { rows, cols, glu } of shapes) {
  const bytes = rows * cols * 2;
  const stride = Math.ceil(bytes / 256) * 256;
  const copies = Math.floor(SPAN / stride);
  const { tiling: t, pipeline: mv, params, ctl, groups } = await microMatvec(ctx, cache, {
    rows,
    cols,
    batch: 1,
    glu,
  });
  const range = (b: GPUBuffer, k: number) => ({ buffer: b, offset: k * stride, size: bytes });
  const mvGroups = (k: number) =>
    dev.createBindGroup({
      layout: mv.getBindGroupLayout(0),
      entries: [
        { binding: 0, resource: { buffer: params } },
        { binding: 1, resource: { buffer: ctl } },
        { binding: 2, resource: { buffer: X } },
        { binding: 4, resource: { buffer: Y } },
        { binding: 5, resource: range(W, k) },
        ...(glu ? [{ binding: 6, resource: range(W2, k) }] : []),
      ],
    });
  const busyParams = (prefetch: number) => uni([SPIN, prefetch, 0xdeadbeef, 0]);
  const pOn = busyParams(1), pOff = busyParams(0);
  const busyGroups = (k: number, p: GPUBuffer) =>
    dev.createBindGroup({
      layout: busy.getBindGroupLayout(0),
      entries: [
        { binding: 0, resource: { buffer: p } },
        { binding: 1, resource: range(W, k) },
        { binding: 2, resource: glu ? range(W2, k) : range(W, k) },
        { binding: 3, resource: { buffer: sink } },
      ],
    });
  const mvBg = Array.from({ length: copies }, (_, k) => mvGroups(k));
  const onBg = Array.from({ length: copies }, (_, k) => busyGroups(k, pOn));
  const offBg = Array.from({ length: copies }, (_, k) => busyGroups(k, pOff));

  const run = async (
    what: "pair" | "busy" | "matvec" | "hot",
    prefetch: boolean,
  ): Promise<number> => {
    let best = Infinity;
    for (let round = 0; round < 3; round++) {
      const [ns] = await timePasses(dev, 1, (pass) => {
        for (let i = 0; i < reps; i++) {
          const k = what === "hot" ? 0 : i % copies;
          if (what !== "matvec" && what !== "hot") {
            pass.setPipeline(busy);
            pass.setBindGroup(0, (prefetch ? onBg : offBg)[k]);
            pass.dispatchWorkgroups(32 + PF_GROUPS);
          }
          if (what !== "busy") {
            pass.setPipeline(mv);
            pass.setBindGroup(0, mvBg[k]);
            pass.dispatchWorkgroups(...groups);
          }
        }
      });
      best = Math.min(best, ns / 1000 / reps);
    }
    return best;
  };
  const r = {
    rows,
    cols,
    glu,
    lanes: t.lanes,
    rpg: t.rpg,
    spin: SPIN,
    prefetchGroups: PF_GROUPS,
    matvecCold: await run("matvec", false),
    matvecHot: await run("hot", false),
    busy: await run("busy", false),
    busyPrefetch: await run("busy", true),
    pairCold: await run("pair", false),
    pairPrefetch: await run("pair", true),
  };
  console.log(JSON.stringify({ adapter: ctx.info.description, ...r }));
}
