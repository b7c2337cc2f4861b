/**
 * Where a batch-1 decode step's GPU time goes (random weights of a released shape): the step's
 * dispatches encoded `--steps` times in one timed compute pass, as the decode loop encodes them,
 * whole and with parts left out, against two floors:
 * - `full`: the decode plan and the sampler (greedy), what `bench:gpu` measures at batch 1;
 * - `no_attention`, `projections` (the four matrix-vector products of each layer alone), and each
 *   kernel label alone (`only_<label>`): what remains when the others are left out;
 * - `l2_resident`: the whole step on a second copy of the model whose layers all use layer 0's
 *   weights (28 MB at 385M), so the projections read weights the L2 cache holds, not DRAM;
 * - `empty_1wg`, `empty_wide`: as many dispatches of an empty kernel (1 and 1,056 workgroups),
 *   each writing the buffer the next one writes (so a barrier between each), the floor of the
 *   dispatch count alone.
 * A variant that leaves kernels out computes wrong numbers; only its time is of interest. Writes
 * `bench/results/decode_ablation_<adapter>[_<label>].json` and `.md`.
 *
 *   deno run -A bench/decode_ablation.ts [--shape 385M] [--steps 64] [--repeats 5]
 *     [--layers n] [--label x]
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { acquireDevice } from "../src/gpu/device.ts";
import { GpuModel } from "../src/gpu/model.ts";
import { ROW, ROW_WORDS, SAMPLING, SAMPLING_WORDS } from "../src/gpu/layout.ts";
import { encodeOps, type Op } from "../src/gpu/ops/mod.ts";
import { timePasses } from "../src/gpu/timing.ts";
import { randomSource, shapeConfig } from "../src/model/random_weights.ts";
import { markdownTable, writeProbeResults } from "./report.ts";

const args = parseArgs(Deno.args, {
  string: ["shape", "steps", "repeats", "layers", "label"],
});
const shape = String(args.shape ?? "385M");
const steps = Number(args.steps ?? 64);
const repeats = Number(args.repeats ?? 5);

const ctx = await acquireDevice();
const dev = ctx.device;
if (!dev.features.has("timestamp-query")) {
  console.error("decode_ablation: this adapter has no timestamp queries");
  Deno.exit(1);
}
const config = shapeConfig(shape, args.layers ? { decoder_layers: Number(args.layers) } : {});
const source = randomSource(config, { dtype: "BF16", fast: true });

/** A model with one sequence in slot 0 at position 16, greedy sampling, unlimited budget. */
async function model(aliasLayers: boolean): Promise<{ m: GpuModel; restore: () => void }> {
  const m = await GpuModel.create(ctx, config, source, `random ${shape}`, {
    maxBatch: 1,
    maxSlots: 2,
  });
  const layers = [...m.weights.layers];
  if (aliasLayers) m.weights.layers.fill(layers[0]);
  const rows = new Uint32Array(ROW_WORDS);
  rows[ROW.slot] = 0;
  rows[ROW.pos] = 16;
  rows[ROW.token] = 5;
  rows[ROW.budget] = 1 << 30;
  const sampling = new Float32Array(SAMPLING_WORDS);
  sampling[SAMPLING.topP] = 1;
  sampling[SAMPLING.repetition] = 1;
  dev.queue.writeBuffer(m.ctl, 0, new Uint32Array([1]));
  dev.queue.writeBuffer(m.rows, 0, rows);
  dev.queue.writeBuffer(m.sampling, 0, sampling);
  return { m, restore: () => m.weights.layers.splice(0, layers.length, ...layers) };
}

/** Median µs per step of `ops` encoded `steps` times in one pass (best of the passes' median). */
async function perStep(ops: readonly Op[]): Promise<number> {
  const ns = await timePasses(dev, repeats + 1, (pass) => {
    const last = { pipeline: null };
    for (let s = 0; s < steps; s++) encodeOps(pass, ops, 1, last);
  });
  const sorted = ns.slice(1).sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] / 1000 / steps;
}

/** `count` dispatches of an empty kernel of `groups` workgroups, each writing one shared word. */
async function emptyOps(count: number, groups: number): Promise<Op[]> {
  const pipeline = await dev.createComputePipelineAsync({
    layout: "auto",
    compute: {
      module: dev.createShaderModule({
        code: `@group(0) @binding(0) var<storage, read_write> word: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  if (g.x == 0u) { word[0] = word[0] + 1u; }
}`,
      }),
      entryPoint: "main",
    },
  });
  const buffer = dev.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE });
  const bindGroup = dev.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [{ binding: 0, resource: { buffer } }],
  });
  const op: Op = {
    label: "empty",
    pipeline,
    bindGroup,
    params: buffer,
    words: () => [],
    groups: () => [groups, 1, 1],
  };
  return Array.from({ length: count }, () => op);
}

const rows: { variant: string; dispatches: number; usPerStep: number; tokPerS: number }[] = [];
const record = async (variant: string, ops: readonly Op[]) => {
  const us = await perStep(ops);
  const row = {
    variant,
    dispatches: ops.length,
    usPerStep: +us.toFixed(1),
    tokPerS: Math.round(1e6 / us),
  };
  console.error(JSON.stringify(row));
  rows.push(row);
};

const plain = await model(false);
const plan = await plain.m.decodePlan(1);
const sample = await plain.m.samplePlan();
const full = [...plan, ...sample];
await perStep(full); // warm-up: first use, clocks up
await record("full", full);
await record("no_attention", full.filter((o) => o.label !== "attention"));
const projections = new Set(["qkvu", "out_proj", "glu", "down_proj"]);
await record("projections", plan.filter((o) => projections.has(o.label)));
for (const label of [...new Set(full.map((o) => o.label))]) {
  await record(`only_${label}`, full.filter((o) => o.label === label));
}
await record("full_again", full); // drift over the run (clocks, heat)
plain.restore();
plain.m.destroy();

const aliased = await model(true);
const hot = [...await aliased.m.decodePlan(1), ...await aliased.m.samplePlan()];
await perStep(hot);
await record("l2_resident", hot);
await record("l2_resident_projections", hot.filter((o) => projections.has(o.label)));
aliased.restore();
aliased.m.destroy();

await record("empty_1wg", await emptyOps(full.length, 1));
await record("empty_wide", await emptyOps(full.length, 1056));

const date = new Date().toISOString().slice(0, 10);
const adapter = ctx.info.description;
const cols = ["variant", "dispatches", "usPerStep", "tokPerS"] as const;
const written = await writeProbeResults(
  "decode_ablation",
  adapter,
  args.label,
  { date, adapter, shape, steps, repeats, rows },
  (command) => [
    `# Batch-1 decode step ablation, ${shape} bf16 on ${adapter}, ${date}`,
    "",
    `\`${command}\`: ${steps} steps per timed pass, the median of ${repeats} passes. Variants that`,
    "leave kernels out compute wrong numbers; only their time matters.",
    "",
    markdownTable([...cols], rows.map((r) => cols.map((c) => String(r[c])))),
    "",
  ],
);
console.error(`wrote ${written}`);
