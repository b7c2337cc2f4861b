/**
 * Command line: `serve` (the HTTP server, default) and `generate` (stream text to stdout).
 *
 *   deno task start [--port 8000] [--model DIR|URL|org/repo] [--backend auto|cpu|webgpu] ...
 *   deno task generate --prompt "ROMEO:" [--max-tokens 200] [--temperature 0.8] [--seed 1]
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import {
  consoleProgress,
  DEFAULT_MODEL_DIR,
  loadModel,
  type TnlModel,
  WEIGHT_QUANTIZATIONS,
  type WeightQuantization,
} from "./mod.ts";

const HELP = `tnl-edge: TransNormerLLM inference for Deno

Usage:
  main.ts serve    [options]   serve the model over HTTP (OpenAI-compatible API)
  main.ts generate [options]   stream a completion of --prompt to stdout

Model options:
  --model SRC          directory, https URL of a directory, or Hugging Face repo id
                       (default: the embedded tnl-shakespeare-6m)
  --backend B          auto (default) | cpu | webgpu
  --quantize Q         none (default) | int8: matrices as int8 with per-row scales

generate:
  --prompt TEXT        the prompt (required)
  --max-tokens N       default 200
  --temperature T      default 0.8 (0 = greedy)
  --top-k N --top-p P --min-p P --repetition-penalty R --seed S --stop STR

serve:
  --port N             default 8000        --host H     default 0.0.0.0
  --store SPEC         memory (default) | fs:DIR | kv[:PATH] | redis://host:port
  --state-secret S     sign exported states with HMAC-SHA256 (or $TNL_STATE_SECRET)
  --max-queue N        requests waiting before 429 (default 256)
  --max-batch N        sequences decoded together
  --max-body-bytes N   request body limit (default 64 MiB)
  --checkpoint-tokens N  store kept sessions every N generated tokens mid-generation
                       (default 64 on redis and kv stores, else 0 = only at the end)
  --lease-ms N         session lease TTL on redis and kv stores (default 10000)
  --max-prompt-tokens N  longest prompt in tokens, else a 400 (default 32768; 0 = no limit)
  --admin-token T      enables GET /v1/sessions for "Authorization: Bearer T"
                       (or $TNL_ADMIN_TOKEN; default: the listing is off)
`;

/** Parse numbers from flags, naming the flag on error. */
function num(args: Record<string, unknown>, name: string, fallback?: number): number | undefined {
  const v = args[name];
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isFinite(n)) {
    console.error(`--${name}: not a number: ${v}`);
    Deno.exit(2);
  }
  return n;
}

/** Load the model with a progress line on stderr. */
export async function loadWithProgress(args: Record<string, unknown>): Promise<TnlModel> {
  const source = typeof args.model === "string" ? args.model : DEFAULT_MODEL_DIR;
  const backend = (args.backend ?? "auto") as "auto" | "cpu" | "webgpu";
  if (!["auto", "cpu", "webgpu"].includes(backend)) {
    console.error(`--backend: expected auto, cpu or webgpu, got ${backend}`);
    Deno.exit(2);
  }
  const tty = Deno.stderr.isTerminal();
  const enc = new TextEncoder();
  const t0 = performance.now();
  const quantize = String(args.quantize ?? "none") as WeightQuantization;
  if (!WEIGHT_QUANTIZATIONS.includes(quantize)) {
    console.error(`--quantize: expected ${WEIGHT_QUANTIZATIONS.join(" or ")}, got ${quantize}`);
    Deno.exit(2);
  }
  const model = await loadModel(source, {
    backend,
    quantize,
    onProgress: consoleProgress(),
    onLoad: ({ done, total }) => {
      if (tty) Deno.stderr.writeSync(enc.encode(`\rloading weights ${done}/${total}`));
    },
    engine: { maxQueue: num(args, "max-queue"), maxBatch: num(args, "max-batch") },
  });
  const ms = (performance.now() - t0).toFixed(0);
  Deno.stderr.writeSync(
    enc.encode(
      `${
        tty ? "\r" : ""
      }loaded ${source} on ${model.backend.kind} (${model.backend.device}) in ${ms} ms\n`,
    ),
  );
  return model;
}

async function generate(args: Record<string, unknown>): Promise<void> {
  if (typeof args.prompt !== "string" || args.prompt === "") {
    console.error("generate: --prompt is required (and must not be empty)");
    Deno.exit(2);
  }
  const model = await loadWithProgress(args);
  const out = Deno.stdout;
  const enc = new TextEncoder();
  const ac = new AbortController();
  Deno.addSignalListener("SIGINT", () => ac.abort());
  let n = 0;
  const t0 = performance.now();
  out.writeSync(enc.encode(args.prompt));
  for await (
    const chunk of model.generate(args.prompt, {
      maxTokens: num(args, "max-tokens", 200),
      temperature: num(args, "temperature", 0.8),
      topK: num(args, "top-k"),
      topP: num(args, "top-p"),
      minP: num(args, "min-p"),
      repetitionPenalty: num(args, "repetition-penalty"),
      seed: num(args, "seed"),
      stop: args.stop === undefined ? undefined : [String(args.stop)],
      signal: ac.signal,
    })
  ) {
    n += chunk.tokens.length;
    if (chunk.text) out.writeSync(enc.encode(chunk.text));
  }
  const s = (performance.now() - t0) / 1000;
  console.error(`\n[${n} tokens in ${s.toFixed(2)} s, ${(n / s).toFixed(1)} tokens/s]`);
  await model.dispose();
}

async function serve(args: Record<string, unknown>): Promise<void> {
  const { startServer } = await import("./routes/server.ts");
  const model = await loadWithProgress(args);
  await startServer(model, {
    port: num(args, "port", 8000)!,
    hostname: String(args.host ?? "0.0.0.0"),
    store: typeof args.store === "string" ? args.store : "memory",
    stateSecret: typeof args["state-secret"] === "string"
      ? args["state-secret"]
      : Deno.env.get("TNL_STATE_SECRET"),
    maxBodyBytes: num(args, "max-body-bytes"),
    checkpointTokens: num(args, "checkpoint-tokens"),
    leaseMs: num(args, "lease-ms"),
    maxPromptTokens: num(args, "max-prompt-tokens"),
    adminToken: typeof args["admin-token"] === "string"
      ? args["admin-token"]
      : Deno.env.get("TNL_ADMIN_TOKEN"),
  });
}

if (import.meta.main) {
  const args = parseArgs(Deno.args, {
    string: [
      "model",
      "backend",
      "quantize",
      "prompt",
      "stop",
      "store",
      "state-secret",
      "host",
      "admin-token",
    ],
    boolean: ["help"],
  });
  const cmd = args._[0] ?? "serve";
  if (args.help) {
    console.log(HELP);
  } else if (cmd === "generate") {
    await generate(args);
  } else if (cmd === "serve") {
    await serve(args);
  } else {
    console.error(`unknown command ${cmd}\n\n${HELP}`);
    Deno.exit(2);
  }
}
