/**
 * Microbenchmark of the sampling kernel's second stage (`wgsl/sample.wgsl`): GPU µs per dispatch
 * for several shapes (threads per sequence; thresholds per search pass, 1 = binary search; without
 * and with the compaction buffer; those that fit the device's workgroup memory), at batch 1 and 64,
 * on random normal logits over a 64,000-id vocabulary (the released models' size). The logits are
 * restored before every dispatch (the kernel rewrites them in place). Prints JSON lines.
 *
 *   deno run -A bench/sample_micro.ts
 * @module
 */

import { acquireDevice } from "../src/gpu/device.ts";
import {
  ARGMAX_BLOCK,
  LAYOUT_DEFINES,
  ROW,
  ROW_WORDS,
  SAMPLING,
  SAMPLING_DEFINES,
  SAMPLING_WORDS,
} from "../src/gpu/layout.ts";
import { SAMPLE_CANDIDATES, sampleDefines, sampleWorkgroupBytes } from "../src/gpu/sample_code.ts";
import { PipelineCache } from "../src/gpu/shaders.ts";
import { timePasses } from "../src/gpu/timing.ts";

const ctx = await acquireDevice();
const dev = ctx.device;
const cache = PipelineCache.for(dev);
const V = 64_000, MAX_B = 64, REPS = 20;
const blocks = Math.ceil(V / ARGMAX_BLOCK);
const STORAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;

function buf(bytes: number, usage = STORAGE): GPUBuffer {
  return dev.createBuffer({ size: Math.ceil(bytes / 16) * 16, usage });
}
function filled(data: ArrayBufferView<ArrayBuffer>, usage = STORAGE): GPUBuffer {
  const b = buf(data.byteLength, usage);
  dev.queue.writeBuffer(b, 0, data.buffer, data.byteOffset, data.byteLength);
  return b;
}

/** Standard normal logits × 3 (mulberry32 + Box-Muller), one row per sequence. */
function logitRows(B: number): Float32Array<ArrayBuffer> {
  let s = 12345;
  const rand = () => {
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  return Float32Array.from(
    { length: B * V },
    () => 3 * Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand()),
  );
}

/**
 * [threads, splits, candidates] per sequence: the binary search and (S+1)-ary ones, at 256 to 1024
 * threads, each without and with the compaction buffer of the searches' values.
 */
const SHAPES = [[256, 1], [256, 7], [512, 7], [1024, 1], [1024, 3], [1024, 7], [1024, 15]]
  .flatMap(([t, s]) => [[t, s, 0], [t, s, SAMPLE_CANDIDATES]]);
const settings = [
  { name: "T 0.8, top-k 50, top-p 0.95", temperature: 0.8, topK: 50, topP: 0.95 },
  { name: "T 1, top-p 0.9", temperature: 1, topK: 0, topP: 0.9 },
  { name: "T 1, top-k 50", temperature: 1, topK: 50, topP: 1 },
];
const params = filled(
  new Uint32Array([V, 4, 2, 1, Math.ceil(V / 32), blocks, 0, 0]),
  GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
);
const out: Record<string, unknown>[] = [];
for (const B of [1, MAX_B]) {
  const pristine = filled(logitRows(B));
  const logits = buf(B * V * 4);
  const rowsInit = new Uint32Array(B * ROW_WORDS);
  for (let b = 0; b < B; b++) {
    rowsInit[b * ROW_WORDS + ROW.slot] = b;
    rowsInit[b * ROW_WORDS + ROW.seedLo] = b + 1;
    rowsInit[b * ROW_WORDS + ROW.budget] = 0xffffffff;
  }
  const rows = filled(rowsInit);
  const ring = buf(B * 4 * 4);
  const counts = buf(B * V * 4);
  const seen = buf(B * Math.ceil(V / 32) * 4);
  const best = buf(B * blocks * 8);
  const bias = buf(B * 8);
  const ctl = filled(new Uint32Array([B, 0, 0, 0]));
  for (const s of settings) {
    const sp = new ArrayBuffer(B * SAMPLING_WORDS * 4);
    const f = new Float32Array(sp), u = new Uint32Array(sp);
    for (let b = 0; b < B; b++) {
      f[b * SAMPLING_WORDS + SAMPLING.temperature] = s.temperature;
      u[b * SAMPLING_WORDS + SAMPLING.topK] = s.topK;
      f[b * SAMPLING_WORDS + SAMPLING.topP] = s.topP;
      f[b * SAMPLING_WORDS + SAMPLING.repetition] = 1;
    }
    const spBuf = filled(new Uint8Array(sp));
    const defines = { ...LAYOUT_DEFINES, ...SAMPLING_DEFINES };
    const entries = (p: GPUComputePipeline, list: [number, GPUBuffer][]) =>
      dev.createBindGroup({
        layout: p.getBindGroupLayout(0),
        entries: list.map(([binding, buffer]) => ({ binding, resource: { buffer } })),
      });
    // The first stage once (its block arg-maxes feed every dispatch below).
    const prep = await cache.get("sample_prep", defines);
    {
      const enc = dev.createCommandEncoder();
      enc.copyBufferToBuffer(pristine, 0, logits, 0, B * V * 4);
      const pass = enc.beginComputePass();
      pass.setPipeline(prep);
      pass.setBindGroup(
        0,
        entries(prep, [
          [0, params],
          [1, ctl],
          [2, rows],
          [3, logits],
          [5, spBuf],
          [6, bias],
          [7, counts],
          [8, seen],
          [9, best],
        ]),
      );
      pass.dispatchWorkgroups(blocks, B);
      pass.end();
      dev.queue.submit([enc.finish()]);
    }
    for (const [threads, splits, candidates] of SHAPES) {
      const shape = { threads, splits, candidates };
      const fits = sampleWorkgroupBytes(shape) <= dev.limits.maxComputeWorkgroupStorageSize &&
        threads <= dev.limits.maxComputeInvocationsPerWorkgroup;
      if (!fits) continue;
      const p = await cache.get("sample", { ...defines, ...sampleDefines(shape) });
      const bg = entries(p, [
        [0, params],
        [1, ctl],
        [2, rows],
        [3, logits],
        [4, ring],
        [5, spBuf],
        [7, counts],
        [8, seen],
        [9, best],
      ]);
      const ns = await timePasses(
        dev,
        REPS,
        (pass) => {
          pass.setPipeline(p);
          pass.setBindGroup(0, bg);
          pass.dispatchWorkgroups(B);
        },
        (enc) => enc.copyBufferToBuffer(pristine, 0, logits, 0, B * V * 4),
      );
      const us = ns.map((t) => t / 1000).sort((a, b) => a - b);
      out.push({
        adapter: ctx.info.description,
        batch: B,
        setting: s.name,
        threads,
        splits,
        candidates,
        median_us: us[REPS >> 1],
        min_us: us[0],
      });
    }
  }
}
for (const r of out) console.log(JSON.stringify(r));
