/**
 * Scratch A/B of the Lightning KV and OUT stages (not part of the repo): the kernels of two trees
 * on the same random inputs of the 385M shape (T 2,048, 8 heads, hd 128, dk 128 and 256), checked
 * bit for bit, then timed with timestamp queries (median of `--reps` passes of one dispatch).
 *
 *   deno run -A lightning_ab.ts --old /path/to/old/tree --new /path/to/new/tree [--reps 50]
 */
const arg = (k: string, d?: string) => {
  const i = Deno.args.indexOf(`--${k}`);
  return i >= 0 ? Deno.args[i + 1] : d;
};
const oldRoot = arg("old")!, newRoot = arg("new")!, reps = Number(arg("reps", "50"));
const abs = (p: string) => p.startsWith("/") ? p : `${Deno.cwd()}/${p}`;
const { acquireDevice } = await import(`${abs(newRoot)}/src/gpu/device.ts`);
const { timePasses } = await import(`${abs(newRoot)}/src/gpu/timing.ts`);
const trees = {
  old: (await import(`${abs(oldRoot)}/src/gpu/shaders.ts`)).PipelineCache,
  new: (await import(`${abs(newRoot)}/src/gpu/shaders.ts`)).PipelineCache,
};
const ctx = await acquireDevice();
const dev: GPUDevice = ctx.device;
console.log(`adapter: ${ctx.info.description}`);
const caches = { old: new trees.old(dev), new: new trees.new(dev) };

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
const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
function buf(data: Float32Array | number) {
  const size = typeof data === "number" ? data : data.byteLength;
  const b = dev.createBuffer({ size: Math.ceil(size / 16) * 16, usage });
  if (typeof data !== "number") dev.queue.writeBuffer(b, 0, data);
  return b;
}
async function read(b: GPUBuffer): Promise<Uint32Array> {
  const r = dev.createBuffer({
    size: b.size,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const e = dev.createCommandEncoder();
  e.copyBufferToBuffer(b, 0, r, 0, b.size);
  dev.queue.submit([e.finish()]);
  await r.mapAsync(GPUMapMode.READ);
  const out = new Uint32Array(r.getMappedRange().slice(0));
  r.unmap();
  r.destroy();
  return out;
}
const median = (a: number[]) => a.slice().sort((x, y) => x - y)[a.length >> 1];

const T = 2048, heads = 8, hd = 128, H = heads * hd, blk = 32, nb = T / blk;
for (const lrpe of [false, true]) {
  const dk = lrpe ? 2 * hd : hd;
  const uni = dev.createBuffer({
    size: 48,
    usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
  });
  dev.queue.writeBuffer(
    uni,
    0,
    new Uint32Array([T, heads, hd, dk, H, 0, 0, nb, lrpe ? 1 : 0, 0, 0, 0]),
  );
  const rates = buf(Float32Array.from({ length: heads }, (_, i) => 0.001 + 0.1 * i));
  const qkvu = buf(random(T * 4 * H, 1, 1)), qp = buf(random(heads * T * dk, 2, 1));
  const kp = buf(random(heads * T * dk, 3, 1)), sb = buf(random(heads * nb * dk * hd, 4, 1));
  const kvs = buf(heads * nb * dk * hd * 4), o = buf(T * H * 4);
  const defs = { ACT_SILU: true, LRPE: lrpe, BLK: blk, BLK2_4: blk * blk / 4 };
  const results: string[] = [];
  const outs: Record<string, Uint32Array[]> = {};
  for (const which of ["old", "new"] as const) {
    const kvP: GPUComputePipeline = await caches[which].get("lightning", {
      ...defs,
      STAGE_KV: true,
    });
    const outP: GPUComputePipeline = await caches[which].get("lightning", {
      ...defs,
      STAGE_OUT: true,
    });
    const entries = (p: GPUComputePipeline, m: Record<number, GPUBuffer>) =>
      dev.createBindGroup({
        layout: p.getBindGroupLayout(0),
        entries: Object.entries(m).map(([k, buffer]) => ({
          binding: Number(k),
          resource: { buffer },
        })),
      });
    const kvBG = entries(kvP, { 0: uni, 1: rates, 2: qkvu, 4: kp, 6: kvs });
    const outBG = entries(outP, { 0: uni, 1: rates, 2: qkvu, 3: qp, 4: kp, 6: sb, 8: o });
    const kvGroups = which === "old"
      ? [Math.ceil(dk / 64), nb, heads]
      : [Math.ceil(dk * hd / 64 / 128), nb, heads];
    const kvPass = (p: GPUComputePassEncoder) => {
      p.setPipeline(kvP);
      p.setBindGroup(0, kvBG);
      p.dispatchWorkgroups(kvGroups[0], kvGroups[1], kvGroups[2]);
    };
    const outPass = (p: GPUComputePassEncoder) => {
      p.setPipeline(outP);
      p.setBindGroup(0, outBG);
      p.dispatchWorkgroups(nb, heads, 1);
    };
    await timePasses(dev, 5, kvPass);
    await timePasses(dev, 5, outPass);
    outs[which] = [await read(kvs), await read(o)];
    const tk = median(await timePasses(dev, reps, kvPass)) / 1e3;
    const to = median(await timePasses(dev, reps, outPass)) / 1e3;
    results.push(`${which}: kv ${tk.toFixed(1)} µs, out ${to.toFixed(1)} µs`);
  }
  const same = (a: Uint32Array, b: Uint32Array) =>
    a.length === b.length && a.every((x, i) => x === b[i]);
  console.log(
    `dk ${dk}: ${results.join("; ")}; bit-equal kv ${same(outs.old[0], outs.new[0])}, out ${
      same(outs.old[1], outs.new[1])
    }`,
  );
}
