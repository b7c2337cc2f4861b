/**
 * Prototype of a persistent batch-1 decode kernel (issue 13, item 3), measured against the same
 * code run as one dispatch per stage. The 385M layer's stages at batch 1 with bf16 weights (random,
 * all 24 layers in one binding): qkvu (srms fused), the decayed linear attention (8 heads of 128,
 * state updated), out_proj (srms(o)·u gate, residual), SGLU, down_proj (residual); lm head and
 * sampling left out. Each lane group of one subgroup computes a row (lanes = the subgroup size,
 * `subgroupAdd`), each workgroup first copies the stage's input vector into workgroup memory
 * (atomic loads: the vectors cross workgroups, so they are written and read with atomics, which are
 * coherent; plain loads might hit a stale cache line).
 * - `multi`: one dispatch per stage (120 per token), as many workgroups as rows need;
 * - `persistent`: one dispatch per token of `w` workgroups striding over the rows, with a grid
 *   barrier between stages (arrival counter, each wait bounded by `MAX_SPIN` polls, after which an
 *   error flag is raised, read back, and no later wait blocks: never a hang). Without co-resident
 *   workgroups the numbers are wrong and `ok` is false: such a kernel ships only behind a probe and
 *   the multi-dispatch plan as its fallback.
 * Both modes run the same additions, so their results must be the same bits (`same_bits`).
 * Prints JSON lines and writes `bench/results/persistent_decode_<adapter>.json`.
 *
 *   deno run -A bench/persistent_decode.ts [--tokens 20] [--layers 24] [--workgroups 66,132,264,528]
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { acquireDevice } from "../src/gpu/device.ts";

const args = parseArgs(Deno.args, { string: ["tokens", "layers", "workgroups"] });
const TOKENS = Number(args.tokens ?? 20);
const LAYERS = Number(args.layers ?? 24);
const ctx = await acquireDevice();
const dev = ctx.device;
const SG = ctx.info.subgroupSize;
if (!SG) throw new Error("needs subgroups");
if (!dev.features.has("timestamp-query")) throw new Error("needs timestamp-query");
const D = 1024, H = 1024, G = 2816, HEADS = 8, HD = 128, MAX_SPIN = 200000;
const STAGES = 5;
const U = { qkvu: (4 * H * D) / 8, out: (D * H) / 8, w1: (G * D) / 8, w3: (D * G) / 8 };
const LAYER_U = U.qkvu + U.out + 2 * U.w1 + U.w3;

/**
 * A matrix-vector loop over rows `first`, `first + stride`, ...: four rows per lane group at a time
 * (16 weight loads in flight per lane for D columns), lanes striding over 8-column chunks of the
 * staged input `xs`, each row's sums reduced with `subgroupAdd`; `store(row, sums)` per row.
 */
function gemv(
  rows: number,
  cols: number,
  bases: string[],
  store: (row: string, sums: string[]) => string,
): string {
  const ks = [0, 1, 2, 3];
  const lines = [`      for (var row0 = first; row0 < ${rows}u; row0 += 4u * stride) {`];
  for (const k of ks) lines.push(`        let r${k} = min(row0 + ${k}u * stride, ${rows - 1}u);`);
  for (let b = 0; b < bases.length; b++) {
    lines.push(`        ${ks.map((k) => `var a${b}_${k} = 0.0;`).join(" ")}`);
  }
  lines.push(`        for (var c = lane; c < ${cols / 8}u; c += LANES) {`);
  lines.push(`          let x0 = xs[2u * c];`, `          let x1 = xs[2u * c + 1u];`);
  for (let b = 0; b < bases.length; b++) {
    for (const k of ks) {
      lines.push(
        `          { let w = bf8(${bases[b]} + r${k} * ${
          cols / 8
        }u + c); a${b}_${k} += dot(w[0], x0) + dot(w[1], x1); }`,
      );
    }
  }
  lines.push(`        }`);
  for (const k of ks) {
    const sums = bases.map((_, b) => `s${b}_${k}`);
    lines.push(
      `        { ${bases.map((_, b) => `let s${b}_${k} = subgroupAdd(a${b}_${k});`).join(" ")}`,
      `          if (lane == 0u && row0 + ${k}u * stride < ${rows}u) { ${store(`r${k}`, sums)} } }`,
    );
  }
  lines.push(`      }`);
  return lines.join("\n");
}

