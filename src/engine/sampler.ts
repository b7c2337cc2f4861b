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
import {
  type ResolvedSamplingParams,
  type SamplingParams,
  validateSamplingParams,
} from "./sampling_params.ts";
import {
  HEAP_MAX,
  heapSortDescending,
  kthLargest,
  massThreshold,
  TOP_P_PROBE,
  topHeap,
} from "./selection.ts";
import type { TokenHistory } from "./token_history.ts";

export {
  DEFAULT_SAMPLING,
  type ResolvedSamplingParams,
  type SamplingParams,
  toPlainSamplingParams,
  validateSamplingParams,
} from "./sampling_params.ts";
export { TokenHistory, type TokenHistoryState } from "./token_history.ts";

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

/** Most alternatives `sampleTokenWithLogprobs` returns (OpenAI's `top_logprobs` limit). */
export const MAX_TOP_LOGPROBS = 20;

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
