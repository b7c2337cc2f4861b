/**
 * The serving benchmark (`deno task bench:serve`): what a user of the HTTP server gets, next to what
 * the backend alone does with the same batch, measured in one run.
 *
 *   deno run -A bench/serve.ts [--model default|DIR | --shape 385m|1b|7b] [--backend auto|cpu|webgpu]
 *     [--streams 1,8,64,128,256] [--prompt short,long] [--store none,kept] [--tokens 256]
 *     [--seconds 12] [--warmup 2] [--server-dir PATH] [--server-args="..."] [--server-deno-flags="..."] [--label NAME]
 *     [--quantize none|int8] [--engine] [--no-backend] [--pairs N [--restart]]
 *
 * 1. Before the server starts, in this process: the backend's sampled decode at batch = streams
 *    (`measureDecode`, K = 64 device steps per readback as `bench:gpu`, T 0.8), its prefill of the
 *    long prompt, and on the CPU backend (or with `--engine`) `Engine.generate` at the same
 *    concurrency, driven like the server.
 * 2. The real server (`main.ts serve --store memory` of this checkout or of `--server-dir`) as a
 *    subprocess; once `/health` answers, each level (streams × prompt × store) runs `--warmup` +
 *    `--seconds`: every client sends streaming `/v1/completions` back to back (8 English words or
 *    about 2,048 tokens of English, `max_tokens` = `--tokens`, temperature 0.8). The end of
 *    sequence is banned with `logit_bias` -100 (the server has no `ignore_eos`; `ignore_eos: true`
 *    is sent too and ignored by servers without it), so each request generates `--tokens` tokens;
 *    the completion tokens of each request are counted from its `usage`. `kept`: each client
 *    continues its own stored session (`session`), deleted after the level; `none`: `store: false`.
 *    At the end of a level the clients abort what is in flight and the server drains.
 *    `--pairs N`: each level runs N times, the in-process engine measured again before each server
 *    run after the first (the machine's speed drifts; alternating keeps the ratio honest); the
 *    row is the median run, and each server run over the engine run just before it (a pair
 *    ratio) is reported with the pairs' median. `--restart`: each pair after the first runs the
 *    engine in a new process of this script and starts a new server process, so the speed a
 *    process happens to get is sampled N times on both sides instead of once (on the shared 2-core
 *    machine of 2026-12-04 a process kept one of two speeds for its life: the same engine level
 *    gave 890-1,843 tok/s in ten processes, two servers 1,007 and 1,710 with their backend worker
 *    busy 100% in both).
 * 3. Per level: served tok/s (tokens arriving inside the measured window), TTFT p50/p95/p99 of the
 *    requests started in it, inter-token latency p50/p99 (gaps between SSE chunk arrivals, client
 *    side), the HTTP thread's event-loop lag from `tnl_event_loop_lag_seconds` in `/metrics` (the
 *    bucket deltas over the level, when the server has it) and the latency of `GET /health` every
 *    50 ms from a worker thread (any server).
 *
 * Results: `bench/results/serve_<adapter>_<model>[_<label>].json`, `.md`, `_throughput.svg` and
 * `_ttft.svg`; one summary line on stdout.
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import type { Backend } from "../src/engine/backend.ts";
import { loadModel, type TnlModel } from "../src/load.ts";
import { Tokenizer } from "../src/tokenizer/tokenizer.ts";
import { measureDecode, measurePrefill } from "./measure.ts";
import { fmtNum, lineChart, markdownTable } from "./report.ts";
import { reportName } from "./run.ts";
import { DEFAULT_MODEL_DIR, writeShapeModel } from "./serve_model.ts";
import {
  histogramDelta,
  histogramQuantile,
  parsePromHistogram,
  percentile,
  percentiles,
} from "./serve_stats.ts";
import { SseParser } from "../src/http/sse.ts";

const RESULTS = new URL("./results/", import.meta.url).pathname;
const ROOT = new URL("../", import.meta.url).pathname;
/** Device decode steps per readback, as `bench:gpu`. */
const GPU_STEPS = 64;
/** Decode steps per round on a backend without device sampling (as `bench` on the CPU). */
const HOST_STEPS = 16;
/** Temperature of every request and of the backend figure. */
const TEMPERATURE = 0.8;
/** Long prompts: about this many tokens. */
const LONG_TOKENS = 2048;
/** Words of a short prompt. */
const SHORT_WORDS = 8;
/** The lag histogram the server exports (when it does). */
const LAG_METRIC = "tnl_event_loop_lag_seconds";

const WORDS = (
  "the of and to in is that it was for on are as with his they at be this from have or by one " +
  "had not but what all were when we there can an your which their said if do will each about how " +
  "up out them then she many some so these would other into has more her two like him see time " +
  "could no make than first been its who now people my made over did down only way find use may " +
  "water long little very after words called just where most know get through back much before " +
  "go good new write our used me man too any day same right look think also around another came " +
  "come work three word must because does part even place well such here take why things help " +
  "put years different away again off went old number great tell men say small every found still " +
  "between name should home big give air line set own under read last never us left end along " +
  "while might next sound below saw something thought both few those always looked show large " +
  "often together asked house world going want school important until form food keep children " +
  "feet land side without boy once animals life enough took sometimes four head above kind began " +
  "almost live page got earth need far hand high year mother light parts country father let night " +
  "following picture being study second eyes soon times story boys since white days ever paper"
).split(" ");

/** A deterministic generator (xorshift32) for prompt words and seeds. */
function xorshift(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 4294967296;
  };
}

/** `n` random English words. */
export function englishWords(n: number, seed: number): string {
  const r = xorshift(seed);
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(WORDS[Math.floor(r() * WORDS.length)]);
  const s = out.join(" ");
  return s[0].toUpperCase() + s.slice(1);
}