const code = `
struct Step { layer: u32, stage: u32, persistent: u32, pad: u32 };
@group(0) @binding(0) var<uniform> S: Step;
@group(0) @binding(1) var<storage, read> W: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> x: array<atomic<u32>>;
@group(0) @binding(3) var<storage, read_write> qkvu: array<atomic<u32>>;
@group(0) @binding(4) var<storage, read_write> o: array<atomic<u32>>;
@group(0) @binding(5) var<storage, read_write> g: array<atomic<u32>>;
@group(0) @binding(6) var<storage, read_write> state: array<f32>;
@group(0) @binding(7) var<storage, read_write> bar: array<atomic<u32>>;  // arrivals, error, exits

const D: u32 = ${D}u;
const H: u32 = ${H}u;
const G: u32 = ${G}u;
const HD: u32 = ${HD}u;
const LANES: u32 = ${SG}u;
const GROUPS: u32 = 256u / LANES;
const LAYER_U: u32 = ${LAYER_U}u;
const OFF_OUT: u32 = ${U.qkvu}u;
const OFF_W1: u32 = ${U.qkvu + U.out}u;
const OFF_W2: u32 = ${U.qkvu + U.out + U.w1}u;
const OFF_W3: u32 = ${U.qkvu + U.out + 2 * U.w1}u;

var<workgroup> xs: array<vec4<f32>, ${G / 4}>;
var<workgroup> red: array<f32, 256>;
var<workgroup> qs: array<f32, ${HD}>;
var<workgroup> ks: array<f32, ${HD}>;
var<workgroup> inv: f32;

fn ldx(i: u32) -> f32 { return bitcast<f32>(atomicLoad(&x[i])); }
fn ldq(i: u32) -> f32 { return bitcast<f32>(atomicLoad(&qkvu[i])); }
fn ldo(i: u32) -> f32 { return bitcast<f32>(atomicLoad(&o[i])); }
fn ldg(i: u32) -> f32 { return bitcast<f32>(atomicLoad(&g[i])); }

fn bf8(i: u32) -> array<vec4<f32>, 2> {
  let p = W[i];
  return array<vec4<f32>, 2>(
    vec4<f32>(bitcast<f32>(p.x << 16u), bitcast<f32>(p.x & 0xffff0000u), bitcast<f32>(p.y << 16u), bitcast<f32>(p.y & 0xffff0000u)),
    vec4<f32>(bitcast<f32>(p.z << 16u), bitcast<f32>(p.z & 0xffff0000u), bitcast<f32>(p.w << 16u), bitcast<f32>(p.w & 0xffff0000u)));
}

// 1/sqrt(mean(square) + 1e-6) of the values whose squares each thread summed (a fixed tree).
fn finish_rms(ss: f32, n: u32, tid: u32) {
  red[tid] = ss;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s >>= 1u) {
    if (tid < s) { red[tid] += red[tid + s]; }
    workgroupBarrier();
  }
  if (tid == 0u) { inv = 1.0 / sqrt(red[0] / f32(n) + 1e-6); }
  workgroupBarrier();
}

fn grid_sync(k: u32, nwg: u32, tid: u32) {
  storageBarrier();
  if (tid == 0u) {
    atomicAdd(&bar[0], 1u);
    var spins = 0u;
    loop {
      if (atomicLoad(&bar[1]) != 0u) { break; }
      if (atomicLoad(&bar[0]) >= k * nwg) { break; }
      spins++;
      if (spins > ${MAX_SPIN}u) { atomicStore(&bar[1], 1u); break; }
    }
  }
  workgroupBarrier();
  storageBarrier();
}

fn run_stage(layer: u32, stage: u32, wid: u32, nwg: u32, tid: u32) {
  let lane = tid % LANES;
  let first = wid * GROUPS + tid / LANES;
  let stride = nwg * GROUPS;
  let base = layer * LAYER_U;
  switch (stage) {
    case 0u: {  // qkvu = srms(x)·Wᵀ
      var ss = 0.0;
      for (var i = tid; i < D / 4u; i += 256u) {
        let v = vec4<f32>(ldx(4u * i), ldx(4u * i + 1u), ldx(4u * i + 2u), ldx(4u * i + 3u));
        xs[i] = v;
        ss += dot(v, v);
      }
      finish_rms(ss, D, tid);
${gemv(4 * H, D, ["base"], (r, a) => `atomicStore(&qkvu[${r}], bitcast<u32>(${a[0]} * inv));`)}
    }
    case 1u: {  // decayed linear attention, one task per (head, 8 columns); 4 state rows per thread
      for (var task = wid; task < ${HEADS * (HD / 8)}u; task += nwg) {
        let h = task / ${HD / 8}u;
        let cb = task % ${HD / 8}u;
        if (tid < HD) {
          let q = ldq(h * HD + tid);
          let k = ldq(H + h * HD + tid);
          qs[tid] = q / (1.0 + exp(-q));
          ks[tid] = k / (1.0 + exp(-k));
        }
        workgroupBarrier();
        let r = tid / 8u;
        let j = cb * 8u + tid % 8u;
        let v = ldq(2u * H + h * HD + j);
        let sb = (layer * ${HEADS}u + h) * HD * HD + j;
        let i0 = sb + r * HD;
        let i1 = i0 + 32u * HD;
        let i2 = i1 + 32u * HD;
        let i3 = i2 + 32u * HD;
        let s0 = 0.9 * state[i0] + ks[r] * v;
        let s1 = 0.9 * state[i1] + ks[r + 32u] * v;
        let s2 = 0.9 * state[i2] + ks[r + 64u] * v;
        let s3 = 0.9 * state[i3] + ks[r + 96u] * v;
        state[i0] = s0;
        state[i1] = s1;
        state[i2] = s2;
        state[i3] = s3;
        red[tid] = ((qs[r] * s0 + qs[r + 32u] * s1) + qs[r + 64u] * s2) + qs[r + 96u] * s3;
        workgroupBarrier();
        if (tid < 8u) {
          var oj = 0.0;
          for (var q = 0u; q < 32u; q++) { oj += red[q * 8u + tid]; }
          atomicStore(&o[h * HD + j], bitcast<u32>(oj));
        }
        workgroupBarrier();
      }
    }
    case 2u: {  // x += srms(o)·(u ⊙ o)·Woutᵀ
      var ss = 0.0;
      for (var i = tid; i < H / 4u; i += 256u) {
        let v = vec4<f32>(ldo(4u * i), ldo(4u * i + 1u), ldo(4u * i + 2u), ldo(4u * i + 3u));
        let q = 3u * H + 4u * i;
        xs[i] = v * vec4<f32>(ldq(q), ldq(q + 1u), ldq(q + 2u), ldq(q + 3u));
        ss += dot(v, v);
      }
      finish_rms(ss, H, tid);
${
  gemv(D, H, ["base + OFF_OUT"], (r, a) =>
    `atomicStore(&x[${r}], bitcast<u32>(ldx(${r}) + ${a[0]} * inv));`)
}
    }
    case 3u: {  // g = (srms(x)·W1ᵀ) ⊙ (srms(x)·W2ᵀ)
      var ss = 0.0;
      for (var i = tid; i < D / 4u; i += 256u) {
        let v = vec4<f32>(ldx(4u * i), ldx(4u * i + 1u), ldx(4u * i + 2u), ldx(4u * i + 3u));
        xs[i] = v;
        ss += dot(v, v);
      }
      finish_rms(ss, D, tid);
${
  gemv(G, D, ["base + OFF_W1", "base + OFF_W2"], (r, a) =>
    `atomicStore(&g[${r}], bitcast<u32>((${a[0]} * inv) * (${a[1]} * inv)));`)
}
    }
    default: {  // x += g·W3ᵀ
      for (var i = tid; i < G / 4u; i += 256u) {
        xs[i] = vec4<f32>(ldg(4u * i), ldg(4u * i + 1u), ldg(4u * i + 2u), ldg(4u * i + 3u));
      }
      workgroupBarrier();
${
  gemv(D, G, ["base + OFF_W3"], (r, a) =>
    `atomicStore(&x[${r}], bitcast<u32>(ldx(${r}) + ${a[0]}));`)
}
    }
  }
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
  if (S.persistent == 0u) {
    run_stage(S.layer, S.stage, wid.x, n.x, tid);
    return;
  }
  var k = 0u;
  for (var l = 0u; l < ${LAYERS}u; l++) {
    for (var s = 0u; s < ${STAGES}u; s++) {
      if (k > 0u) { grid_sync(k, n.x, tid); }
      run_stage(l, s, wid.x, n.x, tid);
      k++;
    }
    workgroupBarrier();
  }
  // The last workgroup to leave resets the counters for the next dispatch.
  storageBarrier();
  if (tid == 0u && atomicAdd(&bar[2], 1u) == n.x - 1u) {
    atomicStore(&bar[0], 0u);
    atomicStore(&bar[2], 0u);
  }
}`;

