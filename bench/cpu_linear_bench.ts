/**
 * The CPU linear kernel: JS reference vs WebAssembly SIMD with f32 and bf16 weights, at the default
 * model's shapes (D 256, H 256, G 704, V 4096, 6 layers), decode (T = 1) and prefill (T = 64).
 *
 * ```sh
 * deno bench -A bench/cpu_linear_bench.ts   # Deno.bench, time per call
 * deno run -A bench/cpu_linear_bench.ts     # GMAC/s table, written to bench/results/cpu_linear.json
 * ```
 * "shape" cases repeat one matrix (it stays in cache: up to 4 MB); "model" cases run every linear
 * of the model in turn (25 MB of f32 weights, 12.6 MB in bf16), as a decode step reads them.
 * @module
 */

import { linear } from "../src/cpu/kernels.ts";
import { f32ToBf16, WasmArena } from "../src/cpu/wasm/mod.ts";

const D = 256, H = 256, G = 704, V = 4096, LAYERS = 6;
/** [name, out, in] of one layer's linears, then the head. */
const SHAPES: [string, number, number][] = [
  ["qkvu 1024x256", 4 * H, D],
  ["out 256x256", D, H],
  ["l1/l2 704x256", G, D],
  ["l3 256x704", D, G],
  ["head 4096x256", V, D],
];
const TS = [1, 64];
const T_MAX = 64;

interface Mat {
  out: number;
  inDim: number;
  f32: Float32Array;
  bf16: Uint16Array;
}

const weightBytes = (LAYERS * (4 * H * D + D * H + 3 * G * D) + V * D) * 6;
const arena = new WasmArena(weightBytes + T_MAX * (G + V) * 4 * 2 + (1 << 20));
let seed = 7;
const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) - 0.5;

function mat(out: number, inDim: number): Mat {
  const f32 = arena.allocF32(out * inDim);
  for (let i = 0; i < f32.length; i++) f32[i] = rand() * 0.1;
  const bf16 = arena.allocU16(out * inDim);
  f32ToBf16(f32, bf16);
  return { out, inDim, f32, bf16 };
}

const model: Mat[] = [];
for (let l = 0; l < LAYERS; l++) {
  model.push(mat(4 * H, D), mat(D, H), mat(G, D), mat(G, D), mat(D, G));
}
model.push(mat(V, D));
const byShape = SHAPES.map(([, out, inDim]) =>
  model.find((m) => m.out === out && m.inDim === inDim)!
);
const x = arena.allocF32(T_MAX * G);
for (let i = 0; i < x.length; i++) x[i] = rand();
const y = arena.allocF32(T_MAX * V);

type Variant = "js" | "wasm f32" | "wasm bf16";
const VARIANTS: Variant[] = ["js", "wasm f32", "wasm bf16"];

function run(v: Variant, m: Mat, T: number): void {
  const xs = x.subarray(0, T * m.inDim), ys = y.subarray(0, T * m.out);
  if (v === "js") linear(xs, T, m.f32, null, m.out, m.inDim, ys);
  else arena.linear(xs, T, v === "wasm f32" ? m.f32 : m.bf16, null, m.out, m.inDim, ys);
}

const macs = (ms: Mat[], T: number) => ms.reduce((s, m) => s + m.out * m.inDim * T, 0);

/** The cases: [group, name, MACs per call, function]. */
const cases: [string, string, number, () => void][] = [];
for (const T of TS) {
  for (const v of VARIANTS) {
    SHAPES.forEach(([name], k) => {
      const m = byShape[k];
      cases.push([`T=${T} ${name}`, v, macs([m], T), () => run(v, m, T)]);
    });
    cases.push([`T=${T} model`, v, macs(model, T), () => {
      for (const m of model) run(v, m, T);
    }]);
  }
}

if (!import.meta.main) {
  for (const [group, name, n, fn] of cases) {
    // The JS kernel at T = 64 takes ~0.1 s per model pass: bound the iterations.
    const slow = name === "js" && n > 2e7;
    Deno.bench({
      name: `${group}: ${name}`,
      group,
      baseline: name === "js",
      fn,
      n: slow ? 10 : undefined,
    });
  }
} else {
  /** Best-of-several GMAC/s of fn (each sample at least 50 ms). */
  const gmacs = (fn: () => void, n: number) => {
    const warm = performance.now();
    while (performance.now() - warm < 50) fn();
    let best = Infinity;
    for (let r = 0; r < 7; r++) {
      let k = 0;
      const t0 = performance.now();
      let t1 = t0;
      do {
        fn();
        k++;
      } while ((t1 = performance.now()) - t0 < 50);
      best = Math.min(best, (t1 - t0) / k);
    }
    return n / best / 1e6;
  };
  const results: { case: string; variant: string; macs: number; gmacPerS: number }[] = [];
  const table = new Map<string, Record<string, string>>();
  for (const [group, name, n, fn] of cases) {
    const g = gmacs(fn, n);
    results.push({ case: group, variant: name, macs: n, gmacPerS: Number(g.toFixed(3)) });
    const row = table.get(group) ?? {};
    row[name] = g.toFixed(2);
    table.set(group, row);
  }
  console.log("GMAC/s (best of 7 samples)");
  console.table(Object.fromEntries(table));
  const out = new URL("./results/cpu_linear.json", import.meta.url);
  await Deno.mkdir(new URL("./results/", import.meta.url), { recursive: true });
  await Deno.writeTextFile(
    out,
    JSON.stringify({ bench: "cpu_linear", date: new Date().toISOString(), results }, null, 2) +
      "\n",
  );
  console.log(`written ${out.pathname}`);
}
