/**
 * Benchmark measurements over the `Backend` interface: decode rates (device sampling K steps per
 * readback, and one readback per step), batched throughput, prefill rates, and a per-kernel GPU
 * time profile from timestamp queries. Every function returns plain records for the JSON report.
 * @module
 */

import type { Backend, BackendState, SampledRow } from "../src/engine/backend.ts";
import { validateSamplingParams } from "../src/engine/sampler.ts";
import type { WebGpuBackend } from "../src/gpu/backend.ts";
import { seqsPerWorkgroup } from "../src/gpu/matvec_tiling.ts";
import { encodeOps } from "../src/gpu/ops/mod.ts";
import { SAMPLING, SAMPLING_WORDS } from "../src/gpu/layout.ts";
import { timePasses } from "../src/gpu/timing.ts";

/** Random prompt ids (skipping the first few special ids). */
export function randomIds(n: number, vocab: number, seed = 1): Int32Array {
  let x = seed >>> 0 || 1;
  return Int32Array.from({ length: n }, () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return 3 + ((x >>> 0) % (vocab - 3));
  });
}

/** Allocate `n` states and prefill each with `context` tokens (chunked to bound memory). */
export async function contextStates(
  b: Backend,
  n: number,
  context: number,
): Promise<BackendState[]> {
  const states: BackendState[] = [];
  for (let i = 0; i < n; i++) {
    const s = b.allocState();
    if (context > 0) {
      const ids = randomIds(context, b.config.vocabSize, i + 1);
      for (let c = 0; c < context; c += 8192) await b.prefill(s, ids.subarray(c, c + 8192), "none");
    }
    states.push(s);
  }
  return states;
}

/** One decode-rate measurement. */
export interface DecodeRecord {
  /** Sequences decoded together. */
  batch: number;
  /** Tokens of context before decoding. */
  context: number;
  /** Decode steps per host readback (1 = one readback per token, logits to the host). */
  stepsPerReadback: number;
  /**
   * Whether each call was continued on the device while the host read the one before
   * (`decodeSampled`'s `ahead`); false: calls one after another (absent in older results).
   */
  ahead?: boolean;
  /** Sampling used. */
  sampling: string;
  /** Total generated tokens per second (all sequences). */
  tokensPerSecond: number;
  /** Milliseconds per decode step (one token for every sequence). */
  msPerStep: number;
}

/**
 * Decode throughput: `rounds` submissions of `steps` device-sampled steps (greedy unless
 * `sampling` is given), or, with steps = 1 and no device sampling, the host path (logits read back
 * and arg-maxed per step). Where the backend continues calls on the device (`decodesAhead`), each
 * call but the last is continued, as the engine does in steady decoding, unless `ahead` is false.
 */
export async function measureDecode(
  b: Backend,
  opts: {
    batch: number;
    context: number;
    steps: number;
    rounds: number;
    sampling?: Record<string, number>;
    ahead?: boolean;
  },
): Promise<DecodeRecord> {
  const states = await contextStates(b, opts.batch, opts.context);
  const V = b.config.vocabSize;
  const params = validateSamplingParams(opts.sampling ?? { temperature: 0 }, V);
  const label = opts.sampling ? JSON.stringify(opts.sampling) : "greedy";
  try {
    let tokens = Int32Array.from(states, (_, i) => 3 + i);
    const rows = (): SampledRow[] =>
      states.map((state, i) => ({
        state,
        token: tokens[i],
        budget: 1 << 30,
        sampling: params,
        rng: { seed: 7 + i, counter: 0 },
        stopAtEos: false,
        penalties: false,
      }));
    const onDevice = opts.steps > 1 && b.decodeSampled;
    const ahead = onDevice && b.decodesAhead === true && opts.ahead !== false;
    const round = async (last = true) => {
      if (onDevice) {
        const out = await b.decodeSampled!(rows(), opts.steps, ahead && !last ? opts.steps : 0);
        tokens = Int32Array.from(out, (t) => t[t.length - 1]);
      } else {
        for (let s = 0; s < opts.steps; s++) {
          const logits = await b.decode(states, tokens);
          tokens = Int32Array.from(states, (_, i) => {
            let best = 0;
            for (let v = 1; v < V; v++) if (logits[i * V + v] > logits[i * V + best]) best = v;
            return best;
          });
        }
      }
    };
    await round(); // warm-up (pipelines, caches)
    const t0 = performance.now();
    for (let r = 0; r < opts.rounds; r++) await round(r === opts.rounds - 1);
    const ms = performance.now() - t0;
    const steps = opts.rounds * opts.steps;
    return {
      batch: opts.batch,
      context: opts.context,
      stepsPerReadback: onDevice ? opts.steps : 1,
      ...(onDevice ? { ahead } : {}),
      sampling: label,
      tokensPerSecond: (steps * opts.batch * 1000) / ms,
      msPerStep: ms / steps,
    };
  } finally {
    for (const s of states) b.releaseState(s);
  }
}

/** One prefill measurement. */
export interface PrefillRecord {
  /** Prompt tokens. */
  tokens: number;
  /** Prompt tokens per second (median of the repeats). */
  tokensPerSecond: number;
  /** Milliseconds for the whole prompt (median). */
  ms: number;
}

