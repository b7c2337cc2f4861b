/**
 * Where a prefill's time goes on a hardware adapter, for chunk capacities of the prefill buffers
 * (random weights of a released shape):
 * - stream: the GPU time of one chunk when chunks follow each other with no readback between them
 *   (the slope between a run of 1 chunk and one of `--chunks`, each ending in the last logits);
 * - latency: whole prompts through `WebGpuBackend.prefill`'s path (chunks of the capacity, last
 *   logits read back), and what is left of it beside the stream time (host work before the GPU
 *   starts, the readback).
 * Writes `bench/results/prefill_probe_<adapter>[_<label>].json` and `.md`.
 *
 *   deno run -A bench/prefill_probe.ts [--shape 385M] [--capacities 2048,4096,8192]
 *     [--prompts 512,2048,8192] [--chunks 5] [--layers n] [--label x]
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { WebGpuBackend } from "../src/gpu/backend.ts";
import { acquireDevice } from "../src/gpu/device.ts";
import { GpuPrefill, SHORT_CHUNK } from "../src/gpu/prefill.ts";
import { tileName } from "../src/gpu/gemm_tiling.ts";
import { randomSource, shapeConfig } from "../src/model/random_weights.ts";
import { randomIds } from "./measure.ts";
import { markdownTable, writeProbeResults } from "./report.ts";

const args = parseArgs(Deno.args, {
  string: ["shape", "capacities", "prompts", "chunks", "label", "repeats", "layers"],
});
const shape = String(args.shape ?? "385M");
const capacities = String(args.capacities ?? "2048,4096,8192").split(",").map(Number);
const prompts = String(args.prompts ?? "512,2048,8192").split(",").map(Number);
const chunks = Number(args.chunks ?? 5);
const repeats = Number(args.repeats ?? 3);

const ctx = await acquireDevice();
const config = shapeConfig(shape, args.layers ? { decoder_layers: Number(args.layers) } : {});
const backend = await WebGpuBackend.load(
  randomSource(config, { dtype: "BF16", fast: true }),
  config,
  `random ${shape}`,
  { context: ctx, maxBatch: 1, maxSlots: 4, prefillChunk: Math.min(...capacities) },
);

async function read(staging: GPUBuffer, bytes: number): Promise<ArrayBuffer> {
  await staging.mapAsync(GPUMapMode.READ, 0, bytes);
  const out = staging.getMappedRange(0, bytes).slice(0);
  staging.unmap();
  staging.destroy();
  return out;
}

/** Median ms of `f` over `repeats` runs after one warm-up. */
async function median(f: () => Promise<unknown>): Promise<number> {
  const ms: number[] = [];
  for (let r = 0; r <= repeats; r++) {
    const t0 = performance.now();
    await f();
    if (r > 0) ms.push(performance.now() - t0);
  }
  ms.sort((a, b) => a - b);
  return ms[Math.floor(ms.length / 2)];
}

const state = backend.allocState() as unknown as { slot: number };
const rows: Record<string, number | string>[] = [];
for (const cap of capacities) {
  const p = cap === backend.prefiller.capacity
    ? backend.prefiller
    : await GpuPrefill.create(backend.model, cap);
  if (p.capacity !== cap) throw new Error(`capacity ${cap} not possible here (got ${p.capacity})`);
  /** A prompt of `n` tokens in chunks of the capacity, the last logits read back. */
  const prompt = async (n: number) => {
    const ids = randomIds(n, config.vocabSize, 7);
    for (let c = 0; c < n; c += cap) {
      const last = c + cap >= n;
      await p.run(
        state.slot,
        c,
        ids.subarray(c, Math.min(n, c + cap)),
        last ? "last" : "none",
        read,
      );
    }
  };
  await prompt(cap * chunks); // warm-up: tuning and first compiles are behind, clocks up
  const one = await median(() => prompt(cap));
  const many = await median(() => prompt(cap * chunks));
  const stream = (many - one) / (chunks - 1);
  const row: Record<string, number | string> = {
    capacity: cap,
    streamMsPerChunk: +stream.toFixed(2),
    streamTokPerS: Math.round((cap * 1000) / stream),
    oneChunkMs: +one.toFixed(2),
    fixedMs: +(one - stream).toFixed(2),
    tiles: [...p.tiles].map(([k, t]) => `${k} ${tileName(t)}`).join(", "),
    shortTiles: [...p.shortTiles].map(([k, t]) => `${k} ${tileName(t)}`).join(", "),
  };
  for (const n of prompts) {
    const ms = await median(() => prompt(n));
    row[`prompt${n}Ms`] = +ms.toFixed(2);
    row[`prompt${n}TokPerS`] = Math.round((n * 1000) / ms);
  }
  console.error(JSON.stringify(row));
  rows.push(row);
  if (p !== backend.prefiller) p.destroy();
}
backend.releaseState(state as never);
await backend.dispose();

const date = new Date().toISOString().slice(0, 10);
const adapter = ctx.info.description;
const cols = Object.keys(rows[0]).filter((k) => !k.endsWith("iles"));
await writeProbeResults(
  "prefill_probe",
  adapter,
  args.label,
  { date, adapter, shape, rows },
  (command) => [
    `# Prefill probe, ${shape} bf16 on ${adapter}, ${date}`,
    "",
    `\`${command}\`. stream: GPU time per chunk with chunks back to back; fixed: one chunk's`,
    "latency minus that (host work before the GPU starts, the readback).",
    "",
    markdownTable(cols, rows.map((r) => cols.map((c) => String(r[c])))),
    "",
    ...rows.map((r) =>
      `- capacity ${r.capacity}: ${r.tiles}; chunks of at most ${SHORT_CHUNK} tokens: ${r.shortTiles}`
    ),
    "",
  ],
);
