/**
 * One CPU-backend measurement, in a process of its own (so that its resident memory is its own):
 * load time, RSS after load, prefill rates and decode rates at batch 1 and 8 (per wall second and
 * per CPU second of the process, since the machine may be shared), for the default
 * model or a released shape with random weights (`randomSource` fast mode, bf16). Prints one JSON
 * line; `deno run -A bench/run.ts --suite cpu` runs it for every row and writes the report.
 *
 *   deno run -A --v8-flags=--expose-gc bench/cpu_edge.ts --shape 385M --weights int8 [--threads 2]
 *     [--repeat 3]   (each rate measured so many times: the best and the range are reported)
 *     [--arena-states N]   (states kept in the wasm arena, `CpuModelOptions.arenaStates`; default 8)
 *
 * Uses only `CpuBackend.load` and the `Backend` interface, so the same file measures an older
 * checkout of the backend (copy it there) in the same conditions.
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { CpuBackend } from "../src/cpu/backend.ts";
import { loadConfig } from "../src/model/config.ts";
import { randomSource, shapeConfig } from "../src/model/random_weights.ts";
import { openSafetensors } from "../src/model/weights/safetensors.ts";
import process from "node:process";

/** One timed run: wall and process CPU seconds (every thread), and the tokens it made. */
interface Timed {
  tokens: number;
  wallS: number;
  cpuS: number;
}

async function time(tokens: number, f: () => Promise<unknown>): Promise<Timed> {
  const c0 = process.cpuUsage(), t0 = performance.now();
  await f();
  const wallS = (performance.now() - t0) / 1000, c = process.cpuUsage(c0);
  return { tokens, wallS, cpuS: (c.user + c.system) / 1e6 };
}

/** Prefill of `n` random tokens into a fresh state (last logits), `repeats` runs summed. */
async function prefill(b: CpuBackend, n: number, repeats: number): Promise<Timed> {
  const ids = Int32Array.from({ length: n }, (_, i) => 3 + ((i * 7919) % (b.config.vocabSize - 3)));
  const runs: Timed[] = [];
  for (let r = 0; r < repeats; r++) {
    const st = b.allocState();
    runs.push(await time(n, () => b.prefill(st, ids, "last")));
    b.releaseState(st);
  }
  return sum(runs);
}

/** `steps` decode steps of `batch` sequences after 16 tokens of context. */
async function decode(b: CpuBackend, batch: number, steps: number): Promise<Timed> {
  const states = Array.from({ length: batch }, () => b.allocState());
  for (const [i, s] of states.entries()) {
    await b.prefill(s, Int32Array.from({ length: 16 }, (_, j) => 3 + i * 16 + j), "none");
  }
  const tokens = Int32Array.from(states, (_, i) => 100 + i);
  await b.decode(states, tokens); // warm-up
  const t = await time(steps * batch, async () => {
    for (let k = 0; k < steps; k++) await b.decode(states, tokens);
  });
  for (const s of states) b.releaseState(s);
  return t;
}

function sum(runs: Timed[]): Timed {
  return runs.reduce((a, r) => ({
    tokens: a.tokens + r.tokens,
    wallS: a.wallS + r.wallS,
    cpuS: a.cpuS + r.cpuS,
  }));
}

/** Tokens per wall second, and per CPU second of the process (all its threads). */
export interface Rate {
  /** Tokens per wall-clock second: the best of the repeats. */
  tokensPerSecond: number;
  /** Tokens per second of CPU time (best): less sensitive to other processes on a shared machine. */
  tokensPerCpuSecond: number;
  /** Lowest and highest tokens per wall second over the repeats. */
  range?: [number, number];
}

/** The best of `repeats` measurements and their range. */
async function best(repeats: number, f: () => Promise<Timed>): Promise<Rate> {
  const runs: Timed[] = [];
  for (let r = 0; r < repeats; r++) runs.push(await f());
  const wall = runs.map((t) => t.tokens / t.wallS), cpu = runs.map((t) => t.tokens / t.cpuS);
  return {
    tokensPerSecond: Math.max(...wall),
    tokensPerCpuSecond: Math.max(...cpu),
    range: [Math.min(...wall), Math.max(...wall)],
  };
}