/** English text of at most `tokens` tokens (the most words that fit), and its token count. */
export function englishPrompt(
  tok: Tokenizer,
  tokens: number,
  seed: number,
): { text: string; tokens: number } {
  const count = (n: number) => tok.encode(englishWords(n, seed)).length;
  let lo = 1, hi = tokens; // a word is at least one token: `tokens` words are enough
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (count(mid) <= tokens) lo = mid;
    else hi = mid - 1;
  }
  return { text: englishWords(lo, seed), tokens: count(lo) };
}

/** One request as the client saw it (times in ms of `performance.now()`). */
export interface RequestRecord {
  /** When it was sent. */
  start: number;
  /** Arrival times of the chunks with text. */
  chunks: number[];
  /** Tokens each chunk stands for (usage / chunks when the request finished; else 1 each). */
  weight: number;
  /** Completion tokens from the final usage (finished requests). */
  completionTokens?: number;
  /** Prompt tokens from the final usage. */
  promptTokens?: number;
  /** Finish reason of a finished request. */
  finish?: string;
  /** HTTP status or error text of a failed request. */
  error?: string;
}

/** Client-side figures of one level. */
export interface LevelStats {
  /** Tokens per second that arrived inside the window. */
  tokensPerSecond: number;
  /** Requests started in the window. */
  started: number;
  /** Requests that finished (in the whole level). */
  finished: number;
  /** Finished requests that generated exactly the tokens asked for. */
  exactLength: number;
  /** Mean completion tokens of the finished requests. */
  meanCompletionTokens: number;
  /** Mean prompt tokens of the finished requests. */
  meanPromptTokens: number;
  /**
   * Requests of the level (also those started in the warm-up) without a first token when the
   * window ended: their TTFT is longer than the percentiles show.
   */
  noFirstToken: number;
  /** Failed requests, by status or error. */
  errors: Record<string, number>;
  /** Time to first token, ms, of the requests started in the window. */
  ttftMs: Record<string, number>;
  /** Gaps between chunk arrivals, ms, inside the window. */
  itlMs: Record<string, number>;
}

/** The figures of the requests of one level over the window [from, to] (ms). */
export function levelStats(
  records: RequestRecord[],
  from: number,
  to: number,
  maxTokens: number,
): LevelStats {
  let tokens = 0;
  const ttft: number[] = [], itl: number[] = [];
  const errors: Record<string, number> = {};
  let started = 0, noFirst = 0;
  const done = records.filter((r) => r.completionTokens !== undefined);
  for (const r of records) {
    if (r.error) errors[r.error] = (errors[r.error] ?? 0) + 1;
    for (let i = 0; i < r.chunks.length; i++) {
      const t = r.chunks[i];
      if (t < from || t > to) continue;
      tokens += r.weight;
      if (i > 0 && r.chunks[i - 1] >= from) itl.push(t - r.chunks[i - 1]);
    }
    if (r.start <= to && !r.error && !(r.chunks.length && r.chunks[0] <= to)) noFirst++;
    if (r.start < from || r.start > to) continue;
    started++;
    if (r.chunks.length && r.chunks[0] <= to) ttft.push(r.chunks[0] - r.start);
  }
  const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);
  return {
    tokensPerSecond: (tokens * 1000) / (to - from),
    started,
    finished: done.length,
    exactLength: done.filter((r) => r.completionTokens === maxTokens).length,
    meanCompletionTokens: mean(done.map((r) => r.completionTokens!)),
    meanPromptTokens: mean(done.map((r) => r.promptTokens ?? NaN)),
    noFirstToken: noFirst,
    errors,
    ttftMs: percentiles(ttft, [50, 95, 99]),
    itlMs: percentiles(itl, [50, 99]),
  };
}

/** One load level. */
export interface Level {
  /** Concurrent clients. */
  streams: number;
  /** Short (8 words) or long (about 2,048 tokens) prompts. */
  prompt: "short" | "long";
  /** `store: false`, or each client continuing its kept session. */
  store: "none" | "kept";
}

/** Prompts of both kinds, drawn per request. */
export interface PromptPool {
  /** Short prompts. */
  short: string[];
  /** Long prompts. */
  long: string[];
  /** Mean tokens of the long prompts. */
  longTokens: number;
}

function makePrompts(tok: Tokenizer, longCount: number): PromptPool {
  const short = Array.from({ length: 256 }, (_, i) => englishWords(SHORT_WORDS, 1000 + i));
  const long = Array.from({ length: longCount }, (_, i) => englishPrompt(tok, LONG_TOKENS, 77 + i));
  return {
    short,
    long: long.map((p) => p.text),
    longTokens: Math.round(long.reduce((a, p) => a + p.tokens, 0) / Math.max(1, long.length)),
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The server subprocess. */
export interface Server {
  url: string;
  proc: Deno.ChildProcess;
  log: string[];
  stop(): Promise<void>;
}

/** Start `main.ts serve` of `dir` with `args` on a free port; resolves once `/health` is 200. */
export async function startServer(
  dir: string,
  args: string[],
  timeoutMs: number,
  denoFlags: string[] = [],
): Promise<Server> {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  const proc = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      ...denoFlags,
      "main.ts",
      "serve",
      "--port",
      String(port),
      "--host",
      "127.0.0.1",
      ...args,
    ],
    cwd: dir,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const log: string[] = [];
  let exited = false;
  const keep = async (s: ReadableStream<Uint8Array>) => {
    const d = new TextDecoder();
    let buf = "";
    for await (const c of s) {
      buf += d.decode(c, { stream: true });
      const lines = buf.split("\n");
      buf = lines.pop()!;
      log.push(...lines);
      if (log.length > 200) log.splice(0, log.length - 200);
    }
  };
  const reading = Promise.all([keep(proc.stdout), keep(proc.stderr)]).catch(() => {});
  proc.status.then(() => (exited = true));
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (!exited) {
      try {
        proc.kill("SIGTERM");
      } catch { /* gone */ }
      const t = setTimeout(() => {
        try {
          proc.kill("SIGKILL");
        } catch { /* gone */ }
      }, 40_000);
      await proc.status;
      clearTimeout(t);
    }
    await reading;
  };
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (exited) {
      await reading;
      throw new Error(`the server exited before serving:\n${log.slice(-30).join("\n")}`);
    }
    try {
      const r = await fetch(`${url}/health`);
      await r.body?.cancel();
      if (r.status === 200) break;
    } catch { /* not listening yet */ }
    if (performance.now() > deadline) {
      await stop();
      throw new Error(
        `the server did not serve within ${timeoutMs} ms:\n${log.slice(-30).join("\n")}`,
      );
    }
    await sleep(200);
  }
  return { url, proc, log, stop };
}

