/**
 * Token sampling: logit bias, repetition / presence / frequency penalties, temperature, top-k,
 * top-p, min-p, and a draw from the counter-based RNG (`rng.ts`).
 *
 * ## Semantics (fixed; the GPU sampler reproduces them)
 *
 * For logits `x` over a vocabulary of `V` tokens:
 *
 * 1. `z = x` with NaN read as `-Infinity`. Add the logit bias: `z[t] += bias[t]`.
 * 2. Repetition penalty `r` (Hugging Face style) on every distinct token seen in the prompt or
 *    generated so far: `z[t] = z[t] > 0 ? z[t] / r : z[t] * r`.
 * 3. Presence / frequency penalties (OpenAI / vLLM style) on generated tokens only, where `c[t]` is
 *    how often `t` was generated: `z[t] -= presence · [c[t] > 0] + frequency · c[t]`.
 * 4. Temperature 0: return the arg-max of `z`, ties broken by the lowest token id. No draw.
 * 5. Otherwise `m = max z`, weights `w[t] = z[t] == m ? 1 : exp((z[t] - m) / T)` (so the largest
 *    weight is 1), `S = Σ w` in increasing id order; the probabilities are `p = w / S`.
 * 6. Keep-thresholds on weights (equivalently on probabilities):
 *    - top-k (`0 < k < V`): `τk` = the k-th largest weight (counted with multiplicity);
 *    - top-p (`topP < 1`): sort weights in decreasing order and accumulate; `τp` = the first
 *      weight at which the running sum reaches `topP · S` (if rounding keeps it from ever reaching,
 *      `τp = 0`);
 *    - min-p (`minP > 0`): `τm = minP` (that is, `minP · p_max` in probabilities).
 *    The kept set is `{ t : w[t] ≥ τ }` with `τ = max(τk, τp, τm)` (0 for filters that are off):
 *    the intersection of the three filters, every filter judged on the full distribution, and ties
 *    at a boundary are all kept.
 * 7. Draw `u = rngUniform(rng)` (exactly one draw per sampled token, even when one token is kept),
 *    `K = Σ_{kept} w` in increasing id order, `target = u · K`; walk the kept tokens in increasing
 *    id order accumulating `w` and return the first whose running sum exceeds `target`. On a
 *    rounding shortfall, the last kept token with a positive weight.
 *
 * Logprobs (`sampleTokenWithLogprobs`) are of the distribution after bias and penalties, and after
 * temperature (temperature 1 when it is 0), BEFORE the top-k / top-p / min-p filters:
 * `logprob[t] = (z[t] == m ? 0 : (z[t] - m) / T) - ln S`.
 *
 * The history of tokens is not changed by sampling: record the chosen token with
 * `TokenHistory.addGenerated` before sampling the next one.
 * @module
 */

import { InputError } from "../errors.ts";
import { type RngState, rngUniform } from "./rng.ts";

/** Sampling parameters as a caller gives them; every field is optional (`null` reads as absent). */
export interface SamplingParams {
  /** Softmax temperature, ≥ 0; 0 = greedy (arg-max). Default 1. */
  temperature?: number;
  /** Keep the k most probable tokens (ties at the boundary kept); 0 = off. Default 0. */
  topK?: number;
  /** Nucleus sampling mass, in (0, 1]; 1 = off. Default 1. */
  topP?: number;
  /** Keep tokens with probability ≥ minP · (largest probability), in [0, 1]; 0 = off. Default 0. */
  minP?: number;
  /** Hugging Face repetition penalty over prompt and generated tokens, > 0; 1 = off. Default 1. */
  repetitionPenalty?: number;
  /** OpenAI presence penalty over generated tokens, in [-2, 2]. Default 0. */
  presencePenalty?: number;
  /** OpenAI frequency penalty over generated tokens, in [-2, 2]. Default 0. */
  frequencyPenalty?: number;
  /** Added to the logits of the given token ids; values in [-100, 100]. Keys may be strings (JSON). */
  logitBias?: Record<number, number> | Record<string, number> | ReadonlyMap<number, number>;
  /** Seed of the session's random stream (a non-negative safe integer); random when absent. */
  seed?: number;
}

