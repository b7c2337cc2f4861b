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
  isStateEncoding,
  loadModel,
  SAMPLING_FIELDS,
  type SamplingParams,
  STATE_ENCODINGS,
  type StateEncoding,
  type TnlModel,
  WEIGHT_QUANTIZATIONS,
  type WeightQuantization,
} from "./mod.ts";

/** The sampling fields with a CLI flag (`SAMPLING_FIELDS`): `[flag, field]`, `top_k` → `top-k`. */
const SAMPLING_FLAGS = SAMPLING_FIELDS.flatMap((f) =>
  f.cli === undefined ? [] : [[f.wire.replaceAll("_", "-"), f] as const]
);
/** `generate`'s defaults that differ from the engine's. */
const GENERATE_DEFAULTS: SamplingParams = { temperature: 0.8 };

/** The sampling flags after `--temperature` in the help (`--top-k N --top-p P ...`). */
function samplingFlagsHelp(): string {
  return SAMPLING_FLAGS.filter(([, f]) => f.key !== "temperature")
    .map(([flag, f]) => `--${flag} ${f.cli}`).join(" ");
}

/** The sampling options of `generate` from its flags (a flag left out: undefined or its default). */
function samplingOptions(args: Record<string, unknown>): SamplingParams {
  const out: Record<string, unknown> = {};
  for (const [flag, f] of SAMPLING_FLAGS) {
    out[f.key] = num(args, flag, GENERATE_DEFAULTS[f.key] as number | undefined);
  }
  return out as SamplingParams;
}

const HELP = `tnl-edge: TransNormerLLM inference for Deno

Usage:
  main.ts serve    [options]   serve the model over HTTP (OpenAI-compatible API)
  main.ts generate [options]   stream a completion of --prompt to stdout

Model options:
  --model SRC          directory, https URL of a directory, or Hugging Face repo id
                       (default: the embedded tnl-shakespeare-6m)
  --backend B          auto (default) | cpu | webgpu
  --quantize Q         none (default) | int8: matrices as int8 with per-row scales
  --readback R         auto (default): small WebGPU readbacks through a canvas, without Deno's
                       10 ms map timer | map: every readback mapped

generate:
  --prompt TEXT        the prompt (required)
  --max-tokens N       default 200
  --temperature T      default 0.8 (0 = greedy)
  ${samplingFlagsHelp()} --stop STR

serve:
  --port N             default 8000
  --host H             default 127.0.0.1 (this machine only); --host 0.0.0.0 serves every interface
  --store SPEC         memory (default) | fs:DIR | kv[:PATH] | redis://host:port
  --state-secret S     sign exported states with HMAC-SHA256 (or $TNL_STATE_SECRET)
  --state-encoding E   how saved states are encoded unless a request asks (state_encoding):
                       f32 (default, exact) | f32+deflate (exact) | bf16 | bf16+deflate |
                       q8 | q8+deflate (lossy: smaller, resume approximately)
  --max-queue N        requests waiting before 429 (default 256)
  --max-batch N        sequences decoded together
  --max-body-bytes N   request body limit (default 64 MiB)
  --checkpoint-tokens N  store kept sessions mid-generation once N tokens were generated since the last store
                       (default 64 on redis and kv stores, else 0 = only at the end)
  --lease-ms N         session lease TTL on redis and kv stores (default 10000)
  --max-prompt-tokens N  longest prompt in tokens, else a 400 (default 32768; 0 = no limit)
  --admin-token T      enables GET /v1/sessions for "Authorization: Bearer T"
                       (or $TNL_ADMIN_TOKEN; default: the listing is off)
  --prefix-cache-mb N  memory for prompt-prefix states (default 256; 0 = off)
  --no-prefix-cache    every prompt is prefilled in full
  --prefix-cache-shared  share prefix states between instances through the store
                       (kv or redis; their own key prefix, apart from the sessions)
`;

/** The address served by default: this machine only, as llama.cpp's server. */
const DEFAULT_HOST = "127.0.0.1";

const MODEL_FLAGS = ["model", "backend", "quantize", "max-queue", "max-batch", "readback"];
/** The flags each command accepts (`--help` with either). */
const FLAGS: Record<string, { string: string[]; boolean: string[] }> = {
  serve: {
    string: [
      ...MODEL_FLAGS,
      "port",
      "host",
      "store",
      "state-secret",
      "state-encoding",
      "max-body-bytes",
      "checkpoint-tokens",
      "lease-ms",
      "max-prompt-tokens",
      "admin-token",
      "prefix-cache-mb",
    ],
    boolean: ["help", "no-prefix-cache", "prefix-cache-shared"],
  },
  generate: {
    string: [
      ...MODEL_FLAGS,
      "prompt",
      "max-tokens",
      ...SAMPLING_FLAGS.map(([flag]) => flag),
      "stop",
    ],
    boolean: ["help"],
  },
};

/**
 * Parse the command line: the command (`serve` by default) and its flags. An unknown command or
 * flag is an error listing what is valid (nothing is silently ignored).
 */
