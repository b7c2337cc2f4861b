import assert from "node:assert/strict";
import { InputError } from "../../src/errors.ts";
import { newRngState, parseRngState, type RngState, rngUniform } from "../../src/engine/rng.ts";
import {
  type ResolvedSamplingParams,
  Sampler,
  sampleToken,
  sampleTokenWithLogprobs,
  type SamplingParams,
  TokenHistory,
  toPlainSamplingParams,
  validateSamplingParams,
} from "../../src/engine/sampler.ts";

// ---------------------------------------------------------------------------------------------
// A brute-force reference of the documented semantics: full sorts, no cleverness.

interface Ref {
  /** Final distribution (kept, renormalized). */
  probs: number[];
  /** Weights exp((z - max) / T). */
  w: number[];
  /** Processed logits. */
  z: number[];
  tau: number;
}

function refProcess(logits: Float32Array, p: ResolvedSamplingParams, h: TokenHistory | null) {
  const z = Array.from(logits, (v) => (Number.isNaN(v) ? -Infinity : v));
  for (let j = 0; j < p.biasIds.length; j++) z[p.biasIds[j]] += p.biasValues[j];
  if (h) {
    for (let t = 0; t < z.length; t++) {
      if (h.has(t)) z[t] = z[t] > 0 ? z[t] / p.repetitionPenalty : z[t] * p.repetitionPenalty;
    }
    for (let t = 0; t < z.length; t++) {
      const c = h.count(t);
      if (c > 0) z[t] -= p.presencePenalty + p.frequencyPenalty * c;
    }
  }
  return z;
}

function reference(
  logits: Float32Array,
  params: SamplingParams,
  h: TokenHistory | null = null,
): Ref {
  const p = validateSamplingParams(params, logits.length);
  const z = refProcess(logits, p, h);
  const n = z.length;
  if (p.temperature === 0) {
    let arg = 0;
    for (let i = 1; i < n; i++) if (z[i] > z[arg]) arg = i;
    const probs = new Array(n).fill(0);
    probs[arg] = 1;
    return { probs, w: [], z, tau: 1 };
  }
  const max = Math.max(...z);
  const w = z.map((v) => (v === max ? 1 : Math.exp((v - max) / p.temperature)));
  let S = 0;
  for (const v of w) S += v;
  const sorted = [...w].sort((a, b) => b - a);
  let tau = p.minP;
  if (p.topK > 0 && p.topK < n) tau = Math.max(tau, sorted[p.topK - 1]);
  if (p.topP < 1) {
    let cum = 0;
    for (const v of sorted) {
      cum += v;
      if (cum >= p.topP * S) {
        tau = Math.max(tau, v);
        break;
      }
    }
  }
  let K = 0;
  for (const v of w) if (v >= tau) K += v;
  const probs = w.map((v) => (v >= tau ? v / K : 0));
  return { probs, w, z, tau };
}

/** The documented draw, on the reference weights, with a given u. */
function refDraw(r: Ref, u: number): number {
  if (r.w.length === 0) return r.probs.indexOf(1);
  let K = 0;
  for (const v of r.w) if (v >= r.tau) K += v;
  const target = u * K;
  let acc = 0;
  let last = -1;
  for (let i = 0; i < r.w.length; i++) {
    if (r.w[i] < r.tau) continue;
    acc += r.w[i];
    if (acc > target) return i;
    if (r.w[i] > 0) last = i;
  }
  return last;
}

// ---------------------------------------------------------------------------------------------
// Random logits from the project's own RNG (so tests are deterministic).

function normal(st: RngState): number {
  const u1 = rngUniform(st) || 1e-9;
  const u2 = rngUniform(st);
  return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
}

function randomLogits(st: RngState, n: number, scale: number, quantum = 0): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const v = normal(st) * scale;
    x[i] = quantum > 0 ? Math.round(v / quantum) * quantum : v;
  }
  return x;
}

function assertClose(a: ArrayLike<number>, b: ArrayLike<number>, tol: number, msg: string) {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) {
    assert.ok(Math.abs(a[i] - b[i]) <= tol, `${msg}: index ${i}: ${a[i]} vs ${b[i]}`);
  }
}