/** What one measurement reports. */
export interface CpuEdgeRecord {
  /** "default" or a released shape. */
  shape: string;
  /** "bf16" (as stored) or "int8" (quantized at load). */
  weights: string;
  /** The backend's own description. */
  device: string;
  /** Milliseconds of `CpuBackend.load` (random weights are generated inside it, ~1 ns each). */
  loadMs: number;
  /** Resident set size before loading and after (after a full GC when --expose-gc is given). */
  rssBeforeLoad: number;
  /** Bytes. */
  rssAfterLoad: number;
  /**
   * The process's peak resident set size at the end of the load, in bytes (Linux `VmHWM`; the
   * transient buffers of the load count here; absent where /proc is not readable).
   */
  peakRssAtLoad?: number;
  /** Kernel threads asked for. */
  threads: number;
  /** Times each rate was measured (the best is reported, with the range). */
  repeats?: number;
  /** Prefill rates by prompt length. */
  prefill: Record<string, Rate>;
  /** Decode rates (all sequences) by "b<batch>". */
  decode: Record<string, Rate>;
  /** Load average of the machine (1 minute) at the start and the end: other processes' load. */
  loadavg: [number, number];
}

/** Peak resident set size of this process so far (Linux `VmHWM`), or undefined. */
function peakRss(): number | undefined {
  try {
    const m = Deno.readTextFileSync("/proc/self/status").match(/VmHWM:\s+(\d+) kB/);
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** A full GC (with --expose-gc), twice around a pause so that freed buffers are returned. */
async function settle(): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  await new Promise((r) => setTimeout(r, 100));
  gc?.();
}

if (import.meta.main) {
  const args = parseArgs(Deno.args, {
    string: ["shape", "weights", "prefill", "threads", "repeat", "arena-states"],
    boolean: ["quick"],
  });
  const threads = Number(args.threads ?? 1);
  const arenaStates = args["arena-states"] === undefined ? undefined : Number(args["arena-states"]);
  const repeats = Number(args.repeat ?? 3);
  const loadavg = () => Deno.loadavg()[0];
  const load0 = loadavg();
  const shape = args.shape ?? "385M";
  const weights = args.weights ?? "bf16";
  if (weights !== "bf16" && weights !== "int8") throw new Error(`--weights: bf16 or int8`);
  const quantize = weights === "int8" ? "int8" : "none";
  const prefillLengths = String(args.prefill ?? "256,2048").split(",").map(Number);
  const log = (s: string) => console.error(`[cpu ${shape} ${weights}] ${s}`);
  await settle();
  const rssBeforeLoad = Deno.memoryUsage().rss;
  let backend: CpuBackend;
  const t0 = performance.now();
  if (shape === "default") {
    const dir = new URL("../models/tnl-shakespeare-6m/", import.meta.url).pathname;
    const config = await loadConfig(dir + "config.json");
    const src = await openSafetensors(dir + "model.safetensors");
    backend = await CpuBackend.load(src, config, "default", { quantize, threads, arenaStates });
    src.close();
  } else {
    const config = shapeConfig(shape);
    const src = randomSource(config, { dtype: "BF16", fast: true });
    backend = await CpuBackend.load(src, config, `random ${shape}`, {
      quantize,
      threads,
      arenaStates,
    });
  }
  const loadMs = performance.now() - t0;
  const peakRssAtLoad = peakRss();
  await settle();
  const rssAfterLoad = Deno.memoryUsage().rss;
  log(`load ${(loadMs / 1000).toFixed(1)} s, RSS ${(rssAfterLoad / 1e9).toFixed(3)} GB`);
  const small = shape === "default";
  const prefills: Record<string, Rate> = {};
  const warm = backend.allocState();
  await backend.prefill(warm, Int32Array.of(3, 4, 5, 6, 7, 8, 9, 10), "last"); // warm-up
  backend.releaseState(warm);
  for (const n of prefillLengths) {
    const r = await best(repeats, () => prefill(backend, n, small ? 5 : 1));
    prefills[n] = r;
    log(
      `prefill ${n}: ${r.tokensPerSecond.toFixed(1)} tok/s (${
        r.tokensPerCpuSecond.toFixed(1)
      } per CPU s)`,
    );
  }
  const decodes: Record<string, Rate> = {};
  for (const batch of [1, 8]) {
    const r = await best(repeats, () => decode(backend, batch, small ? 200 : args.quick ? 8 : 24));
    decodes[`b${batch}`] = r;
    log(
      `decode b${batch}: ${r.tokensPerSecond.toFixed(1)} tok/s (${
        r.tokensPerCpuSecond.toFixed(1)
      } per CPU s)`,
    );
  }
  const rec: CpuEdgeRecord = {
    shape,
    weights,
    device: backend.device,
    loadMs,
    rssBeforeLoad,
    rssAfterLoad,
    peakRssAtLoad,
    threads,
    repeats,
    prefill: prefills,
    decode: decodes,
    loadavg: [load0, loadavg()],
  };
  console.log(JSON.stringify(rec));
  await backend.dispose();
}