/** One streaming completion; fills `rec`; returns the session id the server answered with. */
async function streamCompletion(
  url: string,
  body: Record<string, unknown>,
  rec: RequestRecord,
  signal: AbortSignal,
): Promise<string | null> {
  let session: string | null = null;
  // Whatever the fetch implementation does with the signal, nothing that arrives after the abort
  // is read: every wait races it.
  const aborted = new Promise<null>((resolve) => {
    if (signal.aborted) resolve(null);
    else signal.addEventListener("abort", () => resolve(null), { once: true });
  });
  let res: Response | null;
  try {
    const pending = fetch(`${url}/v1/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      signal,
    });
    pending.catch(() => {}); // rejected after an abort nobody waits for
    res = await Promise.race([pending, aborted]);
  } catch (e) {
    if (!signal.aborted) rec.error = `fetch: ${(e as Error).message.slice(0, 80)}`;
    return null;
  }
  if (!res) return null;
  if (res.status !== 200) {
    rec.error = `HTTP ${res.status}`;
    await res.body?.cancel();
    return null;
  }
  const parser = new SseParser();
  const decoder = new TextDecoder();
  const reader = res.body!.getReader();
  try {
    for (;;) {
      const got = await Promise.race([reader.read(), aborted]);
      if (got === null) {
        reader.cancel().catch(() => {});
        break;
      }
      if (got.done) break;
      const now = performance.now();
      for (const data of parser.push(decoder.decode(got.value, { stream: true }))) {
        if (data === "[DONE]") continue;
        const ev = JSON.parse(data);
        if (ev.error) {
          rec.error = `stream error: ${String(ev.error.message).slice(0, 80)}`;
          continue;
        }
        if (typeof ev.session === "string") session = ev.session;
        const choice = ev.choices?.[0];
        if (choice?.text) rec.chunks.push(now);
        if (choice?.finish_reason) rec.finish = choice.finish_reason;
        if (ev.usage) {
          rec.completionTokens = ev.usage.completion_tokens;
          rec.promptTokens = ev.usage.prompt_tokens;
        }
      }
    }
  } catch (e) {
    if (!signal.aborted) rec.error = `read: ${(e as Error).message.slice(0, 80)}`;
  }
  if (rec.completionTokens !== undefined && rec.chunks.length) {
    rec.weight = rec.completionTokens / rec.chunks.length;
  }
  return session;
}

/** Probe `GET /health` every `everyMs` in a worker; `stop()` resolves to the latencies (ms). */
function startProbe(url: string, everyMs: number): { stop(): Promise<number[]> } {
  const w = new Worker(new URL("./serve_probe.ts", import.meta.url).href, { type: "module" });
  const done = new Promise<number[]>((resolve) => {
    w.onmessage = (e: MessageEvent<number[]>) => resolve(e.data);
  });
  w.postMessage({ url, everyMs });
  return {
    async stop() {
      w.postMessage("stop");
      const v = await done;
      w.terminate();
      return v;
    },
  };
}

async function scrapeLag(url: string) {
  try {
    const r = await fetch(`${url}/metrics`);
    return parsePromHistogram(await r.text(), LAG_METRIC);
  } catch {
    return null;
  }
}

/** Wait until the server runs and queues nothing (what a level aborted is cancelled). */
async function drain(url: string, ms = 60_000): Promise<void> {
  const deadline = performance.now() + ms;
  while (performance.now() < deadline) {
    try {
      const h = await (await fetch(`${url}/health`)).json();
      if (!h.running && !h.queue_depth) return;
    } catch { /* retry */ }
    await sleep(100);
  }
}

/** Settings shared by every level. */
export interface RunSettings {
  /** `max_tokens` of each request. */
  tokens: number;
  /** Measured seconds per level. */
  seconds: number;
  /** Seconds before the measured window. */
  warmup: number;
  /** The end-of-sequence id (banned by logit bias). */
  eos: number;
}

function requestBody(
  s: RunSettings,
  level: Level,
  prompts: PromptPool,
  client: number,
  n: number,
  session: string | null,
): Record<string, unknown> {
  const pool = level.prompt === "short" ? prompts.short : prompts.long;
  const body: Record<string, unknown> = {
    prompt: pool[(client * 7 + n) % pool.length],
    max_tokens: s.tokens,
    temperature: TEMPERATURE,
    stream: true,
    stream_options: { include_usage: true },
    logit_bias: { [s.eos]: -100 },
    ignore_eos: true,
    seed: client * 1000 + n,
    store: level.store === "kept",
  };
  if (session) body.session = session;
  return body;
}

/** What one level against the server measured. */
export type ServerLevelResult = Level & LevelStats & {
  /** The HTTP thread's event-loop lag from the server's histogram; null when it has none. */
  eventLoopLagMs: { p50: number; p99: number; mean: number; samples: number } | null;
  /** Latency of `GET /health` probes during the level. */
  healthMs: { p50: number; p99: number; max: number; samples: number };
  /**
   * This process's own event-loop lag (a 10 ms timer's delay) during the level: when it is large,
   * the clients' arrival times (TTFT, inter-token latency) carry it too.
   */
  clientLagMs: { p50: number; p99: number };
  /** Seconds the level took, from its first request to the server idle again. */
  wallSeconds: number;
};

/** Run one level against the server at `url`. */
export async function serverLevel(
  url: string,
  level: Level,
  s: RunSettings,
  prompts: PromptPool,
): Promise<ServerLevelResult> {
  const lagBefore = await scrapeLag(url);
  const probe = startProbe(url, 50);
  const clientLag: number[] = [];
  let tick = performance.now();
  const ticker = setInterval(() => {
    const now = performance.now();
    clientLag.push(Math.max(0, now - tick - 10));
    tick = now;
  }, 10);
  const records: RequestRecord[] = [];
  const t0 = performance.now();
  const from = t0 + s.warmup * 1000, to = from + s.seconds * 1000;
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), to - t0);
  const sessions: (string | null)[] = Array(level.streams).fill(null);
  await Promise.all(Array.from({ length: level.streams }, async (_, c) => {
    for (let n = 0; !ac.signal.aborted; n++) {
      const rec: RequestRecord = { start: performance.now(), chunks: [], weight: 1 };
      records.push(rec);
      const body = requestBody(s, level, prompts, c, n, sessions[c]);
      const id = await streamCompletion(url, body, rec, ac.signal);
      if (level.store === "kept" && id && rec.completionTokens !== undefined) sessions[c] = id;
      if (rec.error && !ac.signal.aborted) await sleep(50); // 429 and the like: do not spin
    }
  }));
  clearTimeout(timer);
  clearInterval(ticker);
  const health = await probe.stop();
  await drain(url);
  const lagAfter = await scrapeLag(url);
  for (const id of sessions) {
    if (!id) continue;
    for (let i = 0; i < 20; i++) {
      const r = await fetch(`${url}/v1/sessions/${id}`, { method: "DELETE" });
      await r.body?.cancel();
      if (r.status !== 409) break;
      await sleep(100);
    }
  }
  const lag = lagAfter ? histogramDelta(lagBefore, lagAfter) : null;
  const healthPct = percentiles(health, [50, 99]);
  const clientPct = percentiles(clientLag, [50, 99]);
  return {
    ...level,
    ...levelStats(records, from, to, s.tokens),
    eventLoopLagMs: lag && lag.count > 0
      ? {
        p50: histogramQuantile(lag, 0.5) * 1000,
        p99: histogramQuantile(lag, 0.99) * 1000,
        mean: (lag.sum / lag.count) * 1000,
        samples: lag.count,
      }
      : null,
    healthMs: {
      p50: healthPct.p50,
      p99: healthPct.p99,
      max: health.length ? Math.max(...health) : NaN,
      samples: health.length,
    },
    clientLagMs: { p50: clientPct.p50, p99: clientPct.p99 },
    wallSeconds: (performance.now() - t0) / 1000,
  };
}

/** `Engine.generate` in this process at the same concurrency, driven like the server. */
async function engineLevel(model: TnlModel, level: Level, s: RunSettings, prompts: PromptPool) {
  const records: RequestRecord[] = [];
  const t0 = performance.now();
  const from = t0 + s.warmup * 1000, to = from + s.seconds * 1000;
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), to - t0);
  await Promise.all(Array.from({ length: level.streams }, async (_, c) => {
    for (let n = 0; !ac.signal.aborted; n++) {
      const body = requestBody(s, level, prompts, c, n, null);
      const rec: RequestRecord = { start: performance.now(), chunks: [], weight: 1 };
      records.push(rec);
      let tokens = 0;
      try {
        for await (
          const ch of model.generate(body.prompt as string, {
            maxTokens: s.tokens,
            temperature: TEMPERATURE,
            logitBias: { [s.eos]: -100 },
            seed: body.seed as number,
            signal: ac.signal,
          })
        ) {
          // Weight 1 per token: a chunk of several tokens counts as several arrivals.
          for (let i = 0; i < ch.tokens.length; i++) rec.chunks.push(performance.now());
          tokens += ch.tokens.length;
          if (ch.finishReason) {
            rec.finish = ch.finishReason;
            if (ch.finishReason !== "cancelled") rec.completionTokens = tokens;
          }
        }
      } catch (e) {
        if (!ac.signal.aborted) rec.error = (e as Error).message.slice(0, 80);
      }
    }
  }));
  clearTimeout(timer);
  return { ...level, ...levelStats(records, from, to, s.tokens) };
}

/** Seconds each backend decode measurement lasts (about). */
const BACKEND_SECONDS = 2;

/**
 * The backend's own figures, one decode measurement per batch size: a short probe sizes the
 * rounds so the measurement lasts about `BACKEND_SECONDS`.
 */
async function backendFigures(b: Backend, streams: number[], longTokens: number | null) {
  const onDevice = Boolean(b.decodeSampled);
  const steps = onDevice ? GPU_STEPS : HOST_STEPS;
  const decode = [];
  for (const batch of [...new Set(streams.map((s) => Math.min(s, b.maxBatch)))]) {
    const opts = { batch, context: 128, steps, rounds: 2, sampling: { temperature: TEMPERATURE } };
    const probe = await measureDecode(b, opts);
    const msPerRound = probe.msPerStep * steps;
    const rounds = Math.min(200, Math.max(2, Math.ceil((BACKEND_SECONDS * 1000) / msPerRound)));
    const r = await measureDecode(b, { ...opts, rounds });
    console.error(
      `backend decode b${batch}: ${r.tokensPerSecond.toFixed(0)} tok/s (${rounds} rounds)`,
    );
    decode.push({ ...r, rounds });
  }
  const prefill = longTokens ? await measurePrefill(b, longTokens, 2) : null;
  if (prefill) {
    console.error(`backend prefill ${longTokens}: ${prefill.ms.toFixed(0)} ms`);
  }
  return {
    decode,
    prefill,
    note: onDevice
      ? ""
      : `host decode (logits read back, greedy arg-max), ${steps} steps per round`,
  };
}

function list(v: unknown, fallback: string): string[] {
  return String(v ?? fallback).split(",").map((s) => s.trim()).filter(Boolean);
}

function fail(msg: string): never {
  console.error(msg);
  Deno.exit(2);
}

/**
 * The commit of a checkout; `TNL_BENCH_COMMIT` overrides it (a copy of the work tree on another
 * machine may carry an older `.git`).
 */
async function gitCommit(dir: string): Promise<string | null> {
  const given = Deno.env.get("TNL_BENCH_COMMIT");
  if (given) return given;
  try {
    const out = await new Deno.Command("git", { args: ["rev-parse", "--short", "HEAD"], cwd: dir })
      .output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : null;
  } catch {
    return null;
  }
}

const ms = (v: number | undefined) => (v === undefined || Number.isNaN(v) ? "-" : fmtNum(v));

/** What `--engine-child` runs: one engine level in a process of its own. */
interface EngineChildSpec {
  modelDir: string;
  backend: string;
  quantize: string;
  level: Level;
  settings: RunSettings;
  longCount: number;
}

/** `--engine-child SPEC`: load the model, run the engine level, print its figures as JSON. */
async function engineChild(spec: EngineChildSpec): Promise<void> {
  const dir = spec.modelDir.replace(/\/?$/, "/");
  const tok = await Tokenizer.load(`${dir}tokenizer.model`);
  const model = await loadModel(spec.modelDir, {
    backend: spec.backend as "auto",
    quantize: spec.quantize as "none",
  });
  try {
    const r = await engineLevel(model, spec.level, spec.settings, makePrompts(tok, spec.longCount));
    console.log(JSON.stringify(r));
  } finally {
    await model.dispose();
  }
}

/** The script's arguments; a leading `--` (as `deno task bench:serve -- ...` passes it) is dropped. */
const ARGV = Deno.args[0] === "--" ? Deno.args.slice(1) : Deno.args;

async function main(): Promise<void> {
  const args = parseArgs(ARGV, {
    string: [
      "engine-child",
      "model",
      "shape",
      "backend",
      "streams",
      "prompt",
      "store",
      "tokens",
      "seconds",
      "warmup",
      "server-dir",
      "server-args",
      "server-deno-flags",
      "label",
      "quantize",
      "pairs",
    ],
    boolean: ["engine", "no-backend", "help", "restart"],
  });
  if (args["engine-child"]) return await engineChild(JSON.parse(String(args["engine-child"])));
  if (args.help) {
    console.log(
      "deno run -A bench/serve.ts [--model default|DIR | --shape 385m|1b|7b] [--backend B]\n" +
        "  [--streams 1,8,64,128,256] [--prompt short,long] [--store none,kept] [--tokens 256]\n" +
        "  [--seconds 12] [--warmup 2] [--server-dir PATH] [--server-args '...'] [--server-deno-flags '...'] [--label NAME]\n" +
        "  [--quantize none|int8] [--engine] [--no-backend] [--pairs N [--restart]]",
    );
    return;
  }
  const streams = list(args.streams, "1,8,64,128,256").map(Number);
  if (streams.some((s) => !Number.isSafeInteger(s) || s < 1)) {
    fail(`--streams: expected positive integers, got ${args.streams}`);
  }
  const promptKinds = list(args.prompt, "short,long");
  if (promptKinds.some((p) => p !== "short" && p !== "long")) {
    fail(`--prompt: expected short and/or long, got ${args.prompt}`);
  }
  const stores = list(args.store, "none,kept");
  if (stores.some((s) => s !== "none" && s !== "kept")) {
    fail(`--store: expected none and/or kept, got ${args.store}`);
  }
  const num = (name: string, fallback: number, min: number) => {
    const v = Number(args[name] ?? fallback);
    if (!Number.isFinite(v) || v < min) fail(`--${name}: expected a number >= ${min}`);
    return v;
  };
  const tokens = num("tokens", 256, 1);
  const pairs = Math.floor(num("pairs", 1, 1));
  const seconds = num("seconds", 12, 1);
  const warmup = num("warmup", 2, 0);
  const backendChoice = String(args.backend ?? "auto");
  if (!["auto", "cpu", "webgpu"].includes(backendChoice)) {
    fail(`--backend: expected auto, cpu or webgpu, got ${backendChoice}`);
  }
  if (args.shape && args.model) fail("--shape and --model: give one");
  const quantize = String(args.quantize ?? "none");
  if (quantize !== "none" && quantize !== "int8") {
    fail(`--quantize: expected none or int8, got ${quantize}`);
  }
  const serverDir = args["server-dir"] ? String(args["server-dir"]) : ROOT;

  // The model directory.
  let modelDir = DEFAULT_MODEL_DIR, modelName = "tnl-shakespeare-6m", tempDir: string | null = null;
  if (args.shape) {
    const shape = String(args.shape).toLowerCase();
    if (!["385m", "1b", "7b"].includes(shape)) fail(`--shape: expected 385m, 1b or 7b`);
    tempDir = await Deno.makeTempDir({ prefix: `tnl-serve-${shape}-` });
    console.error(`writing a random ${shape} model to ${tempDir}`);
    const w = await writeShapeModel(tempDir, shape);
    console.error(
      `wrote ${(w.weightBytes / 1e9).toFixed(2)} GB and ${w.vocabSize} pieces in ${
        (w.ms / 1000).toFixed(1)
      } s`,
    );
    modelDir = tempDir;
    modelName = shape;
  } else if (args.model && args.model !== "default") {
    modelDir = String(args.model);
    modelName = modelDir.replace(/\/+$/, "").split("/").pop()!;
  }

  try {
    const tok = await Tokenizer.load(`${modelDir.replace(/\/?$/, "/")}tokenizer.model`);
    const prompts = makePrompts(tok, promptKinds.includes("long") ? 8 : 0);
    const settings: RunSettings = { tokens, seconds, warmup, eos: tok.eosId };
    const levels: Level[] = [];
    for (const prompt of promptKinds as Level["prompt"][]) {
      for (const store of stores as Level["store"][]) {
        for (const s of streams) levels.push({ streams: s, prompt, store });
      }
    }

    const loadBefore = Deno.loadavg();
    // 1. In-process figures, before the server exists.
    let backendKind = "", device = "", maxBatch = 0;
    let backend: Awaited<ReturnType<typeof backendFigures>> | null = null;
    const engine: Awaited<ReturnType<typeof engineLevel>>[] = [];
    console.error(`loading ${modelName} in-process (${backendChoice})`);
    const model = await loadModel(modelDir, {
      backend: backendChoice as "auto",
      quantize: quantize as "none",
    });
    const measureEngine = () => args.engine || model.backend.kind === "cpu";
    /** `Engine.generate` in this process at a level's concurrency (the server then idles). */
    const engineRun = async (level: Level) => {
      const r = await engineLevel(model, { ...level, store: "none" }, settings, prompts);
      console.error(
        `engine ${level.streams} streams ${level.prompt}: ${
          r.tokensPerSecond.toFixed(0)
        } tok/s, TTFT p50 ${ms(r.ttftMs.p50)} ms`,
      );
      return r;
    };
    let modelLoaded = true;
    /** `Engine.generate` at a level in a new process of this benchmark (`--restart`). */
    const engineInChild = async (level: Level) => {
      const spec: EngineChildSpec = {
        modelDir,
        backend: model.backend.kind,
        quantize,
        level: { ...level, store: "none" },
        settings,
        longCount: promptKinds.includes("long") ? 8 : 0,
      };
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          new URL(import.meta.url).pathname,
          "--engine-child",
          JSON.stringify(spec),
        ],
        stdout: "piped",
        stderr: "inherit",
      }).output();
      if (!out.success) fail(`the engine's process failed (exit ${out.code})`);
      const r = JSON.parse(
        new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!,
      ) as Awaited<ReturnType<typeof engineLevel>>;
      console.error(
        `engine ${level.streams} streams ${level.prompt} (new process): ${
          r.tokensPerSecond.toFixed(0)
        } tok/s, TTFT p50 ${ms(r.ttftMs.p50)} ms`,
      );
      return r;
    };
    const disposeModel = async () => {
      if (modelLoaded) await model.dispose();
      modelLoaded = false;
    };
    try {
      backendKind = model.backend.kind;
      device = model.backend.device;
      maxBatch = model.backend.maxBatch;
      if (!args["no-backend"]) {
        backend = await backendFigures(
          model.backend,
          streams,
          promptKinds.includes("long") ? prompts.longTokens : null,
        );
      }
      if (measureEngine()) {
        for (const prompt of promptKinds as Level["prompt"][]) {
          for (const s of streams) {
            engine.push(await engineRun({ streams: s, prompt, store: "none" }));
          }
        }
      }
    } finally {
      // With --pairs the model stays loaded: the engine is measured again between server levels.
      if (pairs === 1 || !measureEngine() || args.restart) await disposeModel();
    }

    /**
     * With --pairs: each server run over the engine run just before it (the first over the run
     * before the server started), so a drift of the shared machine's speed cancels in each ratio.
     */
    const pairRatios = (l: Level & { runs?: number[] }) => {
      const e = engine.filter((x) => x.streams === l.streams && x.prompt === l.prompt);
      if (l.store !== "none" || !l.runs || e.length < l.runs.length) return [];
      return l.runs.map((s, i) => s / e[i].tokensPerSecond);
    };
    const backendAt = (s: number) =>
      backend?.decode.find((d) => d.batch === Math.min(s, maxBatch))?.tokensPerSecond;
    /** The engine's figure at a level: the median of its runs (several with --pairs). */
    const engineAt = (l: Level) => {
      const v = engine.filter((e) => e.streams === l.streams && e.prompt === l.prompt)
        .map((e) => e.tokensPerSecond).sort((a, b) => a - b);
      return v.length ? v[(v.length - 1) >> 1] : undefined;
    };

    // 2. The server.
    const serverArgs = [
      "--model",
      modelDir,
      "--backend",
      backendKind,
      "--store",
      "memory",
      ...(quantize === "int8" ? ["--quantize", "int8"] : []),
      ...String(args["server-args"] ?? "").split(/\s+/).filter(Boolean),
    ];
    console.error(`starting the server of ${serverDir}: ${serverArgs.join(" ")}`);
    const t0 = performance.now();
    // Flags for the server's Deno (e.g. `--cpu-prof --cpu-prof-dir=DIR` to profile the serving
    // thread under load).
    // The value starts with "--": it must be given as `--server-deno-flags="--cpu-prof ..."`.
    if (args["server-deno-flags"] === "") {
      fail('--server-deno-flags: give its value after "=", e.g. --server-deno-flags="--cpu-prof"');
    }
    const denoFlags = String(args["server-deno-flags"] ?? "").split(/\s+/).filter(Boolean);
    const launch = () => startServer(serverDir, serverArgs, 15 * 60_000, denoFlags);
    let server = await launch();
    const startMs = performance.now() - t0;
    const health = await (await fetch(`${server.url}/health`)).json();
    const results = [];
    try {
      for (const level of levels) {
        const runs = [];
        for (let pair = 0; pair < pairs; pair++) {
          // --pairs: engine and server alternate, so a drift of the machine's speed hits both.
          if (pair > 0 && args.restart) {
            // Fresh processes' luck on both sides: a new server, the engine in a new process.
            await server.stop();
            if (measureEngine() && level.store === "none") {
              engine.push(await engineInChild(level));
            }
            server = await launch();
          } else if (pair > 0 && modelLoaded && level.store === "none") {
            engine.push(await engineRun(level));
          }
          const r = await serverLevel(server.url, level, settings, prompts);
          console.error(
            `server ${level.streams} streams ${level.prompt} ${level.store}: ${
              r.tokensPerSecond.toFixed(0)
            } tok/s, TTFT p50 ${ms(r.ttftMs.p50)} p95 ${ms(r.ttftMs.p95)} ms, ITL p99 ${
              ms(r.itlMs.p99)
            } ms, lag p99 ${ms(r.eventLoopLagMs?.p99)} ms, /health p99 ${
              ms(r.healthMs.p99)
            } ms, client lag p99 ${ms(r.clientLagMs.p99)} ms, ${r.wallSeconds.toFixed(1)} s${
              Object.keys(r.errors).length ? `, errors ${JSON.stringify(r.errors)}` : ""
            }`,
          );
          runs.push(r);
        }
        // The run with the median served figure stands for the level; every run is kept.
        const sorted = [...runs].sort((a, b) => a.tokensPerSecond - b.tokensPerSecond);
        const r = { ...sorted[(sorted.length - 1) >> 1], runs: runs.map((x) => x.tokensPerSecond) };
        const b = backendAt(level.streams), e = engineAt(level);
        if (b || e) {
          console.error(
            `  served/backend ${b ? (r.tokensPerSecond / b).toFixed(2) : "-"}, served/engine ${
              e ? (r.tokensPerSecond / e).toFixed(2) : "-"
            }${
              pairs > 1
                ? ` (medians of ${pairs} runs: served ${
                  r.runs.map((x) => x.toFixed(0)).join(", ")
                }; pair ratios ${pairRatios(r).map((x) => x.toFixed(2)).join(", ")})`
                : ""
            }`,
          );
        }
        results.push(r);
      }
    } finally {
      await server.stop();
      await disposeModel();
    }

    // 3. Report.
    const adapter = backendKind === "cpu" ? "cpu" : reportName(device);
    const suffix = (quantize === "int8" ? "_int8" : "") + (args.label ? `_${args.label}` : "");
    const name = `serve_${adapter}_${modelName.toLowerCase()}${suffix}`;
    const rows = results.map((r) => {
      const b = backendAt(r.streams), e = engineAt(r);
      const ratios = pairRatios(r);
      return {
        ...r,
        servedOverBackend: b ? r.tokensPerSecond / b : null,
        servedOverEngine: e ? r.tokensPerSecond / e : null,
        pairRatios: ratios,
        medianPairRatio: ratios.length ? percentile(ratios, 50) : null,
      };
    });
    const date = new Date().toISOString();
    const json = {
      date,
      adapter,
      device,
      backend: backendKind,
      model: modelName,
      machine: `${Deno.build.os} ${Deno.build.arch}, ${navigator.hardwareConcurrency} cores`,
      loadAverage: { before: loadBefore, after: Deno.loadavg() },
      deno: Deno.version.deno,
      server: {
        dir: serverDir,
        commit: await gitCommit(serverDir),
        args: serverArgs,
        startMs,
        health,
      },
      bench: { commit: await gitCommit(ROOT) },
      settings: {
        ...settings,
        temperature: TEMPERATURE,
        shortPromptWords: SHORT_WORDS,
        longPromptTokens: prompts.longTokens,
        backendSteps: backend?.note ? HOST_STEPS : GPU_STEPS,
        maxBatch,
      },
      backendFigures: backend,
      engine,
      levels: rows,
    };
    await Deno.mkdir(RESULTS, { recursive: true });
    await Deno.writeTextFile(`${RESULTS}${name}.json`, JSON.stringify(json, null, 1) + "\n");
    const md = [
      `### Serving: ${modelName}, ${backendKind} backend on ${device}, ${date.slice(0, 10)}`,
      "",
      `\`deno run -A bench/serve.ts ${ARGV.join(" ")}\`: streaming \`/v1/completions\`, ` +
      `${tokens} tokens per request (EOS banned by logit_bias), temperature ${TEMPERATURE}, ` +
      `prompts of ${SHORT_WORDS} English words (short) or ${prompts.longTokens} tokens (long); ` +
      `${warmup} s warm-up then ${seconds} s measured per level. Backend: ` +
      (backend?.note
        ? `${backend.note}, `
        : `decode sampled on the device (T ${TEMPERATURE}), ${GPU_STEPS} steps per readback, `) +
      `batch = min(streams, ${maxBatch}), in-process before the server started. ` +
      `Server ${json.server.commit ?? serverDir}, loaded in ${(startMs / 1000).toFixed(1)} s. ` +
      `Load average (1 min) ${loadBefore[0].toFixed(1)} before, ${
        json.loadAverage.after[0].toFixed(1)
      } after, on ${navigator.hardwareConcurrency} cores.`,
      "",
      markdownTable(
        [
          "streams",
          "prompt",
          "store",
          "served tok/s",
          "backend tok/s",
          "served/backend",
          "engine tok/s",
          "served/engine",
          "TTFT p50/p95/p99 ms",
          "ITL p50/p99 ms",
          "loop lag p50/p99 ms",
          "/health p50/p99 ms",
          "requests started in window / done (exact length) / still without a token at the end",
          "errors",
        ],
        rows.map((r) => [
          r.streams,
          r.prompt,
          r.store,
          r.tokensPerSecond,
          backendAt(r.streams) ?? "-",
          r.servedOverBackend === null ? "-" : r.servedOverBackend.toFixed(2),
          engineAt(r) ?? "-",
          (r.servedOverEngine === null ? "-" : r.servedOverEngine.toFixed(2)) +
          (r.medianPairRatio === null ? "" : ` (pairs: ${r.medianPairRatio.toFixed(2)})`),
          `${ms(r.ttftMs.p50)} / ${ms(r.ttftMs.p95)} / ${ms(r.ttftMs.p99)}`,
          `${ms(r.itlMs.p50)} / ${ms(r.itlMs.p99)}`,
          r.eventLoopLagMs ? `${ms(r.eventLoopLagMs.p50)} / ${ms(r.eventLoopLagMs.p99)}` : "n/a",
          `${ms(r.healthMs.p50)} / ${ms(r.healthMs.p99)}`,
          `${r.started} / ${r.finished} (${r.exactLength}) / ${r.noFirstToken}`,
          Object.entries(r.errors).map(([k, v]) => `${k}: ${v}`).join(", ") || "-",
        ]),
      ),
      "",
    ];
    const worst = rows.reduce((a, r) => (r.clientLagMs.p99 > a.clientLagMs.p99 ? r : a), rows[0]);
    if (worst) {
      md.push(
        `Client (this benchmark's own event loop) lag p99: at most ${
          ms(worst.clientLagMs.p99)
        } ms (${worst.streams} streams, ${worst.prompt}, ${worst.store}); arrival times carry it.`,
        "",
      );
    }
    if (pairs > 1) {
      md.push(
        `${pairs} runs per level, the engine (\`Engine.generate\` in this process) and the server ` +
          `alternating; each row is the run with the median served figure and the median engine ` +
          `figure; each server run over the engine run just before it (pair ratios, with their ` +
          `median) cancels a drift of the machine's speed. ` +
          (args.restart
            ? "Each pair after the first ran in new processes (the server restarted, the " +
              "engine in a new process of this benchmark). "
            : "") +
          rows.map((r) =>
            `${r.streams} streams ${r.prompt}/${r.store}: served ${r.runs.map(fmtNum).join(", ")}` +
            (r.store === "none" &&
                engine.some((e) => e.streams === r.streams && e.prompt === r.prompt)
              ? `; engine ${
                engine.filter((e) => e.streams === r.streams && e.prompt === r.prompt)
                  .map((e) => fmtNum(e.tokensPerSecond)).join(", ")
              } tok/s; pair ratios ${r.pairRatios.map((x) => x.toFixed(2)).join(", ")}${
                r.medianPairRatio === null ? "" : ` (median ${r.medianPairRatio.toFixed(2)})`
              }`
              : " tok/s")
          ).join("; ") + ".",
        "",
      );
    }
    if (backend?.prefill) {
      md.push(
        `Backend prefill of ${backend.prefill.tokens} tokens in one call: ${
          backend.prefill.ms.toFixed(0)
        } ms.`,
        "",
      );
    }
    await Deno.writeTextFile(`${RESULTS}${name}.md`, md.join("\n"));
    const series = (pick: (r: (typeof rows)[number]) => number) =>
      promptKinds.flatMap((p) =>
        stores.map((st) => ({
          label: `server ${p} ${st}`,
          points: rows.filter((r) => r.prompt === p && r.store === st && Number.isFinite(pick(r)))
            .map((r): [number, number] => [r.streams, pick(r)]),
        }))
      ).filter((s) => s.points.length);
    const through = series((r) => r.tokensPerSecond);
    if (backend) {
      through.push({
        label: "backend decode",
        points: streams.map((s): [number, number] => [s, backendAt(s)!]),
      });
    }
    for (const p of promptKinds) {
      const pts = streams.filter((n) => engine.some((e) => e.prompt === p && e.streams === n))
        .map((
          n,
        ): [number, number] => [
          n,
          engineAt({ streams: n, prompt: p as Level["prompt"], store: "none" })!,
        ]);
      if (pts.length) through.push({ label: `engine ${p}`, points: pts });
    }
    await Deno.writeTextFile(
      `${RESULTS}${name}_throughput.svg`,
      lineChart(
        `Served tokens/s — ${modelName}, ${device}`,
        "concurrent streams",
        "tokens/s",
        through,
      ),
    );
    await Deno.writeTextFile(
      `${RESULTS}${name}_ttft.svg`,
      lineChart(
        `Time to first token, p50 — ${modelName}, ${device}`,
        "concurrent streams",
        "ms",
        series((r) => r.ttftMs.p50),
      ),
    );
    const head = rows.filter((r) => r.prompt === "short" && r.store === "none").at(-1) ??
      rows.at(-1)!;
    console.log(
      `serve ${adapter} ${modelName}: ${head.streams} streams ${head.prompt}/${head.store}: ` +
        `${fmtNum(head.tokensPerSecond)} tok/s served` +
        (head.servedOverBackend !== null
          ? `, ${head.servedOverBackend.toFixed(2)} of the backend`
          : "") +
        (head.servedOverEngine !== null
          ? `, ${head.servedOverEngine.toFixed(2)} of the engine`
          : "") +
        (head.medianPairRatio !== null
          ? ` (${head.medianPairRatio.toFixed(2)}: median of the pairs)`
          : "") +
        `, TTFT p50 ${ms(head.ttftMs.p50)} ms p95 ${ms(head.ttftMs.p95)} ms` +
        ` → bench/results/${name}.{json,md}`,
    );
  } finally {
    if (tempDir) await Deno.remove(tempDir, { recursive: true });
  }
}

if (import.meta.main) await main();