function keptSet(p: ArrayLike<number>): number[] {
  const out: number[] = [];
  for (let i = 0; i < p.length; i++) if (p[i] > 0) out.push(i);
  return out;
}

// ---------------------------------------------------------------------------------------------

Deno.test("sampler: greedy picks the arg-max, ties to the lowest id, and draws nothing", () => {
  const s = new Sampler();
  const rng = newRngState(1);
  const g = { temperature: 0 };
  assert.equal(s.sample(new Float32Array([1, 3, 3, 2]), g, null, rng), 1);
  assert.equal(s.sample(new Float32Array([5, 5, 5]), g, null, rng), 0);
  assert.equal(s.sample(new Float32Array([NaN, 2, NaN, 2]), g, null, rng), 1);
  assert.equal(s.sample(new Float32Array([-Infinity, -Infinity]), g, null, rng), 0);
  assert.equal(s.sample(new Float32Array([1, Infinity, Infinity]), g, null, rng), 1);
  // with a bias (the scratch path), ties still go to the lowest id
  const biased = { temperature: 0, logitBias: { "3": 1 } };
  assert.equal(s.sample(new Float32Array([4, 0, 5, 4]), biased, null, rng), 2);
  assert.equal(s.sample(new Float32Array([4, 0, 5, 4.5]), biased, null, rng), 3);
  assert.equal(rng.counter, 0);
  assert.equal(sampleToken(new Float32Array([0, 1, 0]), g, null, rng), 1);
  assert.equal(rng.counter, 0);
});

Deno.test("sampler: every filter matches a brute-force reference on random logits", () => {
  const s = new Sampler();
  const gen = newRngState(2024);
  const configs: SamplingParams[] = [
    {},
    { temperature: 0.7 },
    { topK: 1 },
    { topK: 5 },
    { topK: 40, temperature: 0.8 },
    { topP: 0.9 },
    { topP: 0.5, temperature: 1.3 },
    { topP: 0.05 },
    { minP: 0.1 },
    { minP: 0.9 },
    { topK: 20, topP: 0.8 },
    { topK: 10, topP: 0.3, minP: 0.05, temperature: 0.5 },
    { topK: 2000, topP: 0.95 },
    { topK: 1500 },
    { minP: 1e-6 },
    { minP: 1e-300 },
    { topK: 3, minP: 0.2, temperature: 2 },
    { topK: 50, temperature: 0.05 },
    { topK: 1000, temperature: 3 },
  ];
  let cases = 0;
  for (let seed = 0; seed < 40; seed++) {
    const n = [7, 64, 300, 5000][seed % 4];
    // flat, peaked, and tie-heavy (quantized) logits
    const scale = [0.5, 3, 8][seed % 3];
    const quantum = seed % 5 === 0 ? 1 : 0;
    const logits = randomLogits(gen, n, scale, quantum);
    for (const cfg of configs) {
      const ref = reference(logits, cfg);
      const got = s.probabilities(logits, cfg, null);
      const what = `seed ${seed} n ${n} ${JSON.stringify(cfg)}`;
      assert.deepEqual(keptSet(got), keptSet(ref.probs), what);
      assertClose(got, ref.probs, 1e-12, what);
      // the draw follows the documented walk with the same u
      const rng = newRngState(seed * 31 + cases);
      const u = rngUniform({ ...rng });
      const tok = s.sample(logits, cfg, null, rng);
      assert.equal(rng.counter, 1, what);
      assert.equal(tok, refDraw(ref, u), what);
      cases++;
    }
  }
  assert.ok(cases > 500);
});