export function parseCommandLine(
  argv: string[],
): { command: string; args: Record<string, unknown> } | { error: string } {
  const first = argv[0];
  const command = first !== undefined && !first.startsWith("-") ? first : "serve";
  const spec = FLAGS[command];
  if (!spec) {
    return {
      error: `unknown command "${command}"; valid commands: ${Object.keys(FLAGS).join(", ")}`,
    };
  }
  const unknown: string[] = [];
  const args = parseArgs(command === first ? argv.slice(1) : argv, {
    string: spec.string,
    boolean: spec.boolean,
    unknown: (arg: string) => {
      unknown.push(arg.startsWith("-") ? arg : JSON.stringify(arg));
      return false;
    },
  });
  if (args._.length > 0) unknown.push(...args._.map((a: unknown) => JSON.stringify(String(a))));
  if (unknown.length > 0) {
    const valid = [...spec.string, ...spec.boolean].map((f) => "--" + f).join(" ");
    return {
      error: `${command}: unknown ${unknown.length === 1 ? "argument" : "arguments"} ${
        unknown.join(" ")
      }; valid flags: ${valid}`,
    };
  }
  return { command, args };
}

/** Parse numbers from flags, naming the flag on error. */
function num(args: Record<string, unknown>, name: string, fallback?: number): number | undefined {
  const v = args[name];
  if (v === undefined) return fallback;
  const n = Number(v);
  if (String(v).trim() === "" || !Number.isFinite(n)) {
    console.error(`--${name}: not a number: "${v}"`);
    Deno.exit(2);
  }
  return n;
}

/** `--state-encoding`: absent (the default, f32), or one of `STATE_ENCODINGS`, else exit 2. */
function stateEncodingFlag(v: unknown): StateEncoding | undefined {
  if (v === undefined) return undefined;
  if (isStateEncoding(v)) return v;
  console.error(`--state-encoding: "${v}" is not one of ${STATE_ENCODINGS.join(", ")}`);
  Deno.exit(2);
}

/** Load the model with a progress line on stderr. */
export async function loadWithProgress(
  args: Record<string, unknown>,
  worker?: boolean,
): Promise<TnlModel> {
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
  const readback = String(args.readback ?? "auto");
  if (readback !== "auto" && readback !== "map") {
    console.error(`--readback: expected auto or map, got ${readback}`);
    Deno.exit(2);
  }
  let why = "";
  const model = await loadModel(source, {
    backend,
    worker,
    onBackendChoice: ({ reason }) => (why = reason),
    quantize,
    webgpu: { readback },
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
      }loaded ${source} on ${model.backend.kind} (${model.backend.device}) in ${ms} ms [${why}]\n`,
    ),
  );
  return model;
}

async function generate(args: Record<string, unknown>): Promise<void> {
  if (typeof args.prompt !== "string" || args.prompt === "") {
    console.error("generate: --prompt is required (and must not be empty)");
    Deno.exit(2);
  }
  const ac = new AbortController();
  // Flags are checked before the model loads.
  const options = {
    maxTokens: num(args, "max-tokens", 200),
    ...samplingOptions(args),
    stop: args.stop === undefined ? undefined : [String(args.stop)],
    signal: ac.signal,
  };
  const model = await loadWithProgress(args);
  const out = Deno.stdout;
  const enc = new TextEncoder();
  Deno.addSignalListener("SIGINT", () => ac.abort());
  let n = 0;
  const t0 = performance.now();
  out.writeSync(enc.encode(args.prompt));
  for await (
    const chunk of model.generate(args.prompt, options)
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
  // Flags are checked before the model loads.
  const options = {
    port: num(args, "port", 8000)!,
    hostname: String(args.host ?? DEFAULT_HOST),
    store: typeof args.store === "string" ? args.store : "memory",
    stateSecret: typeof args["state-secret"] === "string"
      ? args["state-secret"]
      : Deno.env.get("TNL_STATE_SECRET"),
    stateEncoding: stateEncodingFlag(args["state-encoding"]),
    maxBodyBytes: num(args, "max-body-bytes"),
    checkpointTokens: num(args, "checkpoint-tokens"),
    leaseMs: num(args, "lease-ms"),
    maxPromptTokens: num(args, "max-prompt-tokens"),
    adminToken: typeof args["admin-token"] === "string"
      ? args["admin-token"]
      : Deno.env.get("TNL_ADMIN_TOKEN"),
    prefixCacheBytes: args["no-prefix-cache"]
      ? 0
      : Math.round((num(args, "prefix-cache-mb", 256)!) * 1024 * 1024),
    prefixCacheShared: args["prefix-cache-shared"] === true,
  };
  if (!(options.prefixCacheBytes >= 0)) {
    console.error(`--prefix-cache-mb: expected a number ≥ 0, got ${args["prefix-cache-mb"]}`);
    Deno.exit(2);
  }
  if (
    options.prefixCacheShared && (!/^(kv|redis|rediss)(:|$)/.test(options.store) ||
      !options.prefixCacheBytes)
  ) {
    console.error("--prefix-cache-shared: needs --store kv or redis, and the cache on");
    Deno.exit(2);
  }
  num(args, "max-queue");
  num(args, "max-batch");
  // The server runs the backend in a worker whatever its kind: the HTTP thread never computes.
  const model = await loadWithProgress(args, true);
  await startServer(model, options);
}

if (import.meta.main) {
  const parsed = parseCommandLine(Deno.args);
  if ("error" in parsed) {
    console.error(`${parsed.error}\n\n${HELP}`);
    Deno.exit(2);
  }
  const { command, args } = parsed;
  if (args.help) console.log(HELP);
  else if (command === "generate") await generate(args);
  else await serve(args);
}
