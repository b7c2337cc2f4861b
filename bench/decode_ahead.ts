/**
 * What continuing decode calls on the device is worth (`decodeSampled`'s `ahead`, the engine's
 * `decodeAhead`): the same decode measured with calls one after another and with each call
 * continued while the host reads the one before, alternating, on the default adapter.
 *
 *   deno run -A bench/decode_ahead.ts [--model DIR | --shape 385M] [--batches 1,64] [--steps 64]
 *     [--rounds 8] [--repeats 3] [--label NAME]
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { WebGpuBackend } from "../src/gpu/backend.ts";
import { loadConfig } from "../src/model/config.ts";
import { randomSource, shapeConfig } from "../src/model/random_weights.ts";
import { openSafetensors } from "../src/model/weights/safetensors.ts";
import { measureDecode } from "./measure.ts";
import { fmtNum, markdownTable, writeProbeResults } from "./report.ts";

const args = parseArgs(Deno.args, {
  string: ["model", "shape", "batches", "steps", "rounds", "repeats", "label"],
});
const steps = Number(args.steps ?? 64);
const rounds = Number(args.rounds ?? 8);
const repeats = Number(args.repeats ?? 3);
const batches: number[] = (args.batches ?? "1,64").split(",").map(Number);

let model: string;
let backend: WebGpuBackend;
const maxBatch = Math.max(...batches);
if (args.model) {
  const dir = args.model.endsWith("/") ? args.model : args.model + "/";
  const config = await loadConfig(dir + "config.json");
  const src = await openSafetensors(dir + "model.safetensors");
  model = dir;
  backend = await WebGpuBackend.load(src, config, "default", { maxBatch, maxSlots: maxBatch })
    .finally(() => src.close());
} else {
  const shape = args.shape ?? "385M";
  const config = shapeConfig(shape);
  model = `random ${shape} bf16`;
  backend = await WebGpuBackend.load(
    randomSource(config, { dtype: "BF16", fast: true }),
    config,
    model,
    { maxBatch, maxSlots: maxBatch },
  );
}

const rows: {
  batch: number;
  ahead: boolean;
  repeat: number;
  tokPerS: number;
  msPerStep: number;
}[] = [];
for (const batch of batches) {
  for (let repeat = 0; repeat < repeats; repeat++) {
    for (const ahead of [false, true]) {
      const r = await measureDecode(backend, { batch, context: 64, steps, rounds, ahead });
      rows.push({ batch, ahead, repeat, tokPerS: r.tokensPerSecond, msPerStep: r.msPerStep });
      console.error(
        `b${batch} ${ahead ? "continued" : "one after another"}: ` +
          `${r.tokensPerSecond.toFixed(1)} tok/s (${r.msPerStep.toFixed(3)} ms/step)`,
      );
    }
  }
}
const adapter = backend.device;
await backend.dispose();

const date = new Date().toISOString().slice(0, 10);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const summary = batches.map((batch) => {
  const of = (ahead: boolean) =>
    median(rows.filter((r) => r.batch === batch && r.ahead === ahead).map((r) => r.tokPerS));
  return { batch, plain: of(false), continued: of(true), gain: of(true) / of(false) };
});
const written = await writeProbeResults(
  "decode_ahead",
  adapter,
  args.label,
  { date, adapter, model, steps, rounds, repeats, rows, summary },
  (command) => [
    `# Decode calls continued on the device, ${model} on ${adapter}, ${date}`,
    "",
    `\`${command}\`: ${rounds} calls of ${steps} sampled steps (greedy), context 64; the median`,
    `of ${repeats} alternating measurements each way.`,
    "",
    markdownTable(
      ["batch", "one after another (tok/s)", "continued (tok/s)", "ratio"],
      summary.map((s) => [s.batch, fmtNum(s.plain), fmtNum(s.continued), s.gain.toFixed(3)]),
    ),
    "",
  ],
);
console.error(`wrote ${written}`);
