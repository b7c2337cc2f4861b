/**
 * Probe of wgpu's cooperative matrices in Deno (`wgpu-cooperative-matrix`: requestable although
 * `adapter.features` does not list it; WGSL `enable wgpu_cooperative_matrix;`). Asks for the
 * feature, multiplies f16 matrices with f32 accumulation in 16 × 16 tiles (one subgroup per tile
 * group), checks the product against the CPU, and times a prefill-sized product. Prints JSON lines.
 * In Deno 2.9.6 no adapter grants the feature (Deno creates devices with wgpu's experimental
 * features off: refused on an H100, not offered by lavapipe), so the product and its timing have
 * not run anywhere yet; the probe records the refusal.
 *
 *   deno run -A bench/coop_probe.ts [--m 2048 --n 4096 --k 1024]
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { f16ToF32, f32ToF16 } from "../src/model/weights/dtype.ts";
import { timePasses } from "../src/gpu/timing.ts";

const args = parseArgs(Deno.args, { string: ["m", "n", "k"] });
const M = Number(args.m ?? 2048), N = Number(args.n ?? 4096), K = Number(args.k ?? 1024);
const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
if (!adapter) throw new Error("no adapter");
const want = ["shader-f16", "wgpu-cooperative-matrix", "timestamp-query"] as GPUFeatureName[];
let device: GPUDevice;
try {
  device = await adapter.requestDevice({
    requiredFeatures: want,
    requiredLimits: {
      maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
      maxBufferSize: adapter.limits.maxBufferSize,
    },
  });
} catch (e) {
  console.log(JSON.stringify({ adapter: adapter.info.description, granted: false, error: `${e}` }));
  Deno.exit(0);
}
const info = { adapter: adapter.info.description, granted: true };

// C[M, N] = A[M, K] · B[K, N], A and B f16 row-major, C f32. A workgroup is one subgroup of 32
// and computes TM × TN tiles of 16 × 16.
function kernel(tm: number, tn: number): string {
  const acc: string[] = [], loadA: string[] = [], mma: string[] = [], store: string[] = [];
  for (let i = 0; i < tm; i++) {
    loadA.push(
      `    let a${i} = coopLoad<coop_mat16x16<f16, A>>(&a[(m0 + ${16 * i}u) * P.k + k], P.k);`,
    );
    for (let j = 0; j < tn; j++) {
      acc.push(`  var c${i}_${j} = coop_mat16x16<f32, C>();`);
      mma.push(`    c${i}_${j} = coopMultiplyAdd(a${i}, b${j}, c${i}_${j});`);
      store.push(`  coopStore(c${i}_${j}, &c[(m0 + ${16 * i}u) * P.n + n0 + ${16 * j}u], P.n);`);
    }
  }
  const loadB = Array.from(
    { length: tn },
    (_, j) =>
      `    let b${j} = coopLoad<coop_mat16x16<f16, B>>(&b[k * P.n + n0 + ${16 * j}u], P.n);`,
  );
  return `enable f16;
enable wgpu_cooperative_matrix;
struct Params { m: u32, n: u32, k: u32, pad: u32 };
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> a: array<f16>;
@group(0) @binding(2) var<storage, read> b: array<f16>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@compute @workgroup_size(32)
fn main(@builtin(workgroup_id) wid: vec3<u32>) {
  let m0 = wid.y * ${16 * tm}u;
  let n0 = wid.x * ${16 * tn}u;
${acc.join("\n")}
  for (var k = 0u; k < P.k; k += 16u) {
${loadA.join("\n")}
${loadB.join("\n")}
${mma.join("\n")}
  }
${store.join("\n")}
}`;
}

function f16Buffer(values: Float32Array): GPUBuffer {
  const h = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) h[i] = f32ToF16(values[i]);
  const buf = device.createBuffer({
    size: Math.ceil(h.byteLength / 16) * 16,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
  });
  device.queue.writeBuffer(buf, 0, h);
  return buf;
}

async function run(m: number, n: number, k: number, tm: number, tn: number, check: boolean) {
  const rand = (len: number, seed: number) => {
    let s = seed;
    return Float32Array.from({ length: len }, () => {
      s = (s * 1103515245 + 12345) >>> 0;
      return (s / 2 ** 32 - 0.5) * 2;
    });
  };
  const av = rand(m * k, 1), bv = rand(k * n, 2);
  const A = f16Buffer(av), B = f16Buffer(bv);
  const C = device.createBuffer({
    size: m * n * 4,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC,
  });
  const P = device.createBuffer({
    size: 16,
    usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
  });
  device.queue.writeBuffer(P, 0, new Uint32Array([m, n, k, 0]));
  device.pushErrorScope("validation");
  const module = device.createShaderModule({ code: kernel(tm, tn) });
  const msgs = (await module.getCompilationInfo()).messages.map((x) => x.message);
  let pipeline: GPUComputePipeline;
  try {
    pipeline = await device.createComputePipelineAsync({
      layout: "auto",
      compute: { module, entryPoint: "main" },
    });
  } catch (e) {
    console.log(JSON.stringify({ ...info, tm, tn, compiled: false, error: `${e}`, msgs }));
    await device.popErrorScope();
    return;
  }
  const bg = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [P, A, B, C].map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
  const groups: [number, number] = [n / (16 * tn), m / (16 * tm)];
  const reps = check ? 1 : 20;
  let best = Infinity;
  for (let round = 0; round < (check ? 1 : 3); round++) {
    const [ns] = await timePasses(device, 1, (pass) => {
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bg);
      for (let i = 0; i < reps; i++) pass.dispatchWorkgroups(...groups);
    });
    best = Math.min(best, ns / reps);
  }
  const err = await device.popErrorScope();
  const rec: Record<string, unknown> = {
    ...info,
    m,
    n,
    k,
    tm,
    tn,
    compiled: true,
    validation: err?.message ?? null,
    us: best / 1000,
    tflops: (2 * m * n * k) / best / 1000,
  };
  if (check) {
    const read = device.createBuffer({
      size: m * n * 4,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const enc = device.createCommandEncoder();
    enc.copyBufferToBuffer(C, 0, read, 0, m * n * 4);
    device.queue.submit([enc.finish()]);
    await read.mapAsync(GPUMapMode.READ);
    const got = new Float32Array(read.getMappedRange().slice(0));
    read.unmap();
    // Reference from the f16-rounded inputs, accumulated in f64.
    const ah = av.map((x) => f16ToF32(f32ToF16(x))), bh = bv.map((x) => f16ToF32(f32ToF16(x)));
    let maxErr = 0;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let t = 0; t < k; t++) s += ah[i * k + t] * bh[t * n + j];
        maxErr = Math.max(maxErr, Math.abs(s - got[i * n + j]));
      }
    }
    rec.maxAbsErr = maxErr;
  }
  console.log(JSON.stringify(rec));
  for (const b of [A, B, C, P]) b.destroy();
}

await run(64, 64, 128, 1, 1, true);
await run(64, 64, 128, 2, 2, true);
for (const [tm, tn] of [[1, 1], [2, 2], [2, 4], [4, 4]]) await run(M, N, K, tm, tn, false);
