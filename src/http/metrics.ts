/**
 * Prometheus metrics of the HTTP layer: requests by route, method and status, and a request
 * duration histogram per route. `renderMetrics` adds the engine's and the sessions' gauges and
 * writes the text exposition format (version 0.0.4).
 * @module
 */

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

interface Histogram {
  counts: number[];
  sum: number;
  count: number;
}

/** Request counters and duration histograms. */
export class HttpMetrics {
  readonly #requests = new Map<string, number>();
  readonly #durations = new Map<string, Histogram>();
  /** Requests in progress (streams count until they end). */
  inFlight = 0;

  /** Record one finished request. */
  observe(route: string, method: string, status: number, seconds: number): void {
    const key = JSON.stringify([route, method, String(status)]);
    this.#requests.set(key, (this.#requests.get(key) ?? 0) + 1);
    let h = this.#durations.get(route);
    if (!h) {
      h = { counts: new Array(DURATION_BUCKETS.length).fill(0), sum: 0, count: 0 };
      this.#durations.set(route, h);
    }
    for (let i = 0; i < DURATION_BUCKETS.length; i++) {
      if (seconds <= DURATION_BUCKETS[i]) h.counts[i]++;
    }
    h.sum += seconds;
    h.count++;
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
      for (let i = 0; i < DURATION_BUCKETS.length; i++) {
        const le = String(DURATION_BUCKETS[i]);
        out.push(`tnl_http_request_duration_seconds_bucket${labels({ route, le })} ${h.counts[i]}`);
      }
      out.push(
        `tnl_http_request_duration_seconds_bucket${labels({ route, le: "+Inf" })} ${h.count}`,
      );
      out.push(`tnl_http_request_duration_seconds_sum${labels({ route })} ${num(h.sum)}`);
      out.push(`tnl_http_request_duration_seconds_count${labels({ route })} ${h.count}`);
    }
    out.push("# HELP tnl_http_requests_in_flight HTTP requests in progress.");
    out.push("# TYPE tnl_http_requests_in_flight gauge");
    out.push(`tnl_http_requests_in_flight ${this.inFlight}`);
    return out;
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
    gauge("tnl_running_sequences", "Sequences in the running batch.", e.running);
    gauge("tnl_batch_size", "Size of the last decode batch.", e.lastBatch);
    gauge("tnl_decode_steps_total", "Batched decode steps run.", e.decodeSteps, "counter");
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
  return out.join("\n") + "\n";
}
