/**
 * What synchronizing workgroups costs on this adapter, for the decode plan's choice between
 * dispatches, a "last workgroup finishes" epilogue and a persistent kernel (issue 13):
 * - `dispatch`: a chain of dependent dispatches (each reads and writes the buffer the previous one
 *   wrote, so a barrier separates them) of `w` tiny workgroups, µs per dispatch;
 * - `grid_barrier`: one dispatch of `w` workgroups passing `rounds` grid-wide barriers (a
 *   monotonic arrival counter, each workgroup's thread 0 spinning on it at most `MAX_SPIN` times,
 *   then raising an error flag that is read back and skipping every later wait: never a hang),
 *   µs per barrier; `ok` says whether every wait ended by arrival (all workgroups co-resident);
 * - `last_wg_sum`: `w` workgroups each writing 1024 f32 partials, the last to arrive summing them
 *   (the tail of a last-workgroup epilogue), µs per dispatch in a chain, with the sum as one chain
 *   of dependent loads (`serial`), as blocks of 16 independent atomic loads (`blocked`), and none.
 * Timestamp queries; prints JSON lines and writes `bench/results/grid_sync_<adapter>.json`.
 *
 *   deno run -A bench/grid_sync.ts
 * @module
 */

import { acquireDevice } from "../src/gpu/device.ts";
import { timePasses } from "../src/gpu/timing.ts";
import { microBuffers } from "./micro_gpu.ts";

const ctx = await acquireDevice();
const dev = ctx.device;
if (!dev.features.has("timestamp-query")) throw new Error("needs timestamp-query");
const MAX_SPIN = 20000;

const { buf } = microBuffers(dev);

async function pipe(code: string): Promise<GPUComputePipeline> {
  const module = dev.createShaderModule({ code });
  const info = await module.getCompilationInfo();
  const err = info.messages.filter((m) => m.type === "error");
  if (err.length) throw new Error(err.map((m) => `${m.lineNum}: ${m.message}`).join("; "));
  return await dev.createComputePipelineAsync({
    layout: "auto",
    compute: { module, entryPoint: "main" },
  });
}

