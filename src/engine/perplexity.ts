/**
 * Held-out log-likelihood of a token stream: the stream is cut into windows of `window` tokens,
 * each run from a zero state with all logits kept, and every token after a window's first is
 * scored by the log-softmax of the logits before it:
 *   NLL = -(1/N) Σ_t log p(x_t | x_<t) = (1/N) Σ_t (logsumexp(z_{t-1}) - z_{t-1}[x_t]).
 * @module
 */

import type { Backend } from "./backend.ts";
import { createState } from "../model/state.ts";
import { InputError } from "../errors.ts";

/** Options of `heldOutNll`. */
export interface HeldOutOptions {
  /** Tokens per window, each from a zero state (default 256, the demo model's training window). */
  window?: number;
  /** Score at most this many windows (default: all; a last partial window is scored too). */
  maxWindows?: number;
}

/** The result of `heldOutNll`. */
export interface HeldOutResult {
  /** Mean negative log-likelihood, nats per scored token. */
  nll: number;
  /** Tokens scored. */
  tokens: number;
  /** Windows run. */
  windows: number;
  /** Per-window sum of NLL (for paired comparisons). */
  windowSums: number[];
}

/** Mean next-token negative log-likelihood of `ids` under `backend` (f64 log-sum-exp). */
export async function heldOutNll(
  backend: Backend,
  ids: Int32Array,
  options: HeldOutOptions = {},
): Promise<HeldOutResult> {
  const window = options.window ?? 256;
  if (!(Number.isInteger(window) && window >= 2)) {
    throw new InputError("window", `must be an integer of at least 2, got ${window}`);
  }
  const V = backend.config.vocabSize;
  let total = 0, tokens = 0;
  const windowSums: number[] = [];
  for (let start = 0; start + 1 < ids.length; start += window) {
    if (options.maxWindows !== undefined && windowSums.length >= options.maxWindows) break;
    const w = ids.subarray(start, Math.min(ids.length, start + window));
    if (w.length < 2) break;
    const logits = await backend.forward(createState(backend.config), w, "all");
    let sum = 0;
    for (let t = 1; t < w.length; t++) {
      const off = (t - 1) * V;
      let max = -Infinity;
      for (let i = 0; i < V; i++) max = Math.max(max, logits[off + i]);
      let s = 0;
      for (let i = 0; i < V; i++) s += Math.exp(logits[off + i] - max);
      sum += max + Math.log(s) - logits[off + w[t]];
    }
    windowSums.push(sum);
    total += sum;
    tokens += w.length - 1;
  }
  if (tokens === 0) throw new InputError("tokens", "need at least 2 tokens to score");
  return { nll: total / tokens, tokens, windows: windowSums.length, windowSums };
}