/** Parameters checked against a vocabulary by `validateSamplingParams`, with defaults filled in. */
export interface ResolvedSamplingParams {
  /** Marks a checked parameter set. */
  readonly resolved: true;
  /** The vocabulary size these parameters were checked against. */
  readonly vocabSize: number;
  /** Temperature (0 = greedy). */
  readonly temperature: number;
  /** Top-k (0 = off). */
  readonly topK: number;
  /** Top-p (1 = off). */
  readonly topP: number;
  /** Min-p (0 = off). */
  readonly minP: number;
  /** Repetition penalty (1 = off). */
  readonly repetitionPenalty: number;
  /** Presence penalty (0 = off). */
  readonly presencePenalty: number;
  /** Frequency penalty (0 = off). */
  readonly frequencyPenalty: number;
  /** Token ids with a logit bias, increasing. */
  readonly biasIds: Int32Array;
  /** The bias of each id in `biasIds`. */
  readonly biasValues: Float64Array;
  /** The seed, when one was given. */
  readonly seed: number | undefined;
}

/** One token and its log-probability. */
export interface TokenLogprob {
  /** Token id. */
  token: number;
  /** Natural log of its probability (may be `-Infinity`). */
  logprob: number;
}

/** A sampled token with its log-probability and the most probable alternatives. */
export interface SampledToken {
  /** The sampled token id. */
  token: number;
  /** Log-probability of `token` (after bias, penalties and temperature, before filtering). */
  logprob: number;
  /** The `topLogprobs` most probable tokens, most probable first (ties: lowest id first). */
  top: TokenLogprob[];
}

/** Plain (JSON / msgpack) form of a `TokenHistory`. */
export interface TokenHistoryState {
  /** Distinct token ids seen in the prompt or generated, increasing. */
  seen: number[];
  /** `[token, count]` for each generated token, by increasing token id. */
  generated: [number, number][];
}

/** Most alternatives `sampleTokenWithLogprobs` returns (OpenAI's `top_logprobs` limit). */
export const MAX_TOP_LOGPROBS = 20;

/** Default values of every sampling parameter. */
export const DEFAULT_SAMPLING: Readonly<Required<Omit<SamplingParams, "logitBias" | "seed">>> = {
  temperature: 1,
  topK: 0,
  topP: 1,
  minP: 0,
  repetitionPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0,
};

