/**
 * The benchmark: `deno task bench` (the default model on the CPU backend and on the WebGPU adapters
 * this machine has) and `deno task bench:gpu` (random bf16 weights at the released 385M, 1B and 7B
 * shapes, generated here, run as bf16 and quantized to int8 at load). Each adapter's results go to
 * `bench/results/<adapter>.json` with a Markdown table (`<adapter>.md`) and SVG plots;
 * `bench/results/summary.md` gathers the latest. A report made on the GL backend is named with
 * `-gl` (Mesa calls its Vulkan and GL adapters both "llvmpipe").
 *
 *   deno run -A bench/run.ts [--suite default|gpu] [--shapes 385M,1B,7B] [--weights bf16,int8]
 *                            [--quick] [--merge] [--readback auto|map]
 *   deno run -A bench/run.ts --suite cpu [--baseline BEFORE.jsonl] [--quick] [--repeat 3]
 *                            [--runs NOW.jsonl]
 *   deno run -A bench/run.ts --merge-from OTHER.json [--shapes 7B]
 *
 * `--suite cpu` measures the CPU backend at the edge (`bench/cpu_edge.ts`, one process per row:
 * the default model, and the 385M shape with random bf16 weights as bf16 and int8, 1 and 2
 * threads) into `bench/results/cpu_edge.json`, `.md` and `cpu_edge_prefill.svg`, each rate the best
 * of `--repeat` runs with their range; `--baseline` adds the rows of an older checkout measured
 * with the same script (its JSON lines) as "before" columns; `--runs` takes the "now" rows from
 * such a file instead of measuring them (rows measured elsewhere, e.g. interleaved with the
 * baseline's, one process each).
 *
 * `--merge` keeps the runs of other shapes (and weight types) already in the adapter's report;
 * `--merge-from` takes the runs (of the given shapes) of a report written elsewhere (another
 * command on the same adapter) into this one and redraws the table and plots without measuring.
 * `--readback map` (gpu suite) maps every readback instead of reading small ones through a canvas
 * (`WebGpuBackendOptions.readback`): the before of that change, in the same run's conditions.
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { CpuBackend } from "../src/cpu/backend.ts";
import type { Backend } from "../src/engine/backend.ts";
import { WebGpuBackend } from "../src/gpu/backend.ts";
import { acquireDevice, type GpuContext, hasWebGpu } from "../src/gpu/device.ts";
import { loadConfig, type ModelConfig } from "../src/model/config.ts";
import { randomSource, RELEASED_SHAPES, shapeConfig } from "../src/model/random_weights.ts";
import { stateBytes } from "../src/model/state.ts";
import { openSafetensors } from "../src/model/weights/safetensors.ts";
import type { TensorSource } from "../src/model/weights/source.ts";
import {
  type DecodeRecord,
  measureDecode,
  measureEncode,
  measurePrefill,
  type PrefillRecord,
  profileDecodeStep,
  randomIds,
} from "./measure.ts";
import { lineChart, markdownTable } from "./report.ts";
import type { CpuEdgeRecord, Rate } from "./cpu_edge.ts";

const RESULTS = new URL("./results/", import.meta.url).pathname;
const DEFAULT_MODEL = new URL("../models/tnl-shakespeare-6m/", import.meta.url).pathname;

/** Everything measured for one model on one backend. */
interface RunRecord {
  backend: string;
  device: string;
  shape: string;
  params: number;
  dtype: string;
  loadMs: number;
  stateBytes: number;
  decode: DecodeRecord[];
  prefill: PrefillRecord[];
  /** Decode with K steps per readback against one readback per step, same adapter, same run. */
  readbackRatio?: {
    k: number;
    ratio: number;
    kTokensPerSecond: number;
    oneTokensPerSecond: number;
  };
  profile?: Awaited<ReturnType<typeof profileDecodeStep>>;
  /** The batch-1 profile with sampling (T 0.8, top-k 50, top-p 0.95) instead of greedy. */
  profileSampled?: Awaited<ReturnType<typeof profileDecodeStep>>;
  /** The same profile at the largest batch measured. */
  profileBatched?: Awaited<ReturnType<typeof profileDecodeStep>> & { batch: number };
  /** GPU time per kernel of one prefill chunk. */
  prefillProfile?: {
    tokens: number;
    kernels: { kernel: string; us: number; dispatches: number }[];
  };
  encode?: Awaited<ReturnType<typeof measureEncode>>;
  notes: string[];
}