Deno.test("sampler: top-k keeps every token tied with the k-th probability", () => {
  const s = new Sampler();
  const logits = new Float32Array([1, 3, 2, 2, 2, 0, 3]);
  assert.deepEqual(keptSet(s.probabilities(logits, { topK: 3 }, null)), [1, 2, 3, 4, 6]);
  assert.deepEqual(keptSet(s.probabilities(logits, { topK: 2 }, null)), [1, 6]);
  assert.deepEqual(keptSet(s.probabilities(logits, { topK: 1 }, null)), [1, 6]);
  assert.deepEqual(keptSet(s.probabilities(logits, { topK: 7 }, null)).length, 7);
  assert.deepEqual(keptSet(s.probabilities(logits, { topK: 100 }, null)).length, 7);
});

Deno.test("sampler: top-p keeps the smallest most-probable set reaching topP, and its ties", () => {
  const s = new Sampler();
  const p = [0.5, 0.3, 0.1, 0.1];
  const logits = Float32Array.from(p, Math.log);
  assert.deepEqual(keptSet(s.probabilities(logits, { topP: 0.5 }, null)), [0]);
  assert.deepEqual(keptSet(s.probabilities(logits, { topP: 0.6 }, null)), [0, 1]);
  // needs one 0.1 token; its tie is kept too
  assert.deepEqual(keptSet(s.probabilities(logits, { topP: 0.85 }, null)), [0, 1, 2, 3]);
  // min-p relative to the largest probability
  assert.deepEqual(keptSet(s.probabilities(logits, { minP: 0.5 }, null)), [0, 1]);
  assert.deepEqual(keptSet(s.probabilities(logits, { minP: 0.61 }, null)), [0]);
  // intersection of filters
  assert.deepEqual(keptSet(s.probabilities(logits, { topK: 3, topP: 0.95 }, null)), [0, 1, 2, 3]);
  assert.deepEqual(keptSet(s.probabilities(logits, { topK: 1, topP: 0.95 }, null)), [0]);
});

Deno.test("sampler: empirical frequencies match the filtered, renormalized probabilities", () => {
  const s = new Sampler();
  const logits = new Float32Array([2, 1, 0.5, 0, -1, 1, 3, -2]);
  for (
    const cfg of [{}, { topK: 3 }, { topP: 0.8, temperature: 0.7 }, { minP: 0.2, topK: 6 }]
  ) {
    const probs = s.probabilities(logits, cfg, null);
    const rng = newRngState(99);
    const n = 200_000;
    const counts = new Float64Array(logits.length);
    for (let i = 0; i < n; i++) counts[s.sample(logits, cfg, null, rng)]++;
    assert.equal(rng.counter, n);
    let chi = 0;
    let df = -1;
    for (let t = 0; t < logits.length; t++) {
      if (probs[t] === 0) {
        assert.equal(counts[t], 0, `token ${t} is filtered out but was drawn`);
        continue;
      }
      chi += (counts[t] - n * probs[t]) ** 2 / (n * probs[t]);
      df++;
    }
    // χ² with ≤ 7 degrees of freedom: P(χ² > 30) < 1e-4
    assert.ok(chi < 30, `${JSON.stringify(cfg)}: chi-square ${chi} (df ${df})`);
  }
});

Deno.test("sampler: deterministic given the RNG state; one draw per token even if one is kept", () => {
  const gen = newRngState(5);
  const logits = randomLogits(gen, 1000, 2);
  const run = (cfg: SamplingParams) => {
    const rng = newRngState(42);
    const out = Array.from({ length: 50 }, () => sampleToken(logits, cfg, null, rng));
    return { out, counter: rng.counter };
  };
  const a = run({ topP: 0.9 });
  assert.deepEqual(run({ topP: 0.9 }), a);
  assert.equal(a.counter, 50);
  const one = run({ topK: 1 });
  assert.equal(one.counter, 50);
  assert.ok(one.out.every((t) => t === one.out[0]));
});

