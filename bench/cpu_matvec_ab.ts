/**
 * Two builds of the CPU kernels, one process: the decode-shaped linear (T = 1) of each checkout's
 * `src/cpu/wasm` over weights streamed from memory (copies of one matrix, more than the caches
 * hold), the builds alternating pass by pass (and which goes first). A process of this machine keeps one of two speeds
 * for its life, so builds compared across processes compare luck; within one they share it.
 * Prints one JSON line per build: median and best ms per linear, and GB/s of weights read.
 *
 *   deno run -A bench/cpu_matvec_ab.ts --dirs ../before,. [--shape 4096,1024] [--copies 24]
 *     [--dtype int8|bf16] [--threads 1|2] [--passes 12]
 * @module
 */

import { parseArgs } from "node:util";

const { values: args } = parseArgs({
  options: {
    dirs: { type: "string", default: "." },
    shape: { type: "string", default: "4096,1024" },
    copies: { type: "string", default: "24" },
    dtype: { type: "string", default: "int8" },
    threads: { type: "string", default: "1" },
    passes: { type: "string", default: "12" },
  },
});
const [out, inDim] = args.shape.split(",").map(Number);
const copies = Number(args.copies), threads = Number(args.threads), passes = Number(args.passes);
const dtype = args.dtype;
if (!(out > 0 && inDim > 0 && copies > 0 && passes > 2) || !["int8", "bf16"].includes(dtype)) {
  throw new Error("usage: --shape OUT,IN --copies N --dtype int8|bf16 --passes N (> 2)");
}

interface Build {
  dir: string;
  // deno-lint-ignore no-explicit-any
  arena: any;
  mats: unknown[];
  x: Float32Array;
  y: Float32Array;
  ms: number[];
}

const bytesPerWeight = dtype === "int8" ? 1 : 2;
const builds: Build[] = [];
for (const dir of args.dirs.split(",")) {
  const root = new URL(`${dir.replace(/\/$/, "")}/`, `file://${Deno.cwd()}/`);
  const wasm = await import(new URL("src/cpu/wasm/mod.ts", root).href);
  const arena = new wasm.WasmArena(
    Math.ceil(out * inDim * copies * bytesPerWeight * 1.05) + (64 << 20),
    {
      shared: threads > 1,
    },
  );
  if (threads > 1) await arena.startThreads(threads);
  const mats = [];
  for (let c = 0; c < copies; c++) {
    if (dtype === "int8") {
      const data = arena.allocI8(out * inDim), scales = arena.allocF32(out);
      for (let i = 0; i < data.length; i++) data[i] = ((i * 31 + c) % 255) - 127;
      scales.fill(0.01);
      mats.push({ dtype: "int8", rows: out, cols: inDim, data, scales });
    } else {
      const data = arena.allocU16(out * inDim);
      for (let i = 0; i < data.length; i++) data[i] = 0x3c00 + ((i * 7 + c) % 97);
      mats.push({ dtype: "bf16", rows: out, cols: inDim, data });
    }
  }
  if (dtype === "int8") arena.reserveInt8Scratch(1, inDim);
  const x = arena.allocF32(inDim), y = arena.allocF32(out);
  for (let i = 0; i < inDim; i++) x[i] = Math.sin(i);
  builds.push({ dir, arena, mats, x, y, ms: [] });
}
for (let p = 0; p < passes; p++) {
  // Alternate which build goes first (A B, B A, ...): no build always follows the other.
  for (const b of p % 2 ? [...builds].reverse() : builds) {
    const t = performance.now();
    for (let k = 0; k < 4; k++) {
      for (const m of b.mats) b.arena.linear(b.x, 1, m, null, out, inDim, b.y);
    }
    b.ms.push((performance.now() - t) / (4 * copies));
  }
}
for (const b of builds) {
  const s = b.ms.slice(2).sort((p, q) => p - q); // the first two passes warm up
  const med = s[s.length >> 1];
  console.log(JSON.stringify({
    dir: b.dir,
    dtype,
    shape: [out, inDim],
    threads,
    msMedian: +med.toFixed(4),
    msBest: +s[0].toFixed(4),
    gbPerS: +((out * inDim * bytesPerWeight) / med / 1e6).toFixed(1),
    load: +Deno.loadavg()[0].toFixed(2),
  }));
}
for (const b of builds) b.arena.stopThreads?.();
