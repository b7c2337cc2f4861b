/**
 * Parity of any `Backend` with the official fixtures (the same checks for CPU and WebGPU):
 * logits within 1e-3, log-sum-exp and arg-max at every position, states within 1e-4 relative,
 * greedy continuations identical, prefill-then-decode equal to token-by-token decode.
 * @module
 */

import assert from "node:assert/strict";
import type { Backend } from "../../src/engine/backend.ts";
import { createState } from "../../src/model/state.ts";
import type { GoldenPrompt } from "./golden.ts";

/** Tolerances of the fixtures README. */
export const TOL = { logits: 1e-3, state: 1e-4, lse: 1e-3, stats: 1e-3 };

/** Index of the largest value (lowest index on ties). */
export function argmax(a: Float32Array, off = 0, n = a.length - off): number {
  let best = 0, mx = -Infinity;
  for (let i = 0; i < n; i++) if (a[off + i] > mx) mx = a[off + (best = i)];
  return best;
}

/** log Σ exp over a row. */
export function logsumexp(a: Float32Array, off: number, n: number): number {
  let mx = -Infinity;
  for (let i = 0; i < n; i++) mx = Math.max(mx, a[off + i]);
  let s = 0;
  for (let i = 0; i < n; i++) s += Math.exp(a[off + i] - mx);
  return mx + Math.log(s);
}

/** Largest absolute difference. */
export function maxAbsDiff(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  aOff = 0,
  bOff = 0,
  n = b.length,
): number {
  let d = 0;
  for (let i = 0; i < n; i++) d = Math.max(d, Math.abs(a[aOff + i] - b[bOff + i]));
  return d;
}

/** max|a-b| / max|b|. */
export function relDiff(a: Float32Array, b: Float32Array): number {
  let num = 0, den = 0;
  for (let i = 0; i < b.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / Math.max(den, 1e-30);
}

/**
 * Check one golden prompt on a backend through its resident-state API (prefill, then the batched
 * decode with a single sequence), and return the worst differences seen.
 */
export async function checkPrompt(
  backend: Backend,
  p: GoldenPrompt,
): Promise<{ logits: number; lse: number; state: number; step: number; stats: number }> {
  const V = backend.config.vocabSize;
  const L = backend.config.numLayers;
  const s = backend.allocState();
  try {
    const logits = await backend.prefill(s, p.promptIds, "all");
    assert.equal(logits.length, p.promptIds.length * V);
    assert.equal(s.position, p.promptIds.length);
    let dLogits = 0;
    p.logitsPositions.forEach((pos, r) => {
      dLogits = Math.max(dLogits, maxAbsDiff(logits, p.logitsAtPositions, pos * V, r * V, V));
    });
    assert.ok(dLogits <= TOL.logits, `${p.name}: logits differ by ${dLogits}`);
    let dLse = 0;
    for (let t = 0; t < p.promptIds.length; t++) {
      assert.equal(argmax(logits, t * V, V), p.argmaxAll[t], `${p.name}: arg-max at position ${t}`);
      dLse = Math.max(dLse, Math.abs(logsumexp(logits, t * V, V) - p.logsumexpAll[t]));
    }
    assert.ok(dLse <= TOL.lse, `${p.name}: log-sum-exp differs by ${dLse}`);
    let dState = 0;
    const host = await backend.readState(s);
    for (let l = 0; l < L; l++) {
      const ref = p.stateAfterPrompt[l];
      if (!ref) continue;
      assert.equal(host.layers[l].length, ref.length, `${p.name}: state layer ${l} size`);
      dState = Math.max(dState, relDiff(host.layers[l], ref));
    }
    assert.ok(dState <= TOL.state, `${p.name}: state differs by ${dState} (relative)`);

    // Greedy continuation through the recurrent decode path.
    let tok = argmax(logits, (p.promptIds.length - 1) * V, V);
    const steps = p.greedyStepLogits.length / V;
    let dStep = 0;
    for (let i = 0; i < p.greedyIds.length; i++) {
      assert.equal(tok, p.greedyIds[i], `${p.name}: greedy token ${i}`);
      const lg = await backend.decode([s], new Int32Array([p.greedyIds[i]]));
      if (i < steps) dStep = Math.max(dStep, maxAbsDiff(lg, p.greedyStepLogits, 0, i * V, V));
      tok = argmax(lg);
    }
    assert.ok(dStep <= TOL.logits, `${p.name}: decode-step logits differ by ${dStep}`);
    const after = await backend.readState(s);
    let dStats = 0;
    for (let l = 0; l < L; l++) {
      let sum = 0, sumsq = 0;
      for (const v of after.layers[l]) {
        sum += v;
        sumsq += v * v;
      }
      const ref = p.stateAfterGreedy[l];
      dStats = Math.max(
        dStats,
        Math.abs(sum - ref.sum) / Math.max(1, Math.abs(ref.sum)),
        Math.abs(sumsq - ref.sumsq) / ref.sumsq,
      );
    }
    assert.ok(dStats <= TOL.stats, `${p.name}: state statistics after greedy differ by ${dStats}`);
    return { logits: dLogits, lse: dLse, state: dState, step: dStep, stats: dStats };
  } finally {
    backend.releaseState(s);
  }
}

/**
 * Prefill-then-decode equals feeding the same tokens one at a time through `forward` on a host
 * state; returns the largest logit difference of the last token.
 */
export async function checkPrefillEqualsStepwise(
  backend: Backend,
  ids: Int32Array,
): Promise<number> {
  const V = backend.config.vocabSize;
  const whole = createState(backend.config);
  const a = await backend.forward(whole, ids, "all");
  const step = createState(backend.config);
  let d = 0;
  for (let t = 0; t < ids.length; t++) {
    const lg = await backend.forward(step, ids.subarray(t, t + 1), "last");
    d = Math.max(d, maxAbsDiff(a, lg, t * V, 0, V));
  }
  for (let l = 0; l < whole.layers.length; l++) {
    const r = relDiff(step.layers[l], whole.layers[l]);
    assert.ok(r <= TOL.state, `layer ${l} state differs by ${r}`);
  }
  assert.equal(step.position, whole.position);
  return d;
}