Deno.test("sampler: sampling 10, saving state, sampling 10 more equals sampling 20", () => {
  const gen = newRngState(77);
  const steps = Array.from({ length: 20 }, () => randomLogits(gen, 500, 2));
  const params = validateSamplingParams(
    { temperature: 0.9, topK: 50, topP: 0.95, repetitionPenalty: 1.2, frequencyPenalty: 0.5 },
    500,
  );
  const prompt = [1, 2, 3, 4, 5];

  const rngA = newRngState(1234);
  const histA = new TokenHistory(prompt);
  const all: number[] = [];
  for (let i = 0; i < 20; i++) {
    const t = sampleToken(steps[i], params, histA, rngA);
    histA.addGenerated(t);
    all.push(t);
  }

  const rngB = newRngState(1234);
  const histB = new TokenHistory(prompt);
  const first: number[] = [];
  for (let i = 0; i < 10; i++) {
    const t = new Sampler().sample(steps[i], params, histB, rngB);
    histB.addGenerated(t);
    first.push(t);
  }
  const saved = JSON.parse(JSON.stringify({
    rng: rngB,
    history: histB.toState(),
    params: toPlainSamplingParams(params),
  }));
  const rngC = parseRngState(saved.rng);
  const histC = TokenHistory.fromState(saved.history, 500);
  const paramsC = validateSamplingParams(saved.params, 500);
  const rest: number[] = [];
  for (let i = 10; i < 20; i++) {
    const t = sampleToken(steps[i], paramsC, histC, rngC);
    histC.addGenerated(t);
    rest.push(t);
  }
  assert.deepEqual([...first, ...rest], all);
  assert.deepEqual(rngC, rngA);
  assert.deepEqual(histC.toState(), histA.toState());
});

Deno.test("sampler: repetition, presence and frequency penalties and logit bias", () => {
  const s = new Sampler();
  const logits = new Float32Array([4, -1, 2, 0.5, 3]);
  const h = new TokenHistory([0, 1], [3, 3, 4]);
  const ref = (cfg: SamplingParams) => reference(logits, cfg, h);

  // repetition: over prompt + generated, divide positives, multiply negatives
  let r = ref({ repetitionPenalty: 2 });
  assert.deepEqual(r.z, [2, -2, 2, 0.25, 1.5]);
  // presence / frequency: generated tokens only
  r = ref({ presencePenalty: 0.5, frequencyPenalty: 0.25 });
  assert.deepEqual(r.z, [4, -1, 2, 0.5 - 0.5 - 0.5, 3 - 0.5 - 0.25]);
  // bias first, then the repetition penalty sees the biased sign
  r = ref({ logitBias: { "1": 3 }, repetitionPenalty: 2 });
  assert.deepEqual(r.z, [2, 1, 2, 0.25, 1.5]);

  for (
    const cfg of [
      { repetitionPenalty: 2 },
      { repetitionPenalty: 0.5, presencePenalty: 1, frequencyPenalty: -0.5 },
      { logitBias: new Map([[2, 2.5], [0, -100]]), temperature: 0.7 },
      { logitBias: { "4": 1.5 }, repetitionPenalty: 1.3, frequencyPenalty: 2, topK: 2 },
    ]
  ) {
    assertClose(s.probabilities(logits, cfg, h), ref(cfg).probs, 1e-12, JSON.stringify(cfg));
  }

  // greedy sees the penalties too
  const rng = newRngState(0);
  assert.equal(s.sample(logits, { temperature: 0 }, h, rng), 0);
  assert.equal(s.sample(logits, { temperature: 0, repetitionPenalty: 3 }, h, rng), 2);
  assert.equal(s.sample(logits, { temperature: 0, logitBias: { "1": 100 } }, h, rng), 1);
  assert.equal(rng.counter, 0);
  // a -100 bias effectively bans a token
  const banned = { logitBias: { "0": -100, "4": -100 } };
  const rng2 = newRngState(3);
  for (let i = 0; i < 1000; i++) {
    const t = s.sample(logits, banned, null, rng2);
    assert.ok(t !== 0 && t !== 4);
  }
  // history without a vocabulary bound: ids beyond the logits are ignored
  const far = new TokenHistory([100], [200]);
  assertClose(
    s.probabilities(logits, { repetitionPenalty: 2, presencePenalty: 2 }, far),
    s.probabilities(logits, {}, null),
    0,
    "out-of-range history",
  );
});