interface Plan {
  contexts: number[];
  batches: number[];
  prefill: number[];
  steps: number;
  rounds: number;
  sampled: boolean;
}

/** The sampling settings of the sampled measurements. */
const SAMPLED = { temperature: 0.8, topP: 0.95, topK: 50 };

function randomIdsFor(c: ModelConfig, n: number): Int32Array {
  return randomIds(n, c.vocabSize, 5);
}

function paramCount(c: ModelConfig): number {
  const lin = c.numLayers *
    (4 * c.hiddenDim * c.embedDim + c.embedDim * c.hiddenDim + 3 * c.gluDim * c.embedDim);
  return lin + c.vocabSize * c.embedDim + c.lrpe.filter(Boolean).length * c.hiddenDim;
}

async function runModel(
  label: string,
  backend: Backend,
  config: ModelConfig,
  dtype: string,
  loadMs: number,
  plan: Plan,
): Promise<RunRecord> {
  const rec: RunRecord = {
    backend: backend.kind,
    device: backend.device,
    shape: label,
    params: paramCount(config),
    dtype,
    loadMs,
    stateBytes: stateBytes(config),
    decode: [],
    prefill: [],
    notes: [],
  };
  const log = (s: string) => console.error(`[${label} ${backend.kind}] ${s}`);
  for (const context of plan.contexts) {
    const r = await measureDecode(backend, {
      batch: 1,
      context,
      steps: plan.steps,
      rounds: plan.rounds,
    });
    rec.decode.push(r);
    log(
      `decode b1 ctx ${context}: ${r.tokensPerSecond.toFixed(1)} tok/s (${
        r.msPerStep.toFixed(3)
      } ms/step)`,
    );
  }
  if (backend.decodesAhead) {
    // The same calls one after another: what continuing them on the device gives.
    const r = await measureDecode(backend, {
      batch: 1,
      context: plan.contexts[0],
      steps: plan.steps,
      rounds: plan.rounds,
      ahead: false,
    });
    rec.decode.push(r);
    const k = rec.decode.find((d) => d.context === plan.contexts[0])!;
    const note = `decode b1 ctx ${plan.contexts[0]}, calls one after another: ${
      r.tokensPerSecond.toFixed(1)
    } tok/s (continued on the device: ${k.tokensPerSecond.toFixed(1)})`;
    rec.notes.push(note);
    log(note);
  }
  if (backend.decodeSampled) {
    const k = rec.decode.find((d) => d.context === plan.contexts[0])!;
    const one = await measureDecode(backend, {
      batch: 1,
      context: plan.contexts[0],
      steps: 1,
      rounds: Math.max(8, plan.rounds * 2),
    });
    rec.decode.push(one);
    rec.readbackRatio = {
      k: plan.steps,
      ratio: k.tokensPerSecond / one.tokensPerSecond,
      kTokensPerSecond: k.tokensPerSecond,
      oneTokensPerSecond: one.tokensPerSecond,
    };
    log(
      `one readback per step: ${one.tokensPerSecond.toFixed(1)} tok/s; K=${plan.steps} is ${
        rec.readbackRatio.ratio.toFixed(1)
      }x`,
    );
  }
  for (const batch of plan.batches) {
    if (batch > backend.maxBatch) continue;
    const r = await measureDecode(backend, {
      batch,
      context: 128,
      steps: plan.steps,
      rounds: Math.max(2, Math.ceil(plan.rounds / 2)),
    });
    rec.decode.push(r);
    log(`decode b${batch} ctx 128: ${r.tokensPerSecond.toFixed(1)} tok/s total`);
  }
  if (plan.sampled) {
    const r = await measureDecode(backend, {
      batch: 1,
      context: plan.contexts[0],
      steps: plan.steps,
      rounds: plan.rounds,
      sampling: SAMPLED,
    });
    rec.decode.push(r);
    log(`decode b1 sampled (T 0.8, top-k 50, top-p 0.95): ${r.tokensPerSecond.toFixed(1)} tok/s`);
  }
  for (const n of plan.prefill) {
    const r = await measurePrefill(backend, n, 2);
    rec.prefill.push(r);
    log(`prefill ${n}: ${r.tokensPerSecond.toFixed(0)} tok/s (${r.ms.toFixed(1)} ms)`);
  }
  if (backend instanceof WebGpuBackend) {
    rec.encode = await measureEncode(backend, 1);
    log(
      `encode+submit: ${rec.encode.usPerStep.toFixed(0)} us/step, ${
        rec.encode.usPerDispatch.toFixed(1)
      } us/dispatch`,
    );
    const T = Math.min(2048, backend.prefiller.capacity);
    const s = backend.allocState();
    try {
      const kernels = await backend.prefiller.profile(
        (s as unknown as { slot: number }).slot,
        0,
        randomIdsFor(config, T),
      );
      rec.prefillProfile = { tokens: T, kernels };
      const total = kernels.reduce((a, k) => a + k.us, 0);
      log(`prefill ${T} GPU time by kernel (each timed alone): ${total.toFixed(0)} us`);
      for (const k of kernels) log(`  ${k.kernel}: ${k.us.toFixed(0)} us (${k.dispatches})`);
    } finally {
      backend.releaseState(s);
    }
    rec.profile = await profileDecodeStep(backend, 1);
    if (plan.sampled) {
      rec.profileSampled = await profileDecodeStep(backend, 1, 20, SAMPLED);
      const k = rec.profileSampled.kernels.find((k) => k.kernel === "sample");
      if (k) log(`sampling kernels, T 0.8 top-k 50 top-p 0.95: ${k.us.toFixed(1)} us/step`);
    }
    const maxB = Math.min(backend.maxBatch, Math.max(1, ...plan.batches));
    if (maxB > 1) {
      rec.profileBatched = { batch: maxB, ...await profileDecodeStep(backend, maxB) };
      log(`GPU time per step at batch ${maxB}: ${rec.profileBatched.totalUs.toFixed(0)} us`);
      for (const k of rec.profileBatched.kernels) log(`  ${k.kernel}: ${k.us.toFixed(1)} us`);
    }
    if (rec.profile.kernels.length) {
      log(
        `GPU time per step (b1, one pass per dispatch): ${
          rec.profile.totalUs.toFixed(0)
        } us in ${rec.profile.dispatches} dispatches`,
      );
      for (const k of rec.profile.kernels) {
        log(`  ${k.kernel}: ${k.us.toFixed(1)} us (${k.dispatches} dispatches)`);
      }
    }
  }
  return rec;
}