function isNonNegInt(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/**
 * The tokens a sequence has seen: distinct prompt and generated ids (for the repetition penalty)
 * and counts of generated ids (for the presence and frequency penalties).
 */
export class TokenHistory {
  #seen: number[] = [];
  #seenSet = new Set<number>();
  #genIds: number[] = [];
  #genCounts: number[] = [];
  #genIndex = new Map<number, number>();

  /** A history holding `prompt` (prompt tokens) and `generated` (generated tokens), in order. */
  constructor(prompt: ArrayLike<number> = [], generated: ArrayLike<number> = []) {
    this.addPrompt(prompt);
    for (let i = 0; i < generated.length; i++) this.addGenerated(generated[i]);
  }

  /** Record prompt (or other non-generated) tokens: they count for the repetition penalty only. */
  addPrompt(tokens: ArrayLike<number>): void {
    for (let i = 0; i < tokens.length; i++) this.#see(tokens[i], "tokens");
  }

  /** Record one generated token. */
  addGenerated(token: number): void {
    this.#see(token, "token");
    const j = this.#genIndex.get(token);
    if (j === undefined) {
      this.#genIndex.set(token, this.#genIds.length);
      this.#genIds.push(token);
      this.#genCounts.push(1);
    } else {
      this.#genCounts[j]++;
    }
  }

  #see(token: number, field: string): void {
    if (!isNonNegInt(token)) {
      throw new InputError(field, `token ids must be non-negative integers, got ${String(token)}`);
    }
    if (!this.#seenSet.has(token)) {
      this.#seenSet.add(token);
      this.#seen.push(token);
    }
  }

  /** Whether `token` was seen in the prompt or generated. */
  has(token: number): boolean {
    return this.#seenSet.has(token);
  }

  /** How often `token` was generated. */
  count(token: number): number {
    const j = this.#genIndex.get(token);
    return j === undefined ? 0 : this.#genCounts[j];
  }

  /** Distinct tokens seen (prompt or generated), in first-seen order. Do not modify. */
  get seenIds(): readonly number[] {
    return this.#seen;
  }

  /** Distinct generated tokens, in first-generated order. Do not modify. */
  get generatedIds(): readonly number[] {
    return this.#genIds;
  }

  /** Counts of `generatedIds`, index for index. Do not modify. */
  get generatedCounts(): readonly number[] {
    return this.#genCounts;
  }

  /** A copy of this history. */
  clone(): TokenHistory {
    return TokenHistory.fromState(this.toState());
  }

  /** The plain form (sorted, so equal histories give equal values). */
  toState(): TokenHistoryState {
    const seen = [...this.#seen].sort((a, b) => a - b);
    const generated = this.#genIds.map((t, j): [number, number] => [t, this.#genCounts[j]]);
    generated.sort((a, b) => a[0] - b[0]);
    return { seen, generated };
  }

  /**
   * Rebuild a history from its plain form, checking it; throws `InputError` naming `field`.
   * With `vocabSize`, token ids must also be below it.
   */
  static fromState(value: unknown, vocabSize?: number, field = "history"): TokenHistory {
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      throw new InputError(field, "must be an object { seen, generated }");
    }
    const v = value as Record<string, unknown>;
    const limit = vocabSize ?? Number.MAX_SAFE_INTEGER;
    const id = (t: unknown, f: string): number => {
      if (!isNonNegInt(t) || t >= limit) {
        throw new InputError(f, `not a valid token id: ${String(t)}`);
      }
      return t;
    };
    if (!Array.isArray(v.seen)) throw new InputError(`${field}.seen`, "must be an array");
    if (!Array.isArray(v.generated)) throw new InputError(`${field}.generated`, "must be an array");
    const h = new TokenHistory();
    for (const t of v.seen) h.#see(id(t, `${field}.seen`), `${field}.seen`);
    for (const e of v.generated) {
      if (!Array.isArray(e) || e.length !== 2) {
        throw new InputError(`${field}.generated`, "entries must be [token, count]");
      }
      const t = id(e[0], `${field}.generated`);
      const c = e[1];
      if (!isNonNegInt(c) || c === 0) {
        throw new InputError(`${field}.generated`, `count must be a positive integer, got ${c}`);
      }
      if (h.#genIndex.has(t)) throw new InputError(`${field}.generated`, `duplicate token ${t}`);
      h.#see(t, `${field}.generated`);
      h.#genIndex.set(t, h.#genIds.length);
      h.#genIds.push(t);
      h.#genCounts.push(c);
    }
    return h;
  }
}

function readNumber(
  p: Record<string, unknown>,
  key: keyof typeof DEFAULT_SAMPLING,
  ok: (v: number) => boolean,
  range: string,
): number {
  const v = p[key];
  if (v === undefined || v === null) return DEFAULT_SAMPLING[key];
  if (typeof v !== "number" || !ok(v)) {
    throw new InputError(key, `must be ${range}, got ${typeof v === "number" ? v : typeof v}`);
  }
  return v;
}

const TOKEN_KEY = /^(0|[1-9][0-9]*)$/;

/**
 * Check sampling parameters against a vocabulary and fill in defaults. Throws `InputError` naming
 * the field for an out-of-range or mistyped value: temperature < 0 or not finite, topP outside
 * (0, 1], topK negative or not an integer, minP outside [0, 1], repetitionPenalty ≤ 0 or not
 * finite, presence / frequency penalties outside [-2, 2], logit bias keys that are not token ids
 * below `vocabSize` or values outside [-100, 100], a seed that is not a non-negative safe integer.
 */
export function validateSamplingParams(
  p: SamplingParams | ResolvedSamplingParams,
  vocabSize: number,
): ResolvedSamplingParams {
  if (!Number.isSafeInteger(vocabSize) || vocabSize <= 0) {
    throw new InputError("vocabSize", `must be a positive integer, got ${vocabSize}`);
  }
  if (typeof p !== "object" || p === null || Array.isArray(p)) {
    throw new InputError("sampling", "must be an object");
  }
  if ((p as ResolvedSamplingParams).resolved === true) {
    const r = p as ResolvedSamplingParams;
    if (r.vocabSize === vocabSize) return r;
    return validateSamplingParams(toPlainSamplingParams(r), vocabSize);
  }
  const o = p as Record<string, unknown>;
  const temperature = readNumber(o, "temperature", (v) => Number.isFinite(v) && v >= 0, "≥ 0");
  const topK = readNumber(o, "topK", (v) => Number.isSafeInteger(v) && v >= 0, "an integer ≥ 0");
  const topP = readNumber(o, "topP", (v) => v > 0 && v <= 1, "in (0, 1]");
  const minP = readNumber(o, "minP", (v) => v >= 0 && v <= 1, "in [0, 1]");
  const repetitionPenalty = readNumber(
    o,
    "repetitionPenalty",
    (v) => Number.isFinite(v) && v > 0,
    "a finite number > 0",
  );
  const inPm2 = (v: number) => v >= -2 && v <= 2;
  const presencePenalty = readNumber(o, "presencePenalty", inPm2, "in [-2, 2]");
  const frequencyPenalty = readNumber(o, "frequencyPenalty", inPm2, "in [-2, 2]");

  let seed: number | undefined;
  if (o.seed !== undefined && o.seed !== null) {
    if (!isNonNegInt(o.seed)) {
      throw new InputError("seed", `must be a non-negative safe integer, got ${String(o.seed)}`);
    }
    seed = o.seed;
  }

  const bias = new Map<number, number>();
  const lb = o.logitBias;
  if (lb !== undefined && lb !== null) {
    if (typeof lb !== "object" || Array.isArray(lb)) {
      throw new InputError("logitBias", "must be an object mapping token ids to biases");
    }
    const entries: Iterable<[unknown, unknown]> = lb instanceof Map
      ? lb.entries()
      : Object.entries(lb);
    for (const [k, v] of entries) {
      let id: number;
      if (typeof k === "number") id = k;
      else if (typeof k === "string" && TOKEN_KEY.test(k)) id = Number(k);
      else id = NaN;
      if (!isNonNegInt(id) || id >= vocabSize) {
        throw new InputError(
          "logitBias",
          `key ${JSON.stringify(String(k))} is not a token id in [0, ${vocabSize})`,
        );
      }
      if (typeof v !== "number" || !(v >= -100 && v <= 100)) {
        throw new InputError("logitBias", `bias of token ${id} must be in [-100, 100], got ${v}`);
      }
      bias.set(id, v);
    }
  }
  const biasIds = Int32Array.from([...bias.keys()].sort((a, b) => a - b));
  const biasValues = Float64Array.from(biasIds, (id) => bias.get(id)!);

  return Object.freeze({
    resolved: true,
    vocabSize,
    temperature,
    topK,
    topP,
    minP,
    repetitionPenalty,
    presencePenalty,
    frequencyPenalty,
    biasIds,
    biasValues,
    seed,
  });
}

/** The plain (JSON / msgpack) form of checked parameters, for saving with a session. */
export function toPlainSamplingParams(r: ResolvedSamplingParams): SamplingParams {
  const out: SamplingParams = {
    temperature: r.temperature,
    topK: r.topK,
    topP: r.topP,
    minP: r.minP,
    repetitionPenalty: r.repetitionPenalty,
    presencePenalty: r.presencePenalty,
    frequencyPenalty: r.frequencyPenalty,
  };
  if (r.biasIds.length > 0) {
    const b: Record<string, number> = {};
    for (let i = 0; i < r.biasIds.length; i++) b[String(r.biasIds[i])] = r.biasValues[i];
    out.logitBias = b;
  }
  if (r.seed !== undefined) out.seed = r.seed;
  return out;
}

/** Top-k sizes up to this use a heap; larger ones a selection on a copy. */
const HEAP_MAX = 1024;
/** Top-p first looks for its threshold among this many most probable tokens. */
const TOP_P_PROBE = 64;

/** Heap of the `k` largest values of `w[0..n)`; returns the count (min(k, n)); `h[0]` = smallest. */
function topHeap(w: Float64Array, n: number, k: number, h: Float64Array): number {
  let size = 0;
  let i = 0;
  for (; i < n && size < k; i++) {
    // sift up
    const v = w[i];
    let j = size++;
    while (j > 0) {
      const parent = (j - 1) >> 1;
      const pv = h[parent];
      if (pv <= v) break;
      h[j] = pv;
      j = parent;
    }
    h[j] = v;
  }
  let root = h[0];
  for (; i < n; i++) {
    const v = w[i];
    if (v > root) {
      siftDown(h, size, v);
      root = h[0];
    }
  }
  return size;
}

/** Replace the root of min-heap `h[0..size)` with `v` and restore the heap. */
function siftDown(h: Float64Array, size: number, v: number): void {
  let j = 0;
  for (;;) {
    let c = 2 * j + 1;
    if (c >= size) break;
    let cv = h[c];
    const r = c + 1;
    if (r < size && h[r] < cv) {
      c = r;
      cv = h[r];
    }
    if (cv >= v) break;
    h[j] = cv;
    j = c;
  }
  h[j] = v;
}

/** Sort min-heap `h[0..size)` into decreasing order, in place. */
function heapSortDescending(h: Float64Array, size: number): void {
  for (let end = size - 1; end > 0; end--) {
    const v = h[end];
    h[end] = h[0];
    siftDown(h, end, v);
  }
}

/** Cheap pivot source for the selections (the result never depends on it). */
let pivotState = 0x9e3779b9;
function pivotIndex(lo: number, hi: number): number {
  pivotState ^= pivotState << 13;
  pivotState ^= pivotState >>> 17;
  pivotState ^= pivotState << 5;
  return lo + ((pivotState >>> 0) % (hi - lo));
}

/** Sort `a[lo..hi)` into decreasing order. */
function sortDescending(a: Float64Array, lo: number, hi: number): void {
  a.subarray(lo, hi).sort().reverse();
}

/** The k-th largest (1-based, with multiplicity) of `a[0..n)`; reorders `a`. */
function kthLargest(a: Float64Array, n: number, k: number): number {
  let lo = 0;
  let hi = n;
  let rounds = 0;
  for (;;) {
    if (hi - lo <= 16 || ++rounds > 64) {
      sortDescending(a, lo, hi);
      return a[lo + k - 1];
    }
    const p = a[pivotIndex(lo, hi)];
    // [lo, g) > p, [g, i) == p, [e, hi) < p
    let g = lo, i = lo, e = hi;
    while (i < e) {
      const v = a[i];
      if (v > p) {
        a[i] = a[g];
        a[g] = v;
        g++;
        i++;
      } else if (v < p) {
        e--;
        a[i] = a[e];
        a[e] = v;
      } else {
        i++;
      }
    }
    if (k <= g - lo) hi = g;
    else if (k <= e - lo) return p;
    else {
      k -= e - lo;
      lo = e;
    }
  }
}

/**
 * The top-p threshold of positive values `a[0..n)`: the value at which the running sum of the
 * values in decreasing order first reaches `need`; 0 when it never does. Reorders `a`.
 */
function massThreshold(a: Float64Array, n: number, need: number): number {
  let lo = 0;
  let hi = n;
  let rounds = 0;
  while (lo < hi) {
    if (hi - lo <= 16 || ++rounds > 64) {
      sortDescending(a, lo, hi);
      let cum = 0;
      for (let j = lo; j < hi; j++) {
        cum += a[j];
        if (cum >= need) return a[j];
      }
      return 0;
    }
    const p = a[pivotIndex(lo, hi)];
    let g = lo, i = lo, e = hi;
    let sumG = 0, sumE = 0;
    while (i < e) {
      const v = a[i];
      if (v > p) {
        a[i] = a[g];
        a[g] = v;
        g++;
        i++;
        sumG += v;
      } else if (v < p) {
        e--;
        a[i] = a[e];
        a[e] = v;
      } else {
        i++;
        sumE += v;
      }
    }
    if (sumG >= need) hi = g;
    else if (sumG + sumE >= need) return p;
    else {
      need -= sumG + sumE;
      lo = e;
    }
  }
  return 0;
}

/**
 * A sampler owning reusable scratch memory (a few arrays of the vocabulary size). Not reentrant;
 * one per thread of control is enough, since sampling is synchronous.
 */
export class Sampler {
  #cap = 0;
  /** Processed logits (bias, penalties, NaN → -Infinity). */
  #z = new Float64Array(0);
  /** Weights `exp((z - max) / T)`. */
  #w = new Float64Array(0);
  /** Selection scratch. */
  #a = new Float64Array(0);
  /** Kept token ids. */
  #idx = new Int32Array(0);
  #heap = new Float64Array(Math.max(HEAP_MAX, TOP_P_PROBE));
  #topIds = new Int32Array(MAX_TOP_LOGPROBS);
  #topVals = new Float64Array(MAX_TOP_LOGPROBS);
  // results of #prepare
  #max = -Infinity;
  #argmax = 0;

  /** A sampler with scratch for `vocabSize` tokens (it grows on demand). */
  constructor(vocabSize = 0) {
    this.#ensure(vocabSize);
  }

  #ensure(n: number): void {
    if (n <= this.#cap) return;
    this.#cap = n;
    this.#z = new Float64Array(n);
    this.#w = new Float64Array(n);
    this.#a = new Float64Array(n);
    this.#idx = new Int32Array(n);
  }

  /**
   * Sample one token from `logits` (length = vocabulary size). Advances `rng.counter` by exactly
   * one unless the temperature is 0. Does not record the token in `history`.
   */
  sample(
    logits: Float32Array,
    params: SamplingParams | ResolvedSamplingParams,
    history: TokenHistory | null,
    rng: RngState,
  ): number {
    const p = resolve(params, logits.length);
    if (p.temperature === 0 && !hasMods(p, history)) return argmaxOf(logits);
    this.#prepare(logits, p, history);
    if (p.temperature === 0) return this.#argmax;
    const n = logits.length;
    if (p.topP === 1 && (p.minP > 0 || (p.topK > 0 && p.topK < n && p.topK <= HEAP_MAX))) {
      const t = this.#drawWithoutSum(n, p, rng);
      if (t >= 0) return t;
    }
    const sum = this.#weights(n, p.temperature);
    return this.#draw(n, this.#threshold(n, p, sum), sum, rng);
  }

  /**
   * Top-k and / or min-p without top-p: the draw needs the kept weights only, not `S`, so
   * exponentiate only the tokens that can be kept. Gives exactly what the full path gives (the
   * same weights, threshold, kept set and running sums). Returns -1 when it does not apply.
   */
  #drawWithoutSum(n: number, p: ResolvedSamplingParams, rng: RngState): number {
    const max = this.#max;
    if (!Number.isFinite(max)) return -1;
    const z = this.#z;
    const t = p.temperature;
    const k = p.topK > 0 && p.topK < n ? p.topK : 0;
    // Lower bound on a = (z - max) / T of the kept tokens, from the logits.
    let aLo = p.minP > 0 ? Math.log(p.minP) : -Infinity;
    if (k > 0) {
      topHeap(z, n, k, this.#heap);
      const zk = this.#heap[0];
      const ak = zk === max ? 0 : (zk - max) / t;
      if (ak > aLo) aLo = ak;
    }
    if (!(aLo > -600)) return -1; // near underflow: let the full path decide
    // Tokens below the cut have weights smaller than τ by a factor ≈ 1 - 1e-9, far beyond the
    // rounding of exp, so they cannot be kept.
    const zCut = max + (aLo - 1e-9 * (1 - aLo)) * t;
    const idx = this.#idx;
    const wc = this.#a;
    let m = 0;
    for (let i = 0; i < n; i++) {
      const v = z[i];
      if (v >= zCut) {
        idx[m] = i;
        wc[m++] = v === max ? 1 : Math.exp((v - max) / t);
      }
    }
    let tau = p.minP;
    if (k > 0) {
      if (m < k) return -1; // cannot happen: every token with z ≥ the k-th z is a candidate
      topHeap(wc, m, k, this.#heap);
      if (this.#heap[0] > tau) tau = this.#heap[0];
    }
    let kept = 0;
    for (let j = 0; j < m; j++) if (wc[j] >= tau) kept += wc[j];
    const target = rngUniform(rng) * kept;
    let acc = 0;
    let last = this.#argmax;
    for (let j = 0; j < m; j++) {
      const v = wc[j];
      if (v < tau) continue;
      acc += v;
      if (acc > target) return idx[j];
      if (v > 0) last = idx[j];
    }
    return last;
  }

  /**
   * Sample one token as `sample` does and also return its log-probability and the `topLogprobs`
   * (0..20) most probable tokens. Logprobs are of the distribution after bias, penalties and
   * temperature (temperature 1 when it is 0), before the top-k / top-p / min-p filters.
   */
  sampleWithLogprobs(
    logits: Float32Array,
    params: SamplingParams | ResolvedSamplingParams,
    history: TokenHistory | null,
    rng: RngState,
    topLogprobs = 0,
  ): SampledToken {
    if (!Number.isSafeInteger(topLogprobs) || topLogprobs < 0 || topLogprobs > MAX_TOP_LOGPROBS) {
      throw new InputError("topLogprobs", `must be an integer in [0, ${MAX_TOP_LOGPROBS}]`);
    }
    const p = resolve(params, logits.length);
    const n = logits.length;
    this.#prepare(logits, p, history);
    const nTop = this.#selectTop(n, topLogprobs);
    const t = p.temperature === 0 ? 1 : p.temperature;
    const sum = this.#weights(n, t);
    const token = p.temperature === 0
      ? this.#argmax
      : this.#draw(n, this.#threshold(n, p, sum), sum, rng);
    const max = this.#max;
    const logS = Math.log(sum);
    const lp = (v: number) => (v === max ? 0 : (v - max) / t) - logS;
    const top: TokenLogprob[] = [];
    for (let j = 0; j < nTop; j++) {
      top.push({ token: this.#topIds[j], logprob: lp(this.#topVals[j]) });
    }
    return { token, logprob: lp(this.#z[token]), top };
  }

  /**
   * The final sampling distribution: kept tokens' probabilities renormalized over the kept set,
   * 0 elsewhere (a one-hot vector for temperature 0). Written to `out` (or a new array). For tests
   * and for checking the GPU sampler; `sample` draws from exactly this distribution.
   */
  probabilities(
    logits: Float32Array,
    params: SamplingParams | ResolvedSamplingParams,
    history: TokenHistory | null,
    out: Float64Array = new Float64Array(logits.length),
  ): Float64Array {
    const p = resolve(params, logits.length);
    const n = logits.length;
    this.#prepare(logits, p, history);
    out.fill(0, 0, n);
    if (p.temperature === 0) {
      out[this.#argmax] = 1;
      return out;
    }
    const sum = this.#weights(n, p.temperature);
    const tau = this.#threshold(n, p, sum);
    const w = this.#w;
    let kept = 0;
    for (let i = 0; i < n; i++) if (w[i] >= tau) kept += w[i];
    for (let i = 0; i < n; i++) if (w[i] >= tau) out[i] = w[i] / kept;
    return out;
  }

  /** Fill `#z` with processed logits; set `#max` and `#argmax` (lowest id among ties). */
  #prepare(logits: Float32Array, p: ResolvedSamplingParams, history: TokenHistory | null): void {
    const n = logits.length;
    this.#ensure(n);
    const z = this.#z;
    z.set(logits);
    const ids = p.biasIds;
    const vals = p.biasValues;
    for (let j = 0; j < ids.length; j++) z[ids[j]] += vals[j];
    if (history !== null) {
      const r = p.repetitionPenalty;
      if (r !== 1) {
        const seen = history.seenIds;
        for (let j = 0; j < seen.length; j++) {
          const t = seen[j];
          if (t < n) {
            const v = z[t];
            z[t] = v > 0 ? v / r : v * r;
          }
        }
      }
      const pres = p.presencePenalty;
      const freq = p.frequencyPenalty;
      if (pres !== 0 || freq !== 0) {
        const gen = history.generatedIds;
        const cnt = history.generatedCounts;
        for (let j = 0; j < gen.length; j++) {
          const t = gen[j];
          if (t < n) z[t] -= pres + freq * cnt[j];
        }
      }
    }
    let max = -Infinity;
    let arg = 0;
    for (let i = 0; i < n; i++) {
      const v = z[i];
      if (v > max) {
        max = v;
        arg = i;
      } else if (v !== v) {
        z[i] = -Infinity;
      }
    }
    this.#max = max;
    this.#argmax = arg;
  }

  /** `#w = exp((z - max) / t)` (1 at the max); returns the sum in increasing id order. */
  #weights(n: number, t: number): number {
    const z = this.#z;
    const w = this.#w;
    const max = this.#max;
    let sum = 0;
    for (let i = 0; i < n; i++) {
      const v = z[i];
      const e = v === max ? 1 : Math.exp((v - max) / t);
      w[i] = e;
      sum += e;
    }
    return sum;
  }

  /** The keep-threshold τ on weights (0 = keep all). */
  #threshold(n: number, p: ResolvedSamplingParams, sum: number): number {
    const w = this.#w;
    let tau = p.minP; // the largest weight is 1
    const k = p.topK > 0 && p.topK < n ? p.topK : 0;
    const usesP = p.topP < 1;
    let pDone = !usesP;
    if (k > 0) {
      if (k <= HEAP_MAX) {
        const h = this.#heap;
        const size = topHeap(w, n, k, h);
        if (h[0] > tau) tau = h[0];
        if (usesP) {
          // The top-p threshold matters only when it is above the k-th weight, i.e. when the
          // running sum reaches topP · S within the k largest weights.
          heapSortDescending(h, size);
          const need = p.topP * sum;
          let cum = 0;
          for (let j = 0; j < size; j++) {
            cum += h[j];
            if (cum >= need) {
              if (h[j] > tau) tau = h[j];
              break;
            }
          }
          pDone = true;
        }
      } else {
        const a = this.#a;
        a.set(w.subarray(0, n));
        const tk = kthLargest(a, n, k);
        if (tk > tau) tau = tk;
      }
    }
    if (!pDone) {
      const need = p.topP * sum;
      const h = this.#heap;
      const size = topHeap(w, n, TOP_P_PROBE, h);
      heapSortDescending(h, size);
      let cum = 0;
      let tp = -1;
      for (let j = 0; j < size; j++) {
        cum += h[j];
        if (cum >= need) {
          tp = h[j];
          break;
        }
      }
      if (tp < 0) {
        const a = this.#a;
        let m = 0;
        for (let i = 0; i < n; i++) {
          const v = w[i];
          if (v > 0) a[m++] = v;
        }
        tp = massThreshold(a, m, need);
      }
      if (tp > tau) tau = tp;
    }
    return tau;
  }

  /** Draw from the weights kept by `tau` (see step 7 of the module doc). */
  #draw(n: number, tau: number, sum: number, rng: RngState): number {
    const w = this.#w;
    const u = rngUniform(rng);
    if (tau <= 0) {
      const target = u * sum;
      let acc = 0;
      let last = this.#argmax;
      for (let i = 0; i < n; i++) {
        const v = w[i];
        acc += v;
        if (acc > target) return i;
        if (v > 0) last = i;
      }
      return last;
    }
    const idx = this.#idx;
    let m = 0;
    let kept = 0;
    for (let i = 0; i < n; i++) {
      const v = w[i];
      if (v >= tau) {
        idx[m++] = i;
        kept += v;
      }
    }
    const target = u * kept;
    let acc = 0;
    let last = this.#argmax;
    for (let j = 0; j < m; j++) {
      const i = idx[j];
      const v = w[i];
      acc += v;
      if (acc > target) return i;
      if (v > 0) last = i;
    }
    return last;
  }

  /** The `count` largest processed logits (ties: lowest id first) into `#topIds`/`#topVals`. */
  #selectTop(n: number, count: number): number {
    if (count === 0) return 0;
    const z = this.#z;
    const ids = this.#topIds;
    const vals = this.#topVals;
    let size = 0;
    for (let i = 0; i < n; i++) {
      const v = z[i];
      if (size === count && !(v > vals[size - 1])) continue;
      let j = size < count ? size++ : size - 1;
      while (j > 0 && vals[j - 1] < v) {
        vals[j] = vals[j - 1];
        ids[j] = ids[j - 1];
        j--;
      }
      vals[j] = v;
      ids[j] = i;
    }
    return size;
  }
}

function resolve(
  params: SamplingParams | ResolvedSamplingParams,
  n: number,
): ResolvedSamplingParams {
  if (n === 0) throw new InputError("logits", "empty logits");
  const r = params as ResolvedSamplingParams;
  if (r.resolved === true && r.vocabSize === n) return r;
  return validateSamplingParams(params, n);
}

function hasMods(p: ResolvedSamplingParams, h: TokenHistory | null): boolean {
  if (p.biasIds.length > 0) return true;
  if (h === null) return false;
  if (p.repetitionPenalty !== 1 && h.seenIds.length > 0) return true;
  return (p.presencePenalty !== 0 || p.frequencyPenalty !== 0) && h.generatedIds.length > 0;
}

/** Arg-max with ties to the lowest index; NaN never wins; 0 when nothing beats -Infinity. */
function argmaxOf(x: Float32Array): number {
  let max = -Infinity;
  let arg = 0;
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    if (v > max) {
      max = v;
      arg = i;
    }
  }
  return arg;
}

let shared: Sampler | null = null;

/**
 * Sample one token from `logits` with a shared `Sampler` (see the module doc for the exact
 * semantics). Advances `rng.counter` by one unless the temperature is 0; does not record the token
 * in `history`. Pass parameters from `validateSamplingParams` to skip re-checking them per call.
 */
export function sampleToken(
  logits: Float32Array,
  params: SamplingParams | ResolvedSamplingParams,
  history: TokenHistory | null,
  rng: RngState,
): number {
  shared ??= new Sampler(logits.length);
  return shared.sample(logits, params, history, rng);
}

/**
 * `sampleToken` that also returns the token's log-probability and the `topLogprobs` (0..20) most
 * probable tokens. Logprobs are of the distribution after bias, penalties and temperature
 * (temperature 1 when it is 0), before the top-k / top-p / min-p filters.
 */
export function sampleTokenWithLogprobs(
  logits: Float32Array,
  params: SamplingParams | ResolvedSamplingParams,
  history: TokenHistory | null,
  rng: RngState,
  topLogprobs = 0,
): SampledToken {
  shared ??= new Sampler(logits.length);
  return shared.sampleWithLogprobs(logits, params, history, rng, topLogprobs);
}