/** Prefill of a `tokens`-long prompt into a fresh state, logits of the last position only. */
export async function measurePrefill(
  b: Backend,
  tokens: number,
  repeats = 3,
): Promise<PrefillRecord> {
  const ids = randomIds(tokens, b.config.vocabSize, 99);
  const times: number[] = [];
  for (let r = 0; r <= repeats; r++) {
    const s = b.allocState();
    try {
      const t0 = performance.now();
      await b.prefill(s, ids, "last");
      if (r > 0) times.push(performance.now() - t0); // the first run warms up
    } finally {
      b.releaseState(s);
    }
  }
  times.sort((x, y) => x - y);
  const ms = times[Math.floor(times.length / 2)];
  return { tokens, tokensPerSecond: (tokens * 1000) / ms, ms };
}

/** GPU time per kernel label for one decode step, from timestamp queries. */
export interface KernelProfile {
  /** Kernel label (qkvu, attention, ...). */
  kernel: string;
  /** Dispatches per step. */
  dispatches: number;
  /** Microseconds of GPU time per step. */
  us: number;
}

/**
 * Profile one decode step of `batch` sequences: each dispatch in its own timed pass (so totals are
 * a little above the fused single-pass time), averaged over `repeats` steps.
 */
export async function profileDecodeStep(
  b: WebGpuBackend,
  batch: number,
  repeats = 20,
  sampled?: { temperature: number; topK: number; topP: number },
): Promise<{
  kernels: KernelProfile[];
  totalUs: number;
  dispatches: number;
}> {
  const m = b.model;
  const dev = m.ctx.device;
  if (!dev.features.has("timestamp-query")) return { kernels: [], totalUs: 0, dispatches: 0 };
  const plan = [...await m.decodePlan(seqsPerWorkgroup(batch)), ...await m.samplePlan()];
  const states = await contextStates(b, batch, 16);
  try {
    // Rows: real slots and tokens so the kernels read valid data.
    const rows = new Uint32Array(batch * 16);
    states.forEach((s, i) => {
      rows[i * 16] = (s as unknown as { slot: number }).slot;
      rows[i * 16 + 1] = s.position;
      rows[i * 16 + 2] = 5;
      rows[i * 16 + 8] = 1 << 30;
    });
    // Greedy sampling (temperature 0) unless `sampled` says otherwise, whatever an earlier
    // measurement left in the buffer.
    const sampling = new Float32Array(batch * SAMPLING_WORDS);
    const words = new Uint32Array(sampling.buffer);
    for (let i = 0; i < batch; i++) {
      sampling[i * SAMPLING_WORDS + SAMPLING.topP] = sampled?.topP ?? 1;
      sampling[i * SAMPLING_WORDS + SAMPLING.repetition] = 1;
      sampling[i * SAMPLING_WORDS + SAMPLING.temperature] = sampled?.temperature ?? 0;
      words[i * SAMPLING_WORDS + SAMPLING.topK] = sampled?.topK ?? 0;
    }
    dev.queue.writeBuffer(m.ctl, 0, new Uint32Array([batch]));
    dev.queue.writeBuffer(m.rows, 0, rows);
    dev.queue.writeBuffer(m.sampling, 0, sampling);
    const sums = new Map<string, { n: number; ns: number }>();
    for (let r = 0; r <= repeats; r++) {
      const ns = await timePasses(
        dev,
        plan.length,
        (pass, i) => encodeOps(pass, [plan[i]], batch),
      );
      if (r === 0) continue;
      plan.forEach((d, i) => {
        const e = sums.get(d.label) ?? { n: 0, ns: 0 };
        e.n += 1;
        e.ns += ns[i];
        sums.set(d.label, e);
      });
    }
    const kernels = [...sums].map(([kernel, e]) => ({
      kernel,
      dispatches: e.n / repeats,
      us: e.ns / repeats / 1000,
    })).sort((x, y) => y.us - x.us);
    return { kernels, totalUs: kernels.reduce((a, k) => a + k.us, 0), dispatches: plan.length };
  } finally {
    for (const s of states) b.releaseState(s);
  }
}

/** CPU time to encode and submit one decode step (no waiting), averaged. */
export async function measureEncode(
  b: WebGpuBackend,
  batch: number,
  repeats = 50,
): Promise<{ usPerStep: number; usPerDispatch: number }> {
  const m = b.model;
  const dev = m.ctx.device;
  const plan = [...await m.decodePlan(seqsPerWorkgroup(batch)), ...await m.samplePlan()];
  dev.queue.writeBuffer(m.ctl, 0, new Uint32Array([0])); // zero rows: the kernels return at once
  await dev.queue.onSubmittedWorkDone();
  const t0 = performance.now();
  for (let r = 0; r < repeats; r++) {
    const enc = dev.createCommandEncoder();
    const pass = enc.beginComputePass();
    encodeOps(pass, plan, batch);
    pass.end();
    dev.queue.submit([enc.finish()]);
  }
  const us = ((performance.now() - t0) * 1000) / repeats;
  await dev.queue.onSubmittedWorkDone();
  return { usPerStep: us, usPerDispatch: us / plan.length };
}