/**
 * Report file name of an adapter: its description without parentheses, plus `-gl` on the GL
 * backend (Mesa names its Vulkan and GL adapters alike; Vulkan is the default on Linux).
 */
export function reportName(
  description: string,
  backend = Deno.env.get("DENO_WEBGPU_BACKEND"),
): string {
  const base = description.toLowerCase().replace(/\(.*?\)/g, "").replace(/[^a-z0-9]+/g, "-")
    .replace(/^-|-$/g, "").slice(0, 48) || "adapter";
  return backend?.toLowerCase() === "gl" ? `${base}-gl` : base;
}

/** Runs are one per model shape and weight type. */
const runKey = (r: RunRecord) => `${r.shape}|${r.dtype}`;

async function writeReport(
  adapter: string,
  runs: RunRecord[],
  meta: Record<string, unknown>,
  merge = false,
  name = reportName(adapter),
): Promise<string> {
  await Deno.mkdir(RESULTS, { recursive: true });
  const date = new Date().toISOString().slice(0, 10);
  if (merge) {
    // Keep the earlier runs of shapes this run did not measure (one report, several commands).
    try {
      const old = JSON.parse(await Deno.readTextFile(`${RESULTS}${name}.json`));
      const kept = (old.runs as RunRecord[]).filter((o) =>
        !runs.some((r) => runKey(r) === runKey(o))
      );
      runs = [...kept, ...runs];
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
  // Smallest model first, bf16 before int8.
  runs = [...runs].sort((a, b) => a.params - b.params || a.dtype.localeCompare(b.dtype));
  const json = { date, adapter, ...meta, runs };
  await Deno.writeTextFile(`${RESULTS}${name}.json`, JSON.stringify(json, null, 1) + "\n");
  const rows: (string | number)[][] = [];
  for (const r of runs) {
    const b1 = r.decode.filter((d) =>
      d.batch === 1 && d.stepsPerReadback > 1 && d.sampling === "greedy" && d.ahead !== false
    );
    const one = r.decode.find((d) => d.stepsPerReadback === 1 && d.batch === 1);
    const best = r.decode.filter((d) =>
      d.batch > 1
    ).sort((a, b) => b.tokensPerSecond - a.tokensPerSecond)[0];
    const pf = r.prefill.at(-1);
    rows.push([
      r.shape,
      r.backend,
      r.dtype,
      b1.map((d) => `${Math.round(d.tokensPerSecond)} @${d.context}`).join(", ") ||
      (one ? `${Math.round(one.tokensPerSecond)}` : "-"),
      one && r.readbackRatio
        ? `${Math.round(one.tokensPerSecond)} (K=${r.readbackRatio.k}: ${
          r.readbackRatio.ratio.toFixed(1)
        }×)`
        : "-",
      best ? `${Math.round(best.tokensPerSecond)} @b${best.batch}` : "-",
      r.prefill.map((p) => `${Math.round(p.tokensPerSecond)} @${p.tokens}`).join(", "),
      pf ? pf.ms.toFixed(0) : "-",
    ]);
  }
  const md = [
    `### ${adapter} (${date})`,
    "",
    markdownTable(
      [
        "model",
        "backend",
        "weights",
        "decode b1 tok/s @context",
        "one readback/step tok/s",
        "best batched tok/s",
        "prefill tok/s @tokens",
        "longest prefill ms",
      ],
      rows,
    ),
    "",
  ];
  for (const r of runs) {
    if (r.profile?.kernels.length) {
      md.push(
        `GPU time of one batch-1 decode step, ${r.shape} ${r.dtype} (${r.profile.dispatches} dispatches, each timed in its own pass): ${
          r.profile.totalUs.toFixed(0)
        } µs; CPU encode+submit ${r.encode?.usPerStep.toFixed(0)} µs/step (${
          r.encode?.usPerDispatch.toFixed(1)
        } µs/dispatch).`,
        "",
      );
      const sampled = r.profileSampled?.kernels.find((k) => k.kernel === "sample");
      const greedy = r.profile.kernels.find((k) => k.kernel === "sample");
      if (sampled && greedy) {
        md.push(
          `Sampling kernels per step: ${greedy.us.toFixed(1)} µs greedy, ${
            sampled.us.toFixed(0)
          } µs with T ${SAMPLED.temperature}, top-k ${SAMPLED.topK}, top-p ${SAMPLED.topP}.`,
          "",
        );
      }
      md.push(
        markdownTable(
          ["kernel", "dispatches/step", "µs/step"],
          r.profile.kernels.map((k) => [k.kernel, k.dispatches, k.us]),
        ),
        "",
      );
    }
  }
  await Deno.writeTextFile(`${RESULTS}${name}.md`, md.join("\n"));
  const series = (pick: (r: RunRecord) => [number, number][], lbl: (r: RunRecord) => string) =>
    runs.map((r) => ({ label: lbl(r), points: pick(r) })).filter((s) => s.points.length > 0);
  const lbl = (r: RunRecord) => `${r.shape} ${r.backend} ${r.dtype}`;
  await Deno.writeTextFile(
    `${RESULTS}${name}_decode_context.svg`,
    lineChart(
      `Decode, batch 1 — ${adapter}`,
      "context length (tokens)",
      "tokens/s",
      series(
        (r) =>
          r.decode.filter((d) =>
            d.batch === 1 && d.stepsPerReadback > 1 && d.sampling === "greedy" && d.ahead !== false
          )
            .map((d) => [d.context, d.tokensPerSecond]),
        lbl,
      ),
    ),
  );
  await Deno.writeTextFile(
    `${RESULTS}${name}_throughput.svg`,
    lineChart(
      `Decode throughput vs concurrent sessions — ${adapter}`,
      "concurrent sessions",
      "tokens/s (total)",
      series((r) =>
        r.decode.filter((d) => d.context === 128 && d.stepsPerReadback > 1).map((
          d,
        ) => [d.batch, d.tokensPerSecond]), lbl),
    ),
  );
  await Deno.writeTextFile(
    `${RESULTS}${name}_prefill.svg`,
    lineChart(
      `Prefill — ${adapter}`,
      "prompt length (tokens)",
      "tokens/s",
      series((r) => r.prefill.map((p) => [p.tokens, p.tokensPerSecond]), lbl),
    ),
  );
  await Deno.writeTextFile(`${RESULTS}${name}.md`, md.join("\n"));
  console.error(`wrote ${RESULTS}${name}.{json,md} and plots`);
  return md.join("\n");
}

/** Gather every adapter's Markdown into summary.md. */
async function writeSummary(): Promise<void> {
  const parts: string[] = [
    "# Benchmark results",
    "",
    "Written by `deno task bench` / `deno task bench:gpu`; one section per adapter.",
    "",
  ];
  for await (const e of Deno.readDir(RESULTS)) {
    if (e.name.endsWith(".md") && e.name !== "summary.md") {
      parts.push(await Deno.readTextFile(RESULTS + e.name), "");
    }
  }
  await Deno.writeTextFile(`${RESULTS}summary.md`, parts.join("\n"));
}

async function loadDefault(): Promise<{ config: ModelConfig; source: TensorSource }> {
  const config = await loadConfig(DEFAULT_MODEL + "config.json");
  return { config, source: await openSafetensors(DEFAULT_MODEL + "model.safetensors") };
}

async function timed<T>(f: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const v = await f();
  return [v, performance.now() - t0];
}

async function defaultSuite(args: { quick: boolean; webgpuOnly: boolean }): Promise<void> {
  const runs: RunRecord[] = [];
  const small: Plan = {
    contexts: args.quick ? [512] : [512, 4096],
    batches: [8, 32],
    prefill: args.quick ? [512] : [512, 2048],
    steps: 16,
    rounds: args.quick ? 2 : 4,
    sampled: true,
  };
  if (!args.webgpuOnly) {
    const { config, source } = await loadDefault();
    const [cpu, ms] = await timed(() => CpuBackend.load(source, config, "default"));
    source.close();
    runs.push(
      await runModel("tnl-shakespeare-6m", cpu, config, "bf16", ms, {
        ...small,
        rounds: small.rounds * 8,
      }),
    );
    await cpu.dispose();
  }
  let adapter = `cpu (${navigator.hardwareConcurrency} cores)`;
  if (hasWebGpu()) {
    let ctx: GpuContext | null = null;
    try {
      ctx = await acquireDevice();
    } catch (e) {
      console.error(`no WebGPU adapter: ${(e as Error).message}`);
    }
    if (ctx) {
      const { config, source } = await loadDefault();
      const [gpu, ms] = await timed(() =>
        WebGpuBackend.load(source, config, "default", { context: ctx, maxBatch: 32, maxSlots: 40 })
      );
      source.close();
      runs.push(await runModel("tnl-shakespeare-6m", gpu, config, "bf16", ms, small));
      await gpu.dispose();
      const backend = Deno.env.get("DENO_WEBGPU_BACKEND");
      adapter = `${ctx.info.description}${backend ? ` (${backend})` : ""}`;
      const cpuRun = runs.find((r) => r.backend === "cpu"),
        gpuRun = runs.find((r) => r.backend === "webgpu");
      if (cpuRun && gpuRun) {
        const c = cpuRun.decode[0].tokensPerSecond, g = gpuRun.decode[0].tokensPerSecond;
        const note = `CPU backend / WebGPU on ${ctx.info.description}, batch-1 decode at context ${
          cpuRun.decode[0].context
        }: ${(c / g).toFixed(2)}× (${c.toFixed(0)} vs ${g.toFixed(0)} tok/s), measured in one run`;
        cpuRun.notes.push(note);
        console.error(note);
      }
    }
  }
  await writeReport(adapter, runs, {
    machine: `${Deno.build.os} ${Deno.build.arch}, ${navigator.hardwareConcurrency} cores`,
    deno: Deno.version.deno,
  });
}

async function gpuSuite(
  shapes: string[],
  weights: string[],
  quick: boolean,
  merge: boolean,
  readback: "auto" | "map",
): Promise<void> {
  const ctx = await acquireDevice();
  const runs: RunRecord[] = [];
  const readbacks = new Set<string>();
  for (const [shape, dtype] of shapes.flatMap((s) => weights.map((w) => [s, w] as const))) {
    const quantize = dtype === "int8" ? "int8" : "none";
    const config = shapeConfig(shape);
    const big = shape === "7B";
    const plan: Plan = {
      contexts: quick ? [512] : big ? [512, 4096] : [512, 4096, 32768],
      batches: big ? [16] : quick ? [16, 64] : [8, 16, 32, 64],
      prefill: quick ? [2048] : big ? [2048] : [512, 2048, 8192],
      steps: 64,
      rounds: quick ? 3 : 6,
      sampled: !quick,
    };
    const source = randomSource(config, { dtype: "BF16", fast: true });
    console.error(
      `[${shape}] generating ${
        (paramCount(config) * 2 / 1e9).toFixed(2)
      } GB of random bf16 weights${quantize === "int8" ? ", quantized to int8 at upload" : ""}`,
    );
    const [gpu, ms] = await timed(() =>
      WebGpuBackend.load(source, config, `random ${shape}`, {
        context: ctx,
        maxBatch: 64,
        maxSlots: big ? 20 : 72,
        quantize,
        readback,
      })
    );
    readbacks.add(gpu.readback);
    runs.push(await runModel(shape, gpu, config, dtype, ms, plan));
    await gpu.dispose();
  }
  await writeReport(ctx.info.description, runs, {
    machine: `${Deno.build.os} ${Deno.build.arch}, ${navigator.hardwareConcurrency} cores`,
    deno: Deno.version.deno,
    features: ctx.info.features,
    shapes: Object.fromEntries(shapes.map((s) => [s, RELEASED_SHAPES[s]])),
    readback: [...readbacks].join(","),
  }, merge);
}

/** Run `bench/cpu_edge.ts` in a process of its own; returns its record. */
async function cpuEdgeRow(argv: string[]): Promise<CpuEdgeRecord> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--v8-flags=--expose-gc",
      new URL("./cpu_edge.ts", import.meta.url).pathname,
      ...argv,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error(`cpu_edge.ts ${argv.join(" ")} failed`);
  const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
  return JSON.parse(lines[lines.length - 1]);
}

/** The CPU edge rows, with the baseline's (an older checkout, same script) beside them. */
async function cpuSuite(
  baselinePath: string | undefined,
  quick: boolean,
  repeat: string | undefined,
  runsPath?: string,
): Promise<void> {
  const rows: string[][] = [
    ["--shape", "default"],
    ["--shape", "385M", "--weights", "bf16"],
    ["--shape", "385M", "--weights", "bf16", "--threads", "2"],
    ["--shape", "385M", "--weights", "int8"],
    ["--shape", "385M", "--weights", "int8", "--threads", "2"],
  ];
  const records = async (path: string): Promise<CpuEdgeRecord[]> =>
    (await Deno.readTextFile(path)).trim().split("\n").map((l) => JSON.parse(l));
  const runs: CpuEdgeRecord[] = runsPath ? await records(runsPath) : [];
  const extra = [...(quick ? ["--quick"] : []), ...(repeat ? ["--repeat", repeat] : [])];
  if (!runsPath) { for (const r of rows) runs.push(await cpuEdgeRow([...r, ...extra])); }
  const before: CpuEdgeRecord[] = baselinePath ? await records(baselinePath) : [];
  const f = (v: number | undefined, d = 1) => v === undefined ? "–" : v.toFixed(d);
  const cell = (
    r: CpuEdgeRecord | undefined,
    get: (r: CpuEdgeRecord) => number | string | undefined,
    d = 1,
  ) => {
    const v = r ? get(r) : undefined;
    return typeof v === "string" ? v : f(v, d);
  };
  // A rate measured several times: the best, then the range of the repeats.
  const rated = (v: Rate | undefined) =>
    v === undefined
      ? "–"
      : v.range && v.range[0] !== v.range[1]
      ? `${f(v.tokensPerSecond)} (${f(v.range[0])}-${f(v.range[1])})`
      : f(v.tokensPerSecond);
  const metrics: [string, (r: CpuEdgeRecord) => number | string | undefined, number][] = [
    ["load s", (r) => r.loadMs / 1000, 1],
    ["RSS after load GB", (r) => r.rssAfterLoad / 1e9, 3],
    ["peak RSS at load GB", (r) => r.peakRssAtLoad === undefined ? "–" : r.peakRssAtLoad / 1e9, 3],
    ["prefill 256 tok/s", (r) => rated(r.prefill["256"]), 1],
    ["prefill 2048 tok/s", (r) => rated(r.prefill["2048"]), 1],
    ["decode b1 tok/s", (r) => rated(r.decode.b1), 1],
    ["decode b8 tok/s", (r) => rated(r.decode.b8), 1],
    ["prefill 2048 tok/CPU-s", (r) => r.prefill["2048"]?.tokensPerCpuSecond, 1],
    ["decode b1 tok/CPU-s", (r) => r.decode.b1?.tokensPerCpuSecond, 1],
  ];
  const name = (r: CpuEdgeRecord) =>
    `${r.shape === "default" ? "default model" : r.shape} ${r.weights}, ${r.threads ?? 1} thr`;
  const header = ["", ...runs.map(name), ...before.map((r) => `before: ${name(r)}`)];
  const md = [
    `## CPU backend at the edge (${Deno.build.os} ${Deno.build.arch}, ${navigator.hardwareConcurrency} cores)`,
    "",
    `${new Date().toISOString().slice(0, 10)}, Deno ${Deno.version.deno}. One process per column;`,
    "385M: random bf16 weights (`randomSource` fast mode; their generation is part of the load),",
    "int8 quantized at load. tok/CPU-s counts the CPU time of every thread of the process: the",
    "machine is shared with other processes (1-minute load average at each column's start:",
    `${[...runs, ...before].map((r) => f(r.loadavg?.[0])).join(", ")}), so wall rates are noisy;`,
    "each rate is the best of its repeats, their range in parentheses.",
    "",
    markdownTable(
      header,
      metrics.map(([m, get, d]) => [
        m,
        ...runs.map((r) => cell(r, get, d)),
        ...before.map((r) => cell(r, get, d)),
      ]),
    ),
    "",
  ].join("\n");
  await Deno.mkdir(RESULTS, { recursive: true });
  await Deno.writeTextFile(
    `${RESULTS}cpu_edge.json`,
    JSON.stringify({ date: new Date().toISOString(), runs, before }, null, 2) + "\n",
  );
  await Deno.writeTextFile(`${RESULTS}cpu_edge.md`, md);
  const big = [...runs, ...before.map((r) => ({ ...r, weights: `${r.weights} before` }))]
    .filter((r) => r.shape !== "default");
  const label = (r: CpuEdgeRecord) => `${r.weights}, ${r.threads ?? 1} thr`;
  await Deno.writeTextFile(
    `${RESULTS}cpu_edge_prefill.svg`,
    lineChart(
      "CPU prefill, 385M (best of repeats)",
      "prompt length (tokens)",
      "tokens/s",
      big.map((r) => ({
        label: label(r),
        points: Object.entries(r.prefill).map(([n, v]) => [Number(n), v.tokensPerSecond]),
      })),
    ),
  );
  console.log(md);
}

if (import.meta.main) {
  const args = parseArgs(Deno.args, {
    string: ["suite", "shapes", "weights", "merge-from", "baseline", "repeat", "runs", "readback"],
    boolean: ["quick", "webgpu-only", "merge"],
  });
  const suite = args.suite ?? "default";
  if (args["merge-from"]) {
    const { date: _date, adapter, runs, ...meta } = JSON.parse(
      await Deno.readTextFile(args["merge-from"]),
    );
    if (typeof adapter !== "string" || !Array.isArray(runs)) {
      throw new Error(`${args["merge-from"]}: not a benchmark report (adapter, runs)`);
    }
    const only = args.shapes ? String(args.shapes).split(",") : null;
    const taken = (runs as RunRecord[]).filter((r) => !only || only.includes(r.shape));
    await writeReport(adapter, taken, meta, true);
  } else if (suite === "cpu") {
    await cpuSuite(args.baseline, Boolean(args.quick), args.repeat, args.runs);
  } else if (suite === "gpu") {
    const weights = String(args.weights ?? "bf16,int8").split(",");
    const bad = weights.filter((w) => w !== "bf16" && w !== "int8");
    if (bad.length) throw new Error(`--weights: expected bf16 and/or int8, got ${bad.join(",")}`);
    const readback = args.readback ?? "auto";
    if (readback !== "auto" && readback !== "map") {
      throw new Error(`--readback: expected auto or map, got ${readback}`);
    }
    await gpuSuite(
      String(args.shapes ?? "385M,1B,7B").split(","),
      weights,
      Boolean(args.quick),
      Boolean(args.merge),
      readback,
    );
  } else {
    await defaultSuite({ quick: Boolean(args.quick), webgpuOnly: Boolean(args["webgpu-only"]) });
  }
  await writeSummary();
}