Deno.test("sampler: logprobs are of the penalized, tempered distribution before filtering", () => {
  const s = new Sampler();
  const logits = new Float32Array([1, 3, 2, 3, -1, 0]);
  const rng = newRngState(8);
  const cfg = { temperature: 0.5, topK: 1 };
  const out = s.sampleWithLogprobs(logits, cfg, null, rng, 4);
  assert.equal(rng.counter, 1);
  assert.ok(out.token === 1 || out.token === 3); // top-k 1 keeps both tied tokens
  const zs = Array.from(logits, (v) => v / 0.5);
  const lse = Math.log(zs.reduce((a, v) => a + Math.exp(v - 6), 0)) + 6;
  assert.ok(Math.abs(out.logprob - (zs[out.token] - lse)) < 1e-12);
  assert.deepEqual(out.top.map((e) => e.token), [1, 3, 2, 0]);
  for (const e of out.top) assert.ok(Math.abs(e.logprob - (zs[e.token] - lse)) < 1e-12);

  // greedy: temperature 1 logprobs, no draw
  const g = s.sampleWithLogprobs(logits, { temperature: 0 }, null, rng, 2);
  assert.equal(rng.counter, 1);
  assert.equal(g.token, 1);
  const lse1 = Math.log(Array.from(logits).reduce((a, v) => a + Math.exp(v), 0));
  assert.ok(Math.abs(g.logprob - (3 - lse1)) < 1e-12);
  assert.deepEqual(g.top.map((e) => e.token), [1, 3]);

  // the same token as plain sampling with the same RNG state; probabilities sum to one
  const gen = newRngState(11);
  const big = randomLogits(gen, 3000, 3);
  for (let i = 0; i < 20; i++) {
    const a = newRngState(i);
    const b = newRngState(i);
    const params = { topP: 0.9, presencePenalty: 1 };
    const h = new TokenHistory([], [5, 6, 7]);
    const lp = sampleTokenWithLogprobs(big, params, h, a, 20);
    assert.equal(lp.token, sampleToken(big, params, h, b));
    assert.equal(lp.top.length, 20);
    for (let j = 1; j < 20; j++) assert.ok(lp.top[j - 1].logprob >= lp.top[j].logprob);
  }
  const all = s.sampleWithLogprobs(big, {}, null, newRngState(1), 0);
  assert.deepEqual(all.top, []);
  const ref = reference(big, {});
  let total = 0;
  for (const w of ref.w) total += w;
  assert.ok(Math.abs(all.logprob - Math.log(ref.w[all.token] / total)) < 1e-9);
  assert.throws(
    () => s.sampleWithLogprobs(big, {}, null, newRngState(1), 21),
    (e) => e instanceof InputError && e.field === "topLogprobs",
  );
});

Deno.test("sampler: non-finite logits", () => {
  const s = new Sampler();
  // NaN never sampled; -Infinity never sampled; +Infinity takes all the mass
  const a = new Float32Array([NaN, 1, -Infinity, 1]);
  assert.deepEqual(Array.from(s.probabilities(a, {}, null)), [0, 0.5, 0, 0.5]);
  const b = new Float32Array([0, Infinity, 5, Infinity]);
  assert.deepEqual(Array.from(s.probabilities(b, {}, null)), [0, 0.5, 0, 0.5]);
  // everything -Infinity: uniform
  const c = new Float32Array([-Infinity, -Infinity]);
  assert.deepEqual(Array.from(s.probabilities(c, {}, null)), [0.5, 0.5]);
  const rng = newRngState(4);
  for (let i = 0; i < 200; i++) {
    const t = s.sample(a, { topP: 0.99 }, null, rng);
    assert.ok(t === 1 || t === 3);
  }
});

