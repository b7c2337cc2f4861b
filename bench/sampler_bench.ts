/**
 * CPU sampler cost per token for a 64,000-token vocabulary.
 * Run: `deno bench bench/sampler_bench.ts` (add `--json` for a machine-readable result).
 * @module
 */

import { newRngState, type RngState, rngUniform } from "../src/engine/rng.ts";
import { Sampler, TokenHistory, validateSamplingParams } from "../src/engine/sampler.ts";

const VOCAB = 64_000;

function normal(st: RngState): number {
  const u1 = rngUniform(st) || 1e-9;
  return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * rngUniform(st));
}

/**
 * Logits shaped like a confident language model's: a Gaussian bulk plus 20 strong candidates
 * holding almost all of the probability.
 */
function lmLogits(seed: number): Float32Array {
  const st = newRngState(seed);
  const x = new Float32Array(VOCAB);
  for (let i = 0; i < VOCAB; i++) x[i] = normal(st) * 1.5;
  for (let j = 0; j < 20; j++) x[Math.floor(rngUniform(st) * VOCAB)] = 14 + normal(st) * 2;
  return x;
}

/** Nearly flat logits: the worst case for top-p (most of the vocabulary is needed). */
function flatLogits(seed: number): Float32Array {
  const st = newRngState(seed);
  return Float32Array.from({ length: VOCAB }, () => normal(st) * 0.3);
}

const peaked = lmLogits(1);
const flat = flatLogits(2);
const sampler = new Sampler(VOCAB);
const rng = newRngState(3);
const history = new TokenHistory(
  Array.from({ length: 2000 }, (_, i) => (i * 7919) % VOCAB),
  Array.from({ length: 200 }, (_, i) => (i * 104729) % VOCAB),
);

const params = {
  greedy: validateSamplingParams({ temperature: 0 }, VOCAB),
  defaults: validateSamplingParams({}, VOCAB),
  topK40: validateSamplingParams({ topK: 40 }, VOCAB),
  topP09: validateSamplingParams({ topP: 0.9 }, VOCAB),
  chat: validateSamplingParams(
    { temperature: 0.7, topK: 40, topP: 0.9, repetitionPenalty: 1.1, frequencyPenalty: 0.3 },
    VOCAB,
  ),
};

Deno.bench("sampler: greedy", { group: "sampler" }, () => {
  sampler.sample(peaked, params.greedy, null, rng);
});

Deno.bench("sampler: default params (T = 1, no filters)", { group: "sampler" }, () => {
  sampler.sample(peaked, params.defaults, null, rng);
});

Deno.bench("sampler: top-k 40", { group: "sampler", baseline: true }, () => {
  sampler.sample(peaked, params.topK40, null, rng);
});

Deno.bench("sampler: top-p 0.9", { group: "sampler" }, () => {
  sampler.sample(peaked, params.topP09, null, rng);
});

Deno.bench("sampler: top-p 0.9, flat logits (worst case)", { group: "sampler" }, () => {
  sampler.sample(flat, params.topP09, null, rng);
});

Deno.bench("sampler: T 0.7, top-k 40, top-p 0.9, penalties", { group: "sampler" }, () => {
  sampler.sample(peaked, params.chat, history, rng);
});

Deno.bench("sampler: top-p 0.9 with 5 top logprobs", { group: "sampler" }, () => {
  sampler.sampleWithLogprobs(peaked, params.topP09, null, rng, 5);
});
