/**
 * Accuracy of int8 weights against the stored bf16 weights on the default model: held-out
 * log-likelihood (nats per token and per character, perplexity) of `bench/data/shakespeare_heldout.txt`
 * (the end of TinyShakespeare, inside the model's held-out 10%), in 256-token windows. Runs on the
 * CPU reference and, where there is an adapter, on WebGPU; writes
 * `bench/results/int8_accuracy.{json,md}`.
 *
 *   deno run -A bench/quant_eval.ts [--backends cpu,webgpu] [--out NAME]
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { CpuBackend } from "../src/cpu/backend.ts";
import type { Backend } from "../src/engine/backend.ts";
import { heldOutNll } from "../src/engine/perplexity.ts";
import { WebGpuBackend } from "../src/gpu/backend.ts";
import { hasWebGpu } from "../src/gpu/device.ts";
import { loadConfig } from "../src/model/config.ts";
import type { WeightQuantization } from "../src/model/quantize.ts";
import { openWeights } from "../src/model/weights/open.ts";
import { Tokenizer } from "../src/tokenizer/tokenizer.ts";
import { markdownTable } from "./report.ts";

const MODEL = new URL("../models/tnl-shakespeare-6m/", import.meta.url).pathname;
const TEXT = new URL("./data/shakespeare_heldout.txt", import.meta.url);
const RESULTS = new URL("./results/", import.meta.url).pathname;

/** One evaluation row. */
interface Row {
  backend: string;
  device: string;
  weights: "bf16" | "int8";
  nllPerToken: number;
  nllPerChar: number;
  perplexity: number;
  tokens: number;
  seconds: number;
}

async function load(kind: string, quantize: WeightQuantization): Promise<Backend> {
  const config = await loadConfig(MODEL + "config.json");
  const src = await openWeights(MODEL);
  try {
    return kind === "cpu"
      ? await CpuBackend.load(src, config, "default", { quantize })
      : await WebGpuBackend.load(src, config, "default", { quantize, maxSlots: 4, maxBatch: 4 });
  } finally {
    src.close();
  }
}

if (import.meta.main) {
  const args = parseArgs(Deno.args, { string: ["backends", "out"] });
  const backends = String(args.backends ?? (hasWebGpu() ? "cpu,webgpu" : "cpu")).split(",");
  const text = await Deno.readTextFile(TEXT);
  const tokenizer = await Tokenizer.load(MODEL + "tokenizer.model");
  const ids = tokenizer.encode(text);
  const rows: Row[] = [];
  for (const kind of backends) {
    for (const quantize of ["none", "int8"] as const) {
      const backend = await load(kind, quantize);
      const t0 = performance.now();
      const r = await heldOutNll(backend, ids);
      const seconds = (performance.now() - t0) / 1000;
      // Characters scored: each window's first token is context only.
      const chars = text.length * (r.tokens / ids.length);
      rows.push({
        backend: backend.kind,
        device: backend.device,
        weights: quantize === "int8" ? "int8" : "bf16",
        nllPerToken: r.nll,
        nllPerChar: (r.nll * r.tokens) / chars,
        perplexity: Math.exp(r.nll),
        tokens: r.tokens,
        seconds,
      });
      console.error(
        `${backend.kind} ${quantize}: ${r.nll.toFixed(5)} nats/token over ${r.tokens} tokens`,
      );
      await backend.dispose();
    }
  }
  const date = new Date().toISOString().slice(0, 10);
  const json = {
    date,
    model: "tnl-shakespeare-6m",
    text: "bench/data/shakespeare_heldout.txt (TinyShakespeare characters 1,100,000-1,115,394)",
    window: 256,
    textTokens: ids.length,
    rows,
  };
  const name = args.out ?? "int8_accuracy";
  await Deno.mkdir(RESULTS, { recursive: true });
  await Deno.writeTextFile(`${RESULTS}${name}.json`, JSON.stringify(json, null, 1) + "\n");
  const md = [
    `### int8 weights against bf16, tnl-shakespeare-6m, held-out text (${date})`,
    "",
    markdownTable(
      [
        "backend",
        "device",
        "weights",
        "nats/token",
        "Δ vs bf16",
        "nats/char",
        "perplexity",
        "tokens",
      ],
      rows.map((r) => {
        const base = rows.find((b) => b.backend === r.backend && b.weights === "bf16");
        return [
          r.backend,
          r.device,
          r.weights,
          r.nllPerToken.toFixed(4),
          base ? (r.nllPerToken - base.nllPerToken).toFixed(4) : "-",
          r.nllPerChar.toFixed(4),
          r.perplexity.toFixed(2),
          r.tokens,
        ];
      }),
    ),
    "",
  ].join("\n");
  await Deno.writeTextFile(`${RESULTS}${name}.md`, md);
  console.log(md);
}
