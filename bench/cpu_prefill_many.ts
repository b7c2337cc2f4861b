/**
 * Many short prompts on the CPU backend: one `prefill` per prompt against one `prefillMany` (the
 * rows of the prompts that fit in a chunk share a pass over the weights), alternating in one
 * process, the order flipped each pass, states released between runs (so both get the arena's
 * states). Prints one JSON line: the median milliseconds of each, and every run.
 *
 *   deno run -A bench/cpu_prefill_many.ts [--shape default|385M] [--weights bf16|int8]
 *     [--threads N] [--prompts 8] [--tokens 11] [--passes 6]
 * @module
 */

import { parseArgs } from "node:util";
import { CpuBackend } from "../src/cpu/backend.ts";
import { loadConfig } from "../src/model/config.ts";
import { randomSource, shapeConfig } from "../src/model/random_weights.ts";
import { openSafetensors } from "../src/model/weights/safetensors.ts";

const { values: args } = parseArgs({
  options: {
    shape: { type: "string", default: "385M" },
    weights: { type: "string", default: "bf16" },
    threads: { type: "string", default: "2" },
    prompts: { type: "string", default: "8" },
    tokens: { type: "string", default: "11" },
    passes: { type: "string", default: "6" },
  },
});
const quantize = args.weights === "int8" ? "int8" : "none";
const threads = Number(args.threads), N = Number(args.prompts), L = Number(args.tokens);
const passes = Number(args.passes);
let backend: CpuBackend;
if (args.shape === "default") {
  const dir = new URL("../models/tnl-shakespeare-6m/", import.meta.url).pathname;
  const src = await openSafetensors(dir + "model.safetensors");
  backend = await CpuBackend.load(src, await loadConfig(dir + "config.json"), "default", {
    quantize,
    threads,
  });
  src.close();
} else {
  const config = shapeConfig(args.shape);
  const src = randomSource(config, { dtype: "BF16", fast: true });
  backend = await CpuBackend.load(src, config, args.shape, { quantize, threads });
}
const prompts = Array.from(
  { length: N },
  (_, i) => Int32Array.from({ length: L }, (_, j) => 5 + ((i * 7 + j) % 300)),
);
const ms = { one: [] as number[], many: [] as number[] };
for (let p = 0; p < passes; p++) {
  for (const many of p % 2 ? [true, false] : [false, true]) {
    const items = prompts.map((tokens) => ({ state: backend.allocState(), tokens }));
    const t = performance.now();
    if (many) await backend.prefillMany(items);
    else for (const it of items) await backend.prefill(it.state, it.tokens, "none");
    ms[many ? "many" : "one"].push(performance.now() - t);
    for (const it of items) backend.releaseState(it.state);
  }
}
const median = (v: number[]) => +[...v].sort((a, b) => a - b)[v.length >> 1].toFixed(1);
console.log(JSON.stringify({
  date: new Date().toISOString(),
  shape: args.shape,
  weights: args.weights,
  threads,
  prompts: N,
  tokens: L,
  prefillEachMs: median(ms.one),
  prefillManyMs: median(ms.many),
  runs: { each: ms.one.map(Math.round), many: ms.many.map(Math.round) },
  load: +Deno.loadavg()[0].toFixed(2),
}));
await backend.dispose();