/** GPU µs of one pass holding `reps` dispatches of `groups` workgroups (best of 3). */
async function timed(
  p: GPUComputePipeline,
  buffers: GPUBuffer[],
  groups: number,
  reps: number,
  reset?: GPUBuffer,
): Promise<number> {
  const bg = dev.createBindGroup({
    layout: p.getBindGroupLayout(0),
    entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
  let best = Infinity;
  for (let round = 0; round < 3; round++) {
    const [ns] = await timePasses(dev, 1, (pass) => {
      pass.setPipeline(p);
      pass.setBindGroup(0, bg);
      for (let i = 0; i < reps; i++) pass.dispatchWorkgroups(groups);
    }, reset ? (enc) => enc.clearBuffer(reset) : undefined);
    best = Math.min(best, ns / 1000);
  }
  return best;
}

async function readU32(b: GPUBuffer, n: number): Promise<Uint32Array> {
  const rd = buf(n * 4, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST);
  const enc = dev.createCommandEncoder();
  enc.copyBufferToBuffer(b, 0, rd, 0, rd.size);
  dev.queue.submit([enc.finish()]);
  await rd.mapAsync(GPUMapMode.READ);
  const out = new Uint32Array(rd.getMappedRange().slice(0, n * 4));
  rd.unmap();
  rd.destroy();
  return out;
}

const rows: Record<string, unknown>[] = [];
const emit = (r: Record<string, unknown>) => {
  rows.push(r);
  console.log(JSON.stringify(r));
};
const COPY = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;

// Dependent dispatches.
const chain = await pipe(`
@group(0) @binding(0) var<storage, read_write> b: array<u32>;
@compute @workgroup_size(256) fn main(@builtin(workgroup_id) w: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  if (t == 0u) { b[w.x] = b[w.x] + 1u; }
}`);
const cbuf = buf(4096 * 4, COPY);
for (const w of [1, 32, 132, 512]) {
  const reps = 200;
  const us = await timed(chain, [cbuf], w, reps);
  emit({ test: "dispatch", workgroups: w, us_per_dispatch: +(us / reps).toFixed(3) });
}

// Grid barriers inside one dispatch.
const rounds = 200;
const grid = await pipe(`
@group(0) @binding(0) var<storage, read_write> bar: array<atomic<u32>>;  // [0] arrivals, [1] error
@group(0) @binding(1) var<storage, read_write> data: array<u32>;
var<workgroup> skip: u32;
@compute @workgroup_size(256) fn main(@builtin(workgroup_id) w: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  for (var r = 0u; r < ${rounds}u; r++) {
    if (t == 0u) { data[w.x] = data[w.x] + r; }
    storageBarrier();
    if (t == 0u) {
      atomicAdd(&bar[0], 1u);
      let target_count = (r + 1u) * n.x;
      var spins = 0u;
      loop {
        if (atomicLoad(&bar[1]) != 0u) { break; }
        if (atomicLoad(&bar[0]) >= target_count) { break; }
        spins++;
        if (spins > ${MAX_SPIN}u) { atomicStore(&bar[1], 1u); break; }
      }
    }
    workgroupBarrier();
    storageBarrier();
  }
}`);
const bar = buf(16, COPY), gdata = buf(4096 * 4, COPY);
for (const w of [8, 32, 66, 132, 264, 528, 1056]) {
  const us = await timed(grid, [bar, gdata], w, 1, bar);
  const flags = await readU32(bar, 2);
  emit({
    test: "grid_barrier",
    workgroups: w,
    us_per_barrier: +(us / rounds).toFixed(3),
    ok: flags[1] === 0,
    arrivals: flags[0],
  });
}

// The tail of a last-workgroup epilogue.
const D = 1024;
for (const mode of ["none", "serial", "blocked"] as const) {
  const sum = mode === "none"
    ? "if (t == 0u) { x[0] = x[0] + 1.0; }"
    : mode === "serial"
    ? `for (var d = t; d < ${D}u; d += 256u) {
      var acc = 0.0;
      for (var g = 0u; g < n.x; g++) { acc += bitcast<f32>(atomicLoad(&parts[g * ${D}u + d])); }
      x[d] = x[d] + acc;
    }`
    : `for (var d = t; d < ${D}u; d += 256u) {
      var acc = 0.0;
      for (var g0 = 0u; g0 < n.x; g0 += 16u) {
        ${
      Array.from(
        { length: 16 },
        (_, i) =>
          `let v${i} = select(0.0, bitcast<f32>(atomicLoad(&parts[min(g0 + ${i}u, n.x - 1u) * ${D}u + d])), g0 + ${i}u < n.x);`,
      ).join("\n        ")
    }
        ${Array.from({ length: 16 }, (_, i) => `acc += v${i};`).join(" ")}
      }
      x[d] = x[d] + acc;
    }`;
  const tail = await pipe(`
@group(0) @binding(0) var<storage, read_write> parts: array<atomic<u32>>;
@group(0) @binding(1) var<storage, read_write> count: array<atomic<u32>>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
var<workgroup> last_flag: u32;
@compute @workgroup_size(256) fn main(@builtin(workgroup_id) w: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  for (var d = t; d < ${D}u; d += 256u) { atomicStore(&parts[w.x * ${D}u + d], bitcast<u32>(f32(d + w.x))); }
  storageBarrier();
  if (t == 0u) {
    last_flag = select(0u, 1u, atomicAdd(&count[0], 1u) == n.x - 1u);
    if (last_flag == 1u) { atomicStore(&count[0], 0u); }
  }
  let is_last = workgroupUniformLoad(&last_flag) == 1u;
  storageBarrier();
  if (!is_last) { return; }
  ${sum}
}`);
  const parts = buf(1056 * D * 4, COPY), count = buf(16, COPY), x = buf(D * 4, COPY);
  for (const w of [32, 176]) {
    const reps = 100;
    const us = await timed(tail, [parts, count, x], w, reps, count);
    emit({
      test: "last_wg_sum",
      sum: mode,
      workgroups: w,
      us_per_dispatch: +(us / reps).toFixed(3),
    });
  }
}

const adapter = ctx.info.description.toLowerCase().includes("h200")
  ? "nvidia-h200"
  : ctx.info.description.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "");
const out = new URL(`./results/grid_sync_${adapter}.json`, import.meta.url).pathname;
await Deno.writeTextFile(
  out,
  JSON.stringify(
    { date: new Date().toISOString().slice(0, 10), adapter: ctx.info.description, rows },
    null,
    2,
  ) + "\n",
);
console.error(`wrote ${out}`);