Deno.test("sampler: validation names the offending field", () => {
  const bad: [SamplingParams, string][] = [
    [{ temperature: -0.1 }, "temperature"],
    [{ temperature: NaN }, "temperature"],
    [{ temperature: Infinity }, "temperature"],
    [{ topP: 0 }, "topP"],
    [{ topP: 1.01 }, "topP"],
    [{ topP: NaN }, "topP"],
    [{ topK: -1 }, "topK"],
    [{ topK: 2.5 }, "topK"],
    [{ minP: -0.01 }, "minP"],
    [{ minP: 1.5 }, "minP"],
    [{ repetitionPenalty: 0 }, "repetitionPenalty"],
    [{ repetitionPenalty: -1 }, "repetitionPenalty"],
    [{ repetitionPenalty: Infinity }, "repetitionPenalty"],
    [{ presencePenalty: 2.5 }, "presencePenalty"],
    [{ frequencyPenalty: -2.01 }, "frequencyPenalty"],
    [{ logitBias: { "100": 1 } }, "logitBias"],
    [{ logitBias: { "-1": 1 } }, "logitBias"],
    [{ logitBias: { "abc": 1 } }, "logitBias"],
    [{ logitBias: { "01": 1 } }, "logitBias"],
    [{ logitBias: { "5": 101 } }, "logitBias"],
    [{ logitBias: { "5": NaN } }, "logitBias"],
    [{ logitBias: new Map([[1.5, 1]]) }, "logitBias"],
    [{ seed: -1 }, "seed"],
    [{ seed: 0.5 }, "seed"],
    [{ temperature: "1" as unknown as number }, "temperature"],
  ];
  for (const [p, field] of bad) {
    assert.throws(
      () => validateSamplingParams(p, 100),
      (e) => e instanceof InputError && e.field === field && e.code === "invalid_input",
      JSON.stringify(p),
    );
    // sampling with unchecked params checks them too
    assert.throws(() => sampleToken(new Float32Array(100), p, null, newRngState(0)), InputError);
  }
  const ok = validateSamplingParams(
    {
      temperature: 0,
      topP: 1,
      topK: 0,
      minP: 1,
      repetitionPenalty: 0.01,
      presencePenalty: -2,
      frequencyPenalty: 2,
      logitBias: { "0": -100, "99": 100 },
      seed: 2 ** 53 - 1,
    },
    100,
  );
  assert.deepEqual(Array.from(ok.biasIds), [0, 99]);
  assert.deepEqual(Array.from(ok.biasValues), [-100, 100]);
  const nulls = validateSamplingParams(
    { temperature: null, topK: null, seed: null } as unknown as SamplingParams,
    10,
  );
  assert.equal(nulls.temperature, 1);
  assert.equal(nulls.seed, undefined);
  assert.equal(validateSamplingParams(ok, 100), ok);
  assert.throws(() => validateSamplingParams(ok, 50), InputError); // bias id 99 ≥ 50
  assert.throws(() => sampleToken(new Float32Array(0), {}, null, newRngState(0)), InputError);
});

Deno.test("sampler: TokenHistory state round-trips and is validated", () => {
  const h = new TokenHistory([5, 3, 5], [7, 3, 7, 7]);
  assert.ok(h.has(5) && h.has(3) && h.has(7) && !h.has(4));
  assert.equal(h.count(7), 3);
  assert.equal(h.count(3), 1);
  assert.equal(h.count(5), 0);
  const st = h.toState();
  assert.deepEqual(st, { seen: [3, 5, 7], generated: [[3, 1], [7, 3]] });
  assert.deepEqual(TokenHistory.fromState(JSON.parse(JSON.stringify(st))).toState(), st);
  assert.deepEqual(h.clone().toState(), st);
  const bad: unknown[] = [
    null,
    [],
    { seen: [1] },
    { seen: [-1], generated: [] },
    { seen: [1.5], generated: [] },
    { seen: [], generated: [[1]] },
    { seen: [], generated: [[1, 0]] },
    { seen: [], generated: [[1, 1], [1, 2]] },
  ];
  for (const v of bad) assert.throws(() => TokenHistory.fromState(v), InputError);
  assert.throws(
    () => TokenHistory.fromState({ seen: [10], generated: [] }, 10),
    (e) => e instanceof InputError && e.field === "history.seen",
  );
  assert.throws(() => h.addGenerated(-1), InputError);
  assert.throws(() => h.addPrompt([1, NaN]), InputError);
});
