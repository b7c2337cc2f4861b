/**
 * Prometheus metrics of the HTTP layer: requests by route, method and status, a request duration
 * histogram per route, time to first token, inter-token latency and the event-loop lag of the
 * serving thread. `renderMetrics` adds the engine's and the sessions' gauges and
 * writes the text exposition format (version 0.0.4).
 * @module
 */

import type { PrefixCacheStats } from "../sessions/mod.ts";
import type { EngineStats } from "../engine/engine.ts";

/** Upper bounds (seconds) of the request duration histogram. */
export const DURATION_BUCKETS: readonly number[] = [
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
  60,
  120,
  300,
];

/** Upper bounds (seconds) of the time-to-first-token histogram: the request ones up to 30 s. */
export const TTFT_BUCKETS: readonly number[] = DURATION_BUCKETS.filter((b) => b <= 30);

/** Upper bounds (seconds) of the inter-token latency and event-loop lag histograms. */
export const LATENCY_BUCKETS: readonly number[] = [
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
];

/** A Prometheus histogram: cumulative bucket counts, sum and count. */
export class Histogram {
  readonly #bounds: readonly number[];
  readonly #counts: number[];
  /** Sum of the observed values. */
  sum = 0;
  /** Number of observations. */
  count = 0;

  /** A histogram with these upper bounds (ascending). */
  constructor(bounds: readonly number[]) {
    this.#bounds = bounds;
    this.#counts = new Array(bounds.length).fill(0);
  }

  /** Record one value. */
  observe(v: number): void {
    for (let i = 0; i < this.#bounds.length; i++) if (v <= this.#bounds[i]) this.#counts[i]++;
    this.sum += v;
    this.count++;
  }

  /** The `_bucket`, `_sum` and `_count` lines of `name`, with extra labels. */
  lines(name: string, extra: Record<string, string> = {}): string[] {
    const out = this.#bounds.map((b, i) =>
      `${name}_bucket${labels({ ...extra, le: String(b) })} ${this.#counts[i]}`
    );
    out.push(`${name}_bucket${labels({ ...extra, le: "+Inf" })} ${this.count}`);
    const l = Object.keys(extra).length ? labels(extra) : "";
    out.push(`${name}_sum${l} ${num(this.sum)}`, `${name}_count${l} ${this.count}`);
    return out;
  }
}

/** Request counters and duration histograms. */
export class HttpMetrics {
  readonly #requests = new Map<string, number>();
  readonly #durations = new Map<string, Histogram>();
  /** Requests in progress (streams count until they end). */
  inFlight = 0;
  /** Seconds from a generation request's arrival to its first token. */
  readonly ttft: Histogram = new Histogram(TTFT_BUCKETS);
  /** Seconds between consecutive tokens of one generation, as its response receives them. */
  readonly interToken: Histogram = new Histogram(LATENCY_BUCKETS);
  /** How late a 10 ms timer of the serving thread fires (seconds): its event-loop lag. */
  readonly loopLag: Histogram = new Histogram(LATENCY_BUCKETS);

  /** Record one finished request. */
  observe(route: string, method: string, status: number, seconds: number): void {
    const key = JSON.stringify([route, method, String(status)]);
    this.#requests.set(key, (this.#requests.get(key) ?? 0) + 1);
    let h = this.#durations.get(route);
    if (!h) this.#durations.set(route, h = new Histogram(DURATION_BUCKETS));
    h.observe(seconds);
  }

  /** Requests counted for a route and status (tests). */
  count(route: string, method: string, status: number): number {
    return this.#requests.get(JSON.stringify([route, method, String(status)])) ?? 0;
  }