const module = dev.createShaderModule({ code });
const info = await module.getCompilationInfo();
const errs = info.messages.filter((m) => m.type === "error");
if (errs.length) throw new Error(errs.map((m) => `${m.lineNum}: ${m.message}`).join("; "));
const pipeline = await dev.createComputePipelineAsync({
  layout: "auto",
  compute: { module, entryPoint: "main" },
});
const fill = await dev.createComputePipelineAsync({
  layout: "auto",
  compute: {
    module: dev.createShaderModule({
      code: `@group(0) @binding(0) var<storage, read_write> w: array<u32>;
@compute @workgroup_size(256) fn main(@builtin(global_invocation_id) i: vec3<u32>, @builtin(num_workgroups) n: vec3<u32>) {
  for (var k = i.x; k < arrayLength(&w); k += n.x * 256u) {
    var h = k * 2654435761u; h ^= h >> 15u; h *= 2246822519u; h ^= h >> 13u;
    // two bf16 of magnitude below 2^-6 (exponent bits 0x3c..), random signs and mantissas
    let lo = 0x3c00u | (h & 0x807fu);
    let hi = 0x3c00u | ((h >> 16u) & 0x807fu);
    w[k] = lo | (hi << 16u);
  }
}`,
    }),
    entryPoint: "main",
  },
});

const STORAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
const wbuf = dev.createBuffer({ size: LAYERS * LAYER_U * 16, usage: STORAGE });
{
  const enc = dev.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(fill);
  pass.setBindGroup(
    0,
    dev.createBindGroup({
      layout: fill.getBindGroupLayout(0),
      entries: [{ binding: 0, resource: { buffer: wbuf } }],
    }),
  );
  pass.dispatchWorkgroups(1024);
  pass.end();
  dev.queue.submit([enc.finish()]);
}
const mk = (bytes: number) => dev.createBuffer({ size: bytes, usage: STORAGE });
const xb = mk(D * 4), qb = mk(4 * H * 4), ob = mk(H * 4), gb = mk(G * 4);
const sb = mk(LAYERS * HEADS * HD * HD * 4), bar = mk(16);
const x0 = Float32Array.from({ length: D }, (_, i) => Math.sin(i * 0.37) * 2);

function bindGroup(step: number[]): GPUBindGroup {
  const u = dev.createBuffer({ size: 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  dev.queue.writeBuffer(u, 0, new Uint32Array(step));
  const bufs = [u, wbuf, xb, qb, ob, gb, sb, bar];
  return dev.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: bufs.map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
}
const GROUPS = 256 / SG;
const rowsOf = [4 * H, 0, D, G, D];
const multi = Array.from({ length: LAYERS * STAGES }, (_, i) => {
  const l = Math.floor(i / STAGES), s = i % STAGES;
  return {
    bg: bindGroup([l, s, 0, 0]),
    groups: s === 1 ? HEADS * (HD / 8) : Math.ceil(rowsOf[s] / (4 * GROUPS)),
  };
});
const persistentBg = bindGroup([0, 0, 1, 0]);

/** Run TOKENS steps from the same start; GPU µs per token, x after, the error flag. */
async function run(
  mode: "multi" | "persistent",
  w = 0,
): Promise<{ us: number; x: Uint32Array; ok: boolean }> {
  dev.queue.writeBuffer(xb, 0, x0);
  const qs = dev.createQuerySet({ type: "timestamp", count: 2 });
  const res = dev.createBuffer({
    size: 16,
    usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
  });
  const rd = dev.createBuffer({
    size: 16 + D * 4,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const enc = dev.createCommandEncoder();
  enc.clearBuffer(sb);
  enc.clearBuffer(bar);
  const pass = enc.beginComputePass({
    timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 },
  });
  pass.setPipeline(pipeline);
  for (let t = 0; t < TOKENS; t++) {
    if (mode === "persistent") {
      pass.setBindGroup(0, persistentBg);
      pass.dispatchWorkgroups(w);
    } else {
      for (const d of multi) {
        pass.setBindGroup(0, d.bg);
        pass.dispatchWorkgroups(d.groups);
      }
    }
  }
  pass.end();
  enc.resolveQuerySet(qs, 0, 2, res, 0);
  enc.copyBufferToBuffer(res, 0, rd, 0, 16);
  enc.copyBufferToBuffer(xb, 0, rd, 16, D * 4);
  const flag = dev.createBuffer({
    size: 16,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  enc.copyBufferToBuffer(bar, 0, flag, 0, 16);
  dev.queue.submit([enc.finish()]);
  await rd.mapAsync(GPUMapMode.READ);
  await flag.mapAsync(GPUMapMode.READ);
  const bytes = rd.getMappedRange().slice(0);
  const t = new BigUint64Array(bytes, 0, 2);
  const f = new Uint32Array(flag.getMappedRange().slice(0));
  rd.unmap();
  flag.unmap();
  return { us: Number(t[1] - t[0]) / 1000 / TOKENS, x: new Uint32Array(bytes, 16), ok: f[1] === 0 };
}

const rows: Record<string, unknown>[] = [];
const emit = (r: Record<string, unknown>) => {
  rows.push(r);
  console.log(JSON.stringify(r));
};
await run("multi"); // warm-up (pipelines, caches)
const ref = await run("multi");
emit({ mode: "multi", dispatches_per_token: multi.length, us_per_token: +ref.us.toFixed(1) });
for (const w of (args.workgroups ?? "66,132,264,528").split(",").map(Number)) {
  let best = Infinity, last = ref;
  for (let i = 0; i < 2; i++) {
    last = await run("persistent", w);
    best = Math.min(best, last.us);
  }
  const same = last.x.every((v, i) => v === ref.x[i]);
  const fa = new Float32Array(last.x.buffer, last.x.byteOffset, D);
  const fb = new Float32Array(ref.x.buffer, ref.x.byteOffset, D);
  const maxDiff = Math.max(...fa.map((v, i) => Math.abs(v - fb[i])));
  emit({
    mode: "persistent",
    workgroups: w,
    us_per_token: +best.toFixed(1),
    ok: last.ok,
    same_bits: same,
    max_abs_diff: maxDiff,
  });
}
const adapter = ctx.info.description.toLowerCase().includes("h200")
  ? "nvidia-h200"
  : ctx.info.description.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "");
const out = new URL(`./results/persistent_decode_${adapter}.json`, import.meta.url).pathname;
await Deno.writeTextFile(
  out,
  JSON.stringify(
    {
      date: new Date().toISOString().slice(0, 10),
      adapter: ctx.info.description,
      shape: "385M layer stages, bf16, batch 1",
      layers: LAYERS,
      tokens: TOKENS,
      rows,
    },
    null,
    2,
  ) + "\n",
);
console.error(`wrote ${out}`);
