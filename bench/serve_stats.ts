/**
 * Statistics of the serving benchmark: percentiles of client-side samples, and quantiles of a
 * Prometheus histogram from the difference of two `/metrics` scrapes.
 * @module
 */

/**
 * The p-th percentile (0..100) of `values`, linearly interpolated between the closest ranks (the
 * default of numpy); NaN for no values. `sorted` says the values are already ascending.
 */
export function percentile(values: ArrayLike<number>, p: number, sorted = false): number {
  const n = values.length;
  if (n === 0) return NaN;
  const v = sorted ? values : Float64Array.from(values).sort();
  const at = (Math.min(100, Math.max(0, p)) / 100) * (n - 1);
  const lo = Math.floor(at), hi = Math.ceil(at);
  return v[lo] + (v[hi] - v[lo]) * (at - lo);
}

/** Several percentiles of one sample, keyed `p50`, `p95`, ... */
export function percentiles(
  values: ArrayLike<number>,
  ps: readonly number[],
): Record<string, number> {
  const v = Float64Array.from(values).sort();
  return Object.fromEntries(ps.map((p) => [`p${p}`, percentile(v, p, true)]));
}

/** A cumulative Prometheus histogram: upper bounds (the last is +Inf), counts, sum. */
export interface PromHistogram {
  /** Bucket upper bounds, ascending; `Infinity` for `+Inf`. */
  le: number[];
  /** Cumulative count of each bucket. */
  counts: number[];
  /** The `_sum` sample. */
  sum: number;
  /** The `_count` sample. */
  count: number;
}

/**
 * Read histogram `name` from Prometheus text exposition (label sets other than `le` are summed);
 * null when the text has no bucket of it.
 */
export function parsePromHistogram(text: string, name: string): PromHistogram | null {
  const buckets = new Map<number, number>();
  let sum = 0, count = 0;
  const num = (s: string) => (s === "+Inf" ? Infinity : s === "-Inf" ? -Infinity : Number(s));
  for (const line of text.split("\n")) {
    if (!line.startsWith(name) || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const [, metric, labels = "", value] = m;
    if (metric === `${name}_bucket`) {
      const le = /(?:^|[{,])\s*le="([^"]*)"/.exec(labels);
      if (!le) continue;
      const k = num(le[1]);
      buckets.set(k, (buckets.get(k) ?? 0) + num(value));
    } else if (metric === `${name}_sum`) sum += num(value);
    else if (metric === `${name}_count`) count += num(value);
  }
  if (buckets.size === 0) return null;
  const le = [...buckets.keys()].sort((a, b) => a - b);
  return { le, counts: le.map((k) => buckets.get(k)!), sum, count };
}

/** The observations between two scrapes of one histogram (`after` minus `before`). */
export function histogramDelta(before: PromHistogram | null, after: PromHistogram): PromHistogram {
  if (!before) return after;
  const prior = new Map(before.le.map((k, i) => [k, before.counts[i]]));
  return {
    le: after.le,
    counts: after.counts.map((c, i) => c - (prior.get(after.le[i]) ?? 0)),
    sum: after.sum - before.sum,
    count: after.count - before.count,
  };
}

/**
 * The q-quantile (0..1) of a histogram as Prometheus' `histogram_quantile` computes it: linear
 * within the bucket that holds the rank (the first bucket starts at 0); a rank in the +Inf bucket
 * gives the largest finite bound. NaN when the histogram is empty.
 */
export function histogramQuantile(h: PromHistogram, q: number): number {
  const total = h.counts.at(-1) ?? 0;
  if (!(total > 0)) return NaN;
  const rank = q * total;
  for (let i = 0; i < h.le.length; i++) {
    if (h.counts[i] < rank) continue;
    if (h.le[i] === Infinity) return h.le[i - 1] ?? NaN;
    const lower = i === 0 ? 0 : h.le[i - 1];
    const below = i === 0 ? 0 : h.counts[i - 1];
    const inBucket = h.counts[i] - below;
    return inBucket > 0 ? lower + ((h.le[i] - lower) * (rank - below)) / inBucket : h.le[i];
  }
  return h.le.at(-1)!;
}
