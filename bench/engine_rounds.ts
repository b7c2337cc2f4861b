/**
 * Where a scheduler round's time goes: the engine in-process (no HTTP) under N concurrent clients
 * that send requests back to back, with every round's phases (admit, prefill, decode, settle)
 * recorded through `EngineOptions.onRound`. Prints per level the tokens per second, TTFT
 * percentiles, the mean phase times, the decode batch and steps.
 *
 *   deno run -A bench/engine_rounds.ts [--shape 385m | --model DIR] [--streams 1,8,64]
 *     [--seconds 8] [--tokens 256] [--backend webgpu|cpu] [--show N (first N rounds of each level)]
 *     [--show-last N (its last N rounds: the steady state)]
 *     [--round-ms BUSY,STEADY[,CONTINUED] (the engine's round targets; default: its own)]
 *     [--no-ahead (no decode round continued on the device: `EngineOptions.decodeAhead` off)]
 *     [--worker (the CPU backend in a worker, as the server runs it)]
 *     [--kept (each client continues its own session, its state kept: no store, no codec)]
 *     [--readback auto|map (WebGPU: small readbacks through a canvas, or every one mapped)]
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import type { RoundInfo } from "../src/engine/engine.ts";
import { loadModel } from "../src/load.ts";
import { writeShapeModel } from "./serve_model.ts";
import { percentiles } from "./serve_stats.ts";

const args = parseArgs(Deno.args, {
  string: [
    "shape",
    "model",
    "streams",
    "seconds",
    "tokens",
    "backend",
    "show",
    "show-last",
    "round-ms",
    "readback",
  ],
  boolean: ["worker", "kept", "no-ahead"],
  default: { streams: "1,8,64", seconds: "8", tokens: "256", backend: "webgpu" },
});
let dir = args.model ?? "";
if (!dir) {
  dir = await Deno.makeTempDir({ prefix: "tnl-rounds-" });
  await writeShapeModel(dir, args.shape ?? "385m");
}
const rounds: RoundInfo[] = [];
const [busy, steady, continued] = (args["round-ms"] ?? "").split(",").map(Number);
const roundMs = args["round-ms"] ? { busy, steady, ...(continued ? { continued } : {}) } : null;
const model = await loadModel(dir, {
  backend: args.backend as "webgpu" | "cpu",
  ...(args.worker ? { worker: true } : {}),
  ...(args.readback ? { webgpu: { readback: args.readback as "auto" | "map" } } : {}),
  engine: {
    onRound: (r) => rounds.push(r),
    decodeAhead: !args["no-ahead"],
    ...(roundMs ? { roundMs } : {}),
  },
});
const engine = model.engine();
const words = "the king is dead and long live the new king of all".split(" ");
const tokens = Number(args.tokens), seconds = Number(args.seconds);

for (const streams of args.streams.split(",").map(Number)) {
  rounds.length = 0;
  const continued0 = engine.stats().continuedRounds;
  const ttft: number[] = [];
  let generated = 0;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  const client = async (c: number) => {
    const own = engine.newSession();
    let n = 0;
    while (performance.now() < end) {
      const prompt = model.tokenizer.encode(words.slice(0, 8).join(" ") + ` ${c} ${n++}`);
      const start = performance.now();
      let first = true;
      for await (
        const ev of engine.generate({
          session: args.kept ? own : engine.newSession(),
          prompt,
          maxTokens: tokens,
          sampling: { temperature: 0.8, seed: c * 1000 + n },
          stopAtEos: false,
          keepState: Boolean(args.kept),
        })
      ) {
        if (ev.type === "token" && ev.tokens.length) {
          if (first) ttft.push(performance.now() - start);
          first = false;
          if (performance.now() < end) generated += ev.tokens.length;
        }
      }
    }
  };
  await Promise.all(Array.from({ length: streams }, (_, c) => client(c)));
  const secs = (Math.min(performance.now(), end) - t0) / 1000;
  const mean = (f: (r: RoundInfo) => number) =>
    rounds.length ? rounds.reduce((a, r) => a + f(r), 0) / rounds.length : 0;
  const p = percentiles(ttft, [50, 95]);
  console.log(
    `${streams} streams: ${(generated / secs).toFixed(0)} tok/s, ${rounds.length} rounds, ` +
      `${engine.stats().continuedRounds - continued0} continued on the device, ` +
      `TTFT p50 ${p.p50?.toFixed(1)} p95 ${p.p95?.toFixed(1)} ms; per round: admit ` +
      `${mean((r) => r.ms.admit).toFixed(2)} prefill ${mean((r) => r.ms.prefill).toFixed(2)} ` +
      `(${mean((r) => r.prefillSeqs).toFixed(1)} seqs, ${
        mean((r) => r.prefillTokens).toFixed(0)
      } tok) decode ${mean((r) => r.ms.decode).toFixed(2)} (batch ${
        mean((r) => r.batch).toFixed(1)
      }, steps ${mean((r) => r.steps).toFixed(1)}) settle ${
        mean((r) => r.ms.settle).toFixed(2)
      } ms`,
  );
  const last = Number(args["show-last"] ?? 0);
  const shown = [
    ...rounds.slice(0, Number(args.show ?? 0)),
    ...(last > 0 ? rounds.slice(-last) : []),
  ];
  for (const r of shown) {
    console.log(
      `  round: +${r.admitted} admitted, prefill ${r.prefillSeqs} seqs ${r.prefillTokens} tok ` +
        `${r.ms.prefill.toFixed(1)} ms, decode b${r.batch} × ${r.steps} ${
          r.ms.decode.toFixed(1)
        } ms, ` +
        `settle ${r.settled} ${r.ms.settle.toFixed(1)} ms`,
    );
  }
}
await model.dispose();
