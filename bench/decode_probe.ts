/**
 * Where one sequence's decode time goes on the CPU backend (385M, random bf16 weights): per token,
 * the time inside each arena linear (by shape), the pair linears (`glu`) and the recurrence, and
 * the rest (JS between kernels), with the process's CPU time per wall second (below 1 with one
 * thread, or below 2 with two: other processes had the cores). Prints one JSON line.
 *
 *   deno run -A bench/decode_probe.ts [bf16|int8] [threads] [steps]
 * @module
 */

import process from "node:process";
import { CpuBackend } from "../src/cpu/backend.ts";
import { WasmArena } from "../src/cpu/wasm/mod.ts";
import { randomSource, shapeConfig } from "../src/model/random_weights.ts";
const [weights = "bf16", threads = "1", steps = "40"] = Deno.args;
const acc: Record<string, number> = {};
for (const name of ["linear", "glu", "recurrent"] as const) {
  // deno-lint-ignore no-explicit-any
  const p = WasmArena.prototype as any;
  const f = p[name];
  p[name] = function (...a: unknown[]) {
    const t = performance.now();
    const r = f.apply(this, a);
    const k = name === "linear" ? `${a[4]}x${a[5]}` : name === "glu" ? `glu ${a[6]}x${a[7]}` : name;
    acc[k] = (acc[k] ?? 0) + performance.now() - t;
    return r;
  };
}
const config = shapeConfig("385M");
const src = randomSource(config, { dtype: "BF16", fast: true });
const t0 = performance.now();
const b = await CpuBackend.load(src, config, "r", {
  quantize: weights === "int8" ? "int8" : "none",
  threads: Number(threads),
  arenaStates: Number(Deno.env.get("ARENA_STATES") ?? 8),
});
const loadMs = performance.now() - t0;
const s = b.allocState();
await b.prefill(s, Int32Array.from({ length: 16 }, (_, j) => 3 + j), "none");
await b.decode([s], Int32Array.of(99));
const ms: number[] = [];
for (const k in acc) delete acc[k];
const cpu0 = process.cpuUsage(), w0 = performance.now();
for (let i = 0; i < Number(steps); i++) {
  const t = performance.now();
  await b.decode([s], Int32Array.of(100 + i));
  ms.push(performance.now() - t);
}
const cpu1 = process.cpuUsage(cpu0), wall = performance.now() - w0;
const sorted = [...ms].sort((a, b) => a - b);
const per = Object.fromEntries(
  Object.entries(acc).map(([k, v]) => [k, +(v / ms.length).toFixed(2)]),
);
const inK = Object.values(acc).reduce((a, b) => a + b, 0) / ms.length;
console.log(JSON.stringify({
  weights,
  threads,
  loadMs: Math.round(loadMs),
  load: +Deno.loadavg()[0].toFixed(2),
  cpuPerWall: +((cpu1.user + cpu1.system) / 1000 / wall).toFixed(2),
  sysMsPerTok: +(cpu1.system / 1000 / ms.length).toFixed(2),
  tokps: +(1000 * ms.length / wall).toFixed(1),
  med: +sorted[ms.length >> 1].toFixed(1),
  min: +sorted[0].toFixed(1),
  rest: +(wall / ms.length - inK).toFixed(2),
  per,
}));
await b.dispose();
