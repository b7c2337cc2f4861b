/** Serving benchmark statistics: percentiles, Prometheus histograms, and the per-level figures. */

import assert from "node:assert/strict";
import { levelStats, type RequestRecord } from "../../bench/serve.ts";
import {
  histogramDelta,
  histogramQuantile,
  parsePromHistogram,
  percentile,
  percentiles,
} from "../../bench/serve_stats.ts";

Deno.test("percentile: interpolates between ranks, any order, NaN when empty", () => {
  const v = [40, 10, 30, 20]; // sorted: 10 20 30 40
  assert.equal(percentile(v, 0), 10);
  assert.equal(percentile(v, 100), 40);
  assert.equal(percentile(v, 50), 25);
  assert.ok(Math.abs(percentile(v, 99) - 39.7) < 1e-9);
  assert.equal(percentile([7], 95), 7);
  assert.ok(Number.isNaN(percentile([], 50)));
  assert.deepEqual(percentiles([3, 1, 2], [0, 50, 100]), { p0: 1, p50: 2, p100: 3 });
});

const SCRAPE = (c: number[], sum: number) =>
  [
    "# HELP tnl_event_loop_lag_seconds Event-loop lag of the HTTP thread.",
    "# TYPE tnl_event_loop_lag_seconds histogram",
    `tnl_event_loop_lag_seconds_bucket{le="0.001"} ${c[0]}`,
    `tnl_event_loop_lag_seconds_bucket{le="0.005"} ${c[1]}`,
    `tnl_event_loop_lag_seconds_bucket{le="0.01"} ${c[2]}`,
    `tnl_event_loop_lag_seconds_bucket{le="+Inf"} ${c[3]}`,
    `tnl_event_loop_lag_seconds_sum ${sum}`,
    `tnl_event_loop_lag_seconds_count ${c[3]}`,
    `tnl_event_loop_lag_seconds_other{le="0.5"} 99`,
    `tnl_queue_depth 3`,
  ].join("\n");

Deno.test("parsePromHistogram: buckets, sum and count of one histogram only", () => {
  const h = parsePromHistogram(SCRAPE([1, 2, 3, 4], 0.5), "tnl_event_loop_lag_seconds")!;
  assert.deepEqual(h.le, [0.001, 0.005, 0.01, Infinity]);
  assert.deepEqual(h.counts, [1, 2, 3, 4]);
  assert.equal(h.sum, 0.5);
  assert.equal(h.count, 4);
  assert.equal(parsePromHistogram("tnl_queue_depth 3\n", "tnl_event_loop_lag_seconds"), null);
  // Label sets besides `le` are summed.
  const two = parsePromHistogram(
    'x_bucket{route="a",le="1"} 2\nx_bucket{route="b",le="1"} 3\nx_bucket{le="+Inf",route="a"} 4\n',
    "x",
  )!;
  assert.deepEqual(two.counts, [5, 4]);
});

Deno.test("histogram delta and quantile: as Prometheus' histogram_quantile", () => {
  const before = parsePromHistogram(SCRAPE([10, 10, 10, 10], 0.01), "tnl_event_loop_lag_seconds");
  const after = parsePromHistogram(SCRAPE([20, 90, 110, 110], 0.31), "tnl_event_loop_lag_seconds")!;
  const d = histogramDelta(before, after);
  assert.deepEqual(d.counts, [10, 80, 100, 100]);
  assert.equal(d.count, 100);
  assert.ok(Math.abs(d.sum - 0.3) < 1e-12);
  // Rank 50 lies in (0.001, 0.005]: 10 below, 70 inside → 0.001 + 0.004 · 40/70.
  assert.ok(Math.abs(histogramQuantile(d, 0.5) - (0.001 + 0.004 * 40 / 70)) < 1e-12);
  // Rank 5 in the first bucket, which starts at 0.
  assert.ok(Math.abs(histogramQuantile(d, 0.05) - 0.0005) < 1e-12);
  assert.equal(histogramQuantile(d, 1), 0.01);
  // A rank in the +Inf bucket gives the largest finite bound.
  const inf = histogramDelta(null, { le: [0.01, Infinity], counts: [1, 10], sum: 1, count: 10 });
  assert.equal(histogramQuantile(inf, 0.99), 0.01);
  assert.ok(
    Number.isNaN(histogramQuantile({ le: [1, Infinity], counts: [0, 0], sum: 0, count: 0 }, 0.5)),
  );
});

Deno.test("levelStats: tokens inside the window, TTFT of requests started in it, gaps", () => {
  const recs: RequestRecord[] = [
    // Started before the window: its tokens inside count, its TTFT does not.
    { start: 0, chunks: [50, 150, 160], weight: 2, completionTokens: 6, finish: "length" },
    // Inside: TTFT 20, gaps 10 and 30.
    { start: 200, chunks: [220, 230, 260], weight: 1, completionTokens: 3, finish: "length" },
    // Inside, no token before the end.
    { start: 900, chunks: [], weight: 1 },
    // Failed.
    { start: 300, chunks: [], weight: 1, error: "HTTP 429" },
    // Started in the warm-up, still waiting at the end: no TTFT, but counted as waiting.
    { start: 50, chunks: [], weight: 1 },
  ];
  const s = levelStats(recs, 100, 1100, 3);
  // 2 chunks × weight 2 + 3 chunks × 1 = 7 tokens in 1 s.
  assert.equal(s.tokensPerSecond, 7);
  assert.equal(s.started, 3);
  assert.equal(s.finished, 2);
  assert.equal(s.exactLength, 1);
  assert.equal(s.noFirstToken, 2);
  assert.deepEqual(s.errors, { "HTTP 429": 1 });
  assert.equal(s.ttftMs.p50, 20);
  // Gaps inside the window: 10 (150→160), 10 (220→230), 30 (230→260).
  assert.equal(s.itlMs.p50, 10);
  assert.ok(Math.abs(s.itlMs.p99 - 29.6) < 1e-9);
});
