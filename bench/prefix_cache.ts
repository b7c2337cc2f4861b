/**
 * The prefix-cache benchmark (issue 15's target): requests that share a 2,048-token prefix and add
 * 16 new tokens each, against the real server over HTTP.
 *
 *   deno run -A bench/prefix_cache.ts [--model default|DIR | --shape 385m|1b|7b]
 *     [--backend auto|cpu|webgpu] [--requests 8] [--prefix 2048] [--suffix 16] [--tokens 8]
 *     [--label NAME]
 *
 * Two servers of this checkout (`main.ts serve --store memory`), one after the other: one with
 * `--no-prefix-cache` (cold: every request prefills its whole prompt), one with the cache on (warm:
 * one request first primes it, untimed). Each gets `--requests` streaming `/v1/completions`, one
 * at a time, the same prompts in both: the shared prefix (token ids of English text) then
 * `--suffix` different tokens, `max_tokens` `--tokens`, greedy, `store: false`. TTFT is the time
 * from sending a request to its first text chunk; `usage.prompt_tokens_details.cached_tokens`
 * (with `stream_options.include_usage`) says what the cache served. Target: warm TTFT p50 ≤ 10%
 * of cold. The two servers must also answer each prompt with the same text.
 *
 * Results: `bench/results/prefix_cache_<adapter>_<model>[_<label>].json`, `.md` and `.svg`.
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { SseParser } from "../src/http/sse.ts";
import { Tokenizer } from "../src/tokenizer/tokenizer.ts";
import { lineChart, markdownTable } from "./report.ts";
import { reportName } from "./run.ts";
import { englishPrompt, type Server, startServer } from "./serve.ts";
import { DEFAULT_MODEL_DIR, writeShapeModel } from "./serve_model.ts";
import { percentile } from "./serve_stats.ts";

const RESULTS = new URL("./results/", import.meta.url).pathname;
const ROOT = new URL("../", import.meta.url).pathname;

/** One request as the client saw it. */
interface Sample {
  ttftMs: number;
  totalMs: number;
  text: string;
  promptTokens: number;
  cachedTokens: number;
}

async function complete(url: string, prompt: number[], tokens: number): Promise<Sample> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      prompt,
      max_tokens: tokens,
      temperature: 0,
      store: false,
      stream: true,
      stream_options: { include_usage: true },
    }),
  });
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  const parser = new SseParser();
  const decoder = new TextDecoder();
  let ttft = -1, text = "", promptTokens = -1, cached = -1;
  for await (const chunk of res.body!) {
    const now = performance.now();
    for (const data of parser.push(decoder.decode(chunk, { stream: true }))) {
      if (data === "[DONE]") continue;
      const ev = JSON.parse(data);
      if (ev.error) throw new Error(`stream error: ${ev.error.message}`);
      const t = ev.choices?.[0]?.text;
      if (t) {
        if (ttft < 0) ttft = now - t0;
        text += t;
      }
      if (ev.usage) {
        promptTokens = ev.usage.prompt_tokens;
        cached = ev.usage.prompt_tokens_details?.cached_tokens ?? 0;
      }
    }
  }
  return {
    ttftMs: ttft,
    totalMs: performance.now() - t0,
    text,
    promptTokens,
    cachedTokens: cached,
  };
}

function fail(msg: string): never {
  console.error(msg);
  Deno.exit(2);
}

