/**
 * Probe of a WebGPU adapter: features, limits, and the CPU cost of encoding compute dispatches
 * (dispatch only; with setBindGroup; with setPipeline + setBindGroup; with dynamic offsets), and
 * the GPU time of a chain of tiny dispatches in one pass. Writes JSON to stdout.
 */
const adapter = await navigator.gpu?.requestAdapter({ powerPreference: "high-performance" });
if (!adapter) {
  console.log(JSON.stringify({ error: "no adapter" }));
  Deno.exit(1);
}
const features = [...adapter.features].sort();
const want = ["shader-f16", "subgroups", "timestamp-query", "immediates"].filter((f) =>
  adapter.features.has(f as GPUFeatureName)
);
const l = adapter.limits;
const device = await adapter.requestDevice({
  requiredFeatures: want as GPUFeatureName[],
  requiredLimits: {
    maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
    maxBufferSize: l.maxBufferSize,
  },
});
const code = `
@group(0) @binding(0) var<storage, read_write> buf: array<u32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3u) {
  if (g.x == 0u) { buf[0] = buf[0] + 1u; }
}`;
const module = device.createShaderModule({ code });
const mk = () =>
  device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" } });
const p1 = mk(), p2 = mk();
const buffer = device.createBuffer({
  size: 1 << 16,
  usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC,
});
const bg1 = device.createBindGroup({
  layout: p1.getBindGroupLayout(0),
  entries: [{ binding: 0, resource: { buffer } }],
});
const bg2 = device.createBindGroup({
  layout: p2.getBindGroupLayout(0),
  entries: [{ binding: 0, resource: { buffer } }],
});
// Dynamic-offset layout.
const dynLayout = device.createBindGroupLayout({
  entries: [{
    binding: 0,
    visibility: GPUShaderStage.COMPUTE,
    buffer: { type: "storage", hasDynamicOffset: true },
  }],
});
const pDyn = device.createComputePipeline({
  layout: device.createPipelineLayout({ bindGroupLayouts: [dynLayout] }),
  compute: { module, entryPoint: "main" },
});
const bgDyn = device.createBindGroup({
  layout: dynLayout,
  entries: [{ binding: 0, resource: { buffer, size: 256 } }],
});

async function timeEncode(
  name: string,
  n: number,
  body: (pass: GPUComputePassEncoder, i: number) => void,
) {
  // warm
  for (let rep = 0; rep < 2; rep++) {
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(p1);
    pass.setBindGroup(0, bg1);
    for (let i = 0; i < 200; i++) body(pass, i);
    pass.end();
    device.queue.submit([enc.finish()]);
  }
  await device.queue.onSubmittedWorkDone();
  const t0 = performance.now();
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(name === "dyn" ? pDyn : p1);
  pass.setBindGroup(0, name === "dyn" ? bgDyn : bg1, name === "dyn" ? [0] : undefined);
  for (let i = 0; i < n; i++) body(pass, i);
  pass.end();
  const t1 = performance.now();
  const cb = enc.finish();
  const t2 = performance.now();
  device.queue.submit([cb]);
  const t3 = performance.now();
  await device.queue.onSubmittedWorkDone();
  const t4 = performance.now();
  return {
    name,
    n,
    encodeUsPerDispatch: (t1 - t0) * 1000 / n,
    finishMs: t2 - t1,
    submitMs: t3 - t2,
    gpuWaitMs: t4 - t3,
  };
}
const N = 5000;
const results = [];
results.push(await timeEncode("dispatch-only", N, (p) => p.dispatchWorkgroups(1)));
results.push(
  await timeEncode("bindgroup+dispatch", N, (p, i) => {
    p.setBindGroup(0, i & 1 ? bg1 : bg2);
    p.dispatchWorkgroups(1);
  }),
);
results.push(
  await timeEncode("pipeline+bindgroup+dispatch", N, (p, i) => {
    p.setPipeline(i & 1 ? p1 : p2);
    p.setBindGroup(0, i & 1 ? bg1 : bg2);
    p.dispatchWorkgroups(1);
  }),
);
results.push(
  await timeEncode("dyn", N, (p, i) => {
    p.setBindGroup(0, bgDyn, [(i & 15) * 256]);
    p.dispatchWorkgroups(1);
  }),
);
// readback latency
const staging = device.createBuffer({
  size: 256,
  usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
});
const rb: number[] = [];
for (let i = 0; i < 5; i++) {
  const enc = device.createCommandEncoder();
  enc.copyBufferToBuffer(buffer, 0, staging, 0, 256);
  device.queue.submit([enc.finish()]);
  const t0 = performance.now();
  await staging.mapAsync(GPUMapMode.READ);
  rb.push(performance.now() - t0);
  staging.unmap();
}
console.log(JSON.stringify(
  {
    adapter: adapter.info.description || adapter.info.device,
    vendor: adapter.info.vendor,
    architecture: adapter.info.architecture,
    subgroupMinSize: adapter.info.subgroupMinSize,
    subgroupMaxSize: adapter.info.subgroupMaxSize,
    features,
    requested: want,
    limits: {
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxBufferSize: l.maxBufferSize,
      maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
      maxImmediateSize: (l as unknown as Record<string, number>).maxImmediateSize,
    },
    encode: results,
    readbackMs: rb,
    hasSetImmediates: typeof (GPUComputePassEncoder.prototype as unknown as Record<string, unknown>)
      .setImmediates,
  },
  null,
  1,
));