  /** The request counter and histogram lines. */
  lines(): string[] {
    const out: string[] = [];
    out.push("# HELP tnl_http_requests_total HTTP requests by route, method and status.");
    out.push("# TYPE tnl_http_requests_total counter");
    for (const [key, n] of this.#requests) {
      const [route, method, status] = JSON.parse(key) as string[];
      out.push(`tnl_http_requests_total${labels({ route, method, status })} ${n}`);
    }
    out.push(
      "# HELP tnl_http_request_duration_seconds HTTP request duration (streams: to the end).",
    );
    out.push("# TYPE tnl_http_request_duration_seconds histogram");
    for (const [route, h] of this.#durations) {
      out.push(...h.lines("tnl_http_request_duration_seconds", { route }));
    }
    out.push("# HELP tnl_http_requests_in_flight HTTP requests in progress.");
    out.push("# TYPE tnl_http_requests_in_flight gauge");
    out.push(`tnl_http_requests_in_flight ${this.inFlight}`);
    const hist = (name: string, help: string, h: Histogram) =>
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} histogram`, ...h.lines(name));
    hist("tnl_time_to_first_token_seconds", "Request arrival to first generated token.", this.ttft);
    hist(
      "tnl_inter_token_latency_seconds",
      "Time between consecutive tokens of a generation, as its response gets them.",
      this.interToken,
    );
    hist(
      "tnl_event_loop_lag_seconds",
      "How late a 10 ms timer on the serving thread fires.",
      this.loopLag,
    );
    return out;
  }

  /**
   * Sample the serving thread's event-loop lag every `intervalMs` into `loopLag` until the
   * returned function is called (the timer never keeps the process alive).
   */
  watchEventLoop(intervalMs = 10): () => void {
    let last = performance.now();
    const id = setInterval(() => {
      const now = performance.now();
      this.loopLag.observe(Math.max(0, now - last - intervalMs) / 1000);
      last = now;
    }, intervalMs);
    Deno.unrefTimer(id);
    return () => clearInterval(id);
  }
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function labels(l: Record<string, string>): string {
  return "{" + Object.entries(l).map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",") + "}";
}

function num(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

/** Everything `/metrics` shows. */
export interface MetricsSnapshot {
  /** Engine counters (absent while the model loads). */
  engine?: EngineStats;
  /** Sessions in the store (absent when unknown). */
  sessions?: number;
  /** Bytes of session state stored. */
  stateBytes: number;
  /** Bytes of session state written since start. */
  stateBytesWritten: number;
  /** Sessions a request holds now. */
  busySessions: number;
  /** 1 when the model is loaded. */
  ready: boolean;
  /** Prefix-cache counters (absent when the cache is off or the model loads). */
  prefix?: PrefixCacheStats;
}

/** The Prometheus text of the HTTP metrics and a snapshot of the rest. */
export function renderMetrics(http: HttpMetrics, s: MetricsSnapshot): string {
  const out = http.lines();
  const gauge = (name: string, help: string, v: number, type = "gauge") => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, `${name} ${num(v)}`);
  };
  gauge("tnl_model_ready", "1 when the model is loaded and serving.", s.ready ? 1 : 0);
  if (s.engine) {
    const e = s.engine;
    gauge("tnl_prompt_tokens_total", "Prompt tokens consumed.", e.promptTokens, "counter");
    gauge("tnl_completion_tokens_total", "Tokens generated.", e.completionTokens, "counter");
    gauge("tnl_engine_requests_total", "Generation requests accepted.", e.requests, "counter");
    gauge("tnl_engine_rejected_total", "Requests rejected, queue full.", e.rejected, "counter");
    gauge("tnl_queue_depth", "Requests waiting for a slot.", e.queueDepth);
    gauge("tnl_running_sequences", "Sequences holding a slot (prefilling or decoding).", e.running);
    gauge(
      "tnl_prefilling_sequences",
      "Running sequences still consuming their prompt.",
      e.prefilling,
    );
    gauge("tnl_decode_round_steps", "Steps of the last device decode round.", e.lastSteps);
    gauge("tnl_batch_size", "Size of the last decode batch.", e.lastBatch);
    gauge("tnl_decode_steps_total", "Batched decode steps run.", e.decodeSteps, "counter");
    gauge(
      "tnl_decode_rounds_continued_total",
      "Decode rounds the device continued before the round before was read back.",
      e.continuedRounds,
      "counter",
    );
    gauge("tnl_tokens_per_second", "Generated tokens per second, last seconds.", e.tokensPerSecond);
  }
  if (s.sessions !== undefined) gauge("tnl_sessions", "Sessions in the store.", s.sessions);
  gauge("tnl_sessions_busy", "Sessions a request holds now.", s.busySessions);
  gauge("tnl_state_bytes_stored", "Bytes of session state stored.", s.stateBytes);
  gauge(
    "tnl_state_bytes_written_total",
    "Bytes of session state written since start.",
    s.stateBytesWritten,
    "counter",
  );
  if (s.prefix) {
    const p = s.prefix;
    gauge(
      "tnl_prefix_cache_lookups_total",
      "Prompts looked up in the prefix cache.",
      p.lookups,
      "counter",
    );
    gauge("tnl_prefix_cache_hits_total", "Lookups that found a cached prefix.", p.hits, "counter");
    gauge(
      "tnl_prefix_cache_tokens_skipped_total",
      "Prompt tokens not prefilled thanks to the prefix cache.",
      p.tokensSkipped,
      "counter",
    );
    gauge("tnl_prefix_cache_captures_total", "Prefix states captured.", p.captures, "counter");
    gauge("tnl_prefix_cache_evictions_total", "Prefix states evicted.", p.evictions, "counter");
    gauge("tnl_prefix_cache_entries", "Prefix states held in memory.", p.entries);
    gauge("tnl_prefix_cache_bytes", "Bytes of prefix states held in memory.", p.bytes);
  }
  return out.join("\n") + "\n";
}