async function main(): Promise<void> {
  const args = parseArgs(Deno.args, {
    string: ["model", "shape", "backend", "requests", "prefix", "suffix", "tokens", "label"],
    boolean: ["help"],
  });
  if (args.help) {
    console.log(
      "deno run -A bench/prefix_cache.ts [--model default|DIR | --shape 385m|1b|7b] [--backend B]\n" +
        "  [--requests 8] [--prefix 2048] [--suffix 16] [--tokens 8] [--label NAME]",
    );
    return;
  }
  const num = (name: string, fallback: number, min: number) => {
    const v = Number(args[name] ?? fallback);
    if (!Number.isSafeInteger(v) || v < min) fail(`--${name}: expected an integer >= ${min}`);
    return v;
  };
  const requests = num("requests", 8, 1);
  const prefixLen = num("prefix", 2048, 1);
  const suffixLen = num("suffix", 16, 1);
  const tokens = num("tokens", 8, 1);
  const backend = String(args.backend ?? "auto");
  if (!["auto", "cpu", "webgpu"].includes(backend)) fail(`--backend: auto, cpu or webgpu`);
  if (args.shape && args.model) fail("--shape and --model: give one");

  let modelDir = DEFAULT_MODEL_DIR, modelName = "tnl-shakespeare-6m", tempDir: string | null = null;
  if (args.shape) {
    const shape = String(args.shape).toLowerCase();
    if (!["385m", "1b", "7b"].includes(shape)) fail("--shape: expected 385m, 1b or 7b");
    tempDir = await Deno.makeTempDir({ prefix: `tnl-prefix-${shape}-` });
    console.error(`writing a random ${shape} model to ${tempDir}`);
    await writeShapeModel(tempDir, shape);
    modelDir = tempDir;
    modelName = shape;
  } else if (args.model && args.model !== "default") {
    modelDir = String(args.model);
    modelName = modelDir.replace(/\/+$/, "").split("/").pop()!;
  }

  try {
    const tok = await Tokenizer.load(`${modelDir.replace(/\/?$/, "/")}tokenizer.model`);
    // Token ids, so the prefix is exactly `prefixLen` tokens and every prompt shares it.
    const english = tok.encode(englishPrompt(tok, prefixLen + (requests + 1) * suffixLen, 5).text);
    if (english.length < prefixLen + (requests + 1) * suffixLen) fail("not enough text");
    const prefix = Array.from(english.subarray(0, prefixLen));
    const prompts = Array.from({ length: requests + 1 }, (_, i) => {
      const from = prefixLen + i * suffixLen;
      return [...prefix, ...english.subarray(from, from + suffixLen)];
    });
    const serverArgs = ["--store", "memory", "--model", modelDir, "--backend", backend];
    const phase = async (name: string, extra: string[]) => {
      console.error(`${name}: starting the server`);
      const server: Server = await startServer(ROOT, [...serverArgs, ...extra], 600_000);
      try {
        const health = await (await fetch(`${server.url}/health`)).json();
        // One untimed request of another suffix: warms the server (and primes the cache).
        await complete(server.url, prompts[requests], tokens);
        const samples: Sample[] = [];
        for (let i = 0; i < requests; i++) {
          const s = await complete(server.url, prompts[i], tokens);
          samples.push(s);
          console.error(
            `${name} ${i}: TTFT ${
              s.ttftMs.toFixed(1)
            } ms, cached ${s.cachedTokens}/${s.promptTokens}`,
          );
        }
        return { health, samples };
      } finally {
        await server.stop();
      }
    };
    const cold = await phase("cold", ["--no-prefix-cache"]);
    const warm = await phase("warm", []);
    const p50 = (s: Sample[]) => percentile(s.map((x) => x.ttftMs), 50);
    const coldP50 = p50(cold.samples), warmP50 = p50(warm.samples);
    const ratio = warmP50 / coldP50;
    const same = cold.samples.every((c, i) => c.text === warm.samples[i].text);
    const device = String(cold.health.device ?? "");
    const adapter = reportName(cold.health.backend === "cpu" ? "cpu" : device);
    const label = args.label ? `_${String(args.label)}` : "";
    const base = `${RESULTS}prefix_cache_${adapter}_${modelName}${label}`;
    const result = {
      date: new Date().toISOString(),
      host: Deno.hostname(),
      cpus: navigator.hardwareConcurrency,
      loadavg: Deno.loadavg(),
      model: modelName,
      backend: cold.health.backend,
      device,
      settings: { requests, prefix: prefixLen, suffix: suffixLen, tokens, temperature: 0 },
      cold: cold.samples,
      warm: warm.samples,
      ttftP50Ms: { cold: coldP50, warm: warmP50 },
      ratio,
      target: 0.1,
      met: ratio <= 0.1,
      sameText: same,
    };
    await Deno.mkdir(RESULTS, { recursive: true });
    await Deno.writeTextFile(`${base}.json`, JSON.stringify(result, null, 1) + "\n");
    const rows = cold.samples.map((c, i) => {
      const w = warm.samples[i];
      return [i, c.ttftMs.toFixed(1), w.ttftMs.toFixed(1), `${w.cachedTokens}/${w.promptTokens}`];
    });
    const md = [
      `# Prefix cache: ${prefixLen}-token shared prefix + ${suffixLen} new tokens`,
      "",
      `${result.date}, ${result.host} (${result.cpus} CPUs, load ${
        result.loadavg.map((x) => x.toFixed(1)).join(" ")
      }), model ${modelName}, backend ${result.backend} (${device}).`,
      `\`deno run -A bench/prefix_cache.ts ${Deno.args.join(" ")}\``.replace(/ `$/, "`"),
      "",
      `TTFT p50: cold ${coldP50.toFixed(1)} ms, warm ${warmP50.toFixed(1)} ms: ${
        (ratio * 100).toFixed(1)
      }% of cold (target ≤ 10%: ${
        result.met ? "met" : "not met"
      }). Same text cold and warm: ${same}.`,
      "",
      markdownTable(["request", "cold TTFT ms", "warm TTFT ms", "warm cached/prompt tokens"], rows),
      "",
    ].join("\n");
    await Deno.writeTextFile(`${base}.md`, md);
    await Deno.writeTextFile(
      `${base}.svg`,
      lineChart(
        `TTFT, ${prefixLen}-token shared prefix + ${suffixLen} (${modelName}, ${result.backend})`,
        "request",
        "TTFT ms",
        [
          { label: "cold", points: cold.samples.map((s, i) => [i + 1, s.ttftMs]) },
          { label: "prefix cache", points: warm.samples.map((s, i) => [i + 1, s.ttftMs]) },
        ],
        false,
      ),
    );
    console.log(
      `prefix cache: cold ${coldP50.toFixed(1)} ms, warm ${warmP50.toFixed(1)} ms TTFT p50 ` +
        `(${(ratio * 100).toFixed(1)}%, target ≤ 10%: ${result.met ? "met" : "not met"}); ` +
        `same text: ${same}; ${base}.md`,
    );
    if (!same) Deno.exitCode = 1;
  } finally {
    if (tempDir) await Deno.remove(tempDir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) await main();
