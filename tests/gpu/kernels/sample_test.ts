/**
 * The sampler kernels (`wgsl/sample_prep.wgsl`, `wgsl/sample.wgsl`, `wgsl/argmax.wgsl`) against
 * the CPU sampler (`src/engine/sampler.ts`): the same tokens for the same RNG state, exact top-k
 * and top-p thresholds whatever the search arity, greedy ties to the lowest id.
 */

import assert from "node:assert/strict";
import type { RngState } from "../../../src/engine/rng.ts";
import {
  type ResolvedSamplingParams,
  Sampler,
  type SamplingParams,
  TokenHistory,
  validateSamplingParams,
} from "../../../src/engine/sampler.ts";
import { BROKEN_LOGITS_TOKEN } from "../../../src/engine/backend.ts";
import { ARGMAX_BLOCK, ROW, SAMPLING_DEFINES } from "../../../src/gpu/layout.ts";
import {
  sampleDefines,
  type SampleShape,
  sampleShape,
  sampleThreads,
  sampleWorkgroupBytes,
} from "../../../src/gpu/sample_code.ts";
import { GL, randomF32, runKernel, storageBuffer } from "../harness.ts";
import { gpuTest } from "../support.ts";

/** Run the sampler kernel on one row per case; returns the tokens and the rows after. */
async function gpuSample(
  ctx: Parameters<Parameters<typeof gpuTest>[1]>[0],
  logits: Float32Array[],
  params: ResolvedSamplingParams[],
  rng: RngState[],
  extra: {
    budget?: number;
    flags?: number;
    seen?: Uint32Array;
    counts?: Uint32Array;
    outCount?: number[];
    /** Threads and thresholds per search pass (the device's shape unless given). */
    shape?: Partial<SampleShape>;
  } = {},
) {
  const B = logits.length, V = logits[0].length, RW = 16, SW = 8, MAXB = 300;
  const rows = new Uint32Array(B * RW);
  const sp = new ArrayBuffer(B * SW * 4);
  const spf = new Float32Array(sp), spu = new Uint32Array(sp);
  const bias = new Uint32Array(B * MAXB * 2);
  const biasF = new Float32Array(bias.buffer);
  for (let b = 0; b < B; b++) {
    rows[b * RW + 0] = b; // slot
    rows[b * RW + 3] = rng[b].counter;
    rows[b * RW + 5] = extra.outCount?.[b] ?? 0;
    rows[b * RW + 6] = rng[b].seed >>> 0;
    rows[b * RW + 7] = Math.floor(rng[b].seed / 2 ** 32);
    rows[b * RW + 8] = extra.budget ?? 100;
    rows[b * RW + 10] = extra.flags ?? 1;
    const p = params[b];
    spf[b * SW] = p.temperature;
    spu[b * SW + 1] = p.topK;
    spf[b * SW + 2] = p.topP;
    spf[b * SW + 3] = p.minP;
    spf[b * SW + 4] = p.repetitionPenalty;
    spf[b * SW + 5] = p.presencePenalty;
    spf[b * SW + 6] = p.frequencyPenalty;
    spu[b * SW + 7] = p.biasIds.length;
    p.biasIds.forEach((t, i) => {
      bias[(b * MAXB + i) * 2] = t;
      biasF[(b * MAXB + i) * 2 + 1] = p.biasValues[i];
    });
  }
  const all = new Float32Array(B * V);
  logits.forEach((l, b) => all.set(l, b * V));
  const seenWords = Math.ceil(V / 32);
  const blocks = Math.ceil(V / ARGMAX_BLOCK);
  const defines = { ...SAMPLING_DEFINES, ROW_WORDS: RW, SAMPLING_WORDS: SW };
  const kernelParams = new Uint32Array([V, 4, 2, MAXB, seenWords, blocks, 0, 0]);
  // The two stages share every buffer, as in the decode loop.
  const shared = {
    2: storageBuffer(ctx, rows),
    3: storageBuffer(ctx, all),
    7: storageBuffer(ctx, extra.counts ?? B * V * 4),
    8: storageBuffer(ctx, extra.seen ?? B * seenWords * 4),
    9: storageBuffer(ctx, B * blocks * 8),
  };
  const common = {
    0: { data: kernelParams, uniform: true },
    1: { data: new Uint32Array([B, 0, 0, 0]) },
    5: { data: new Float32Array(sp) },
  };
  await runKernel(ctx, "sample_prep", defines, {
    ...common,
    2: { buffer: shared[2] },
    3: { buffer: shared[3] },
    6: { data: bias },
    7: { buffer: shared[7] },
    8: { buffer: shared[8] },
    9: { buffer: shared[9] },
  }, [blocks, B]);
  const out = await runKernel(ctx, "sample", {
    ...defines,
    ...sampleDefines(sampleShape(ctx.info.limits, extra.shape)),
  }, {
    ...common,
    2: { buffer: shared[2], read: true },
    3: { buffer: shared[3] },
    4: { data: B * 4 * 4, read: true },
    7: { buffer: shared[7], read: true },
    8: { buffer: shared[8], read: true },
    9: { buffer: shared[9] },
  }, [B]);
  for (const b of Object.values(shared)) b.destroy();
  const r = new Uint32Array(out[2]);
  return {
    tokens: Array.from({ length: B }, (_, b) => r[b * RW + 2]),
    rows: r,
    ring: new Uint32Array(out[4]),
    counts: new Uint32Array(out[7]),
    seen: new Uint32Array(out[8]),
  };
}

gpuTest(
  "kernel sample: the same tokens as the CPU sampler (greedy, temperature, top-k/p, min-p, bias)",
  async (ctx) => {
    const sampler = new Sampler();
    const V = 1000;
    const settings: SamplingParams[] = [
      { temperature: 0 },
      { temperature: 1 },
      { temperature: 0.7, topK: 40 },
      { temperature: 1, topP: 0.9 },
      { temperature: 0.8, topK: 50, topP: 0.95, minP: 0.05 },
      { temperature: 1.3, minP: 0.1 },
      { temperature: 1, topK: 1 },
      { temperature: 0.5, logitBias: { 3: 5, 17: -100, 999: 2 } },
    ];
    for (let seed = 1; seed <= 12; seed++) {
      const logits = settings.map((_, i) => randomF32(V, seed * 31 + i, 4));
      const params = settings.map((p) => validateSamplingParams(p, V));
      const rng = settings.map((_, i) => ({ seed: seed * 1000 + i, counter: seed + i }));
      const gpu = await gpuSample(ctx, logits, params, rng.map((r) => ({ ...r })));
      settings.forEach((p, i) => {
        const r = { ...rng[i] };
        const want = sampler.sample(logits[i], params[i], null, r);
        // The GPU computes the softmax in f32 and the CPU in f64; a draw within rounding of a
        // boundary could differ, but none of these seeds does.
        assert.equal(gpu.tokens[i], want, `seed ${seed} ${JSON.stringify(p)}`);
        assert.equal(
          gpu.rows[i * 16 + 3],
          r.counter,
          `one draw per sampled token, ${JSON.stringify(p)}`,
        );
      });
    }
  },
);

gpuTest(
  "kernel sample: every search arity keeps the same tokens as the binary search (splits 1)",
  async (ctx) => {
    // Several arg-max blocks; cut-offs at the extremes (k = 1, 2, V - 1; p near 0 and 1) and
    // combined with min-p, which the searches start from.
    const V = 2 * ARGMAX_BLOCK + 777;
    const settings: SamplingParams[] = [
      { temperature: 1, topK: 1 },
      { temperature: 1, topK: 2 },
      { temperature: 0.9, topK: 50 },
      { temperature: 1, topK: V - 1 },
      { temperature: 1, topP: 0.01 },
      { temperature: 1.2, topP: 0.5 },
      { temperature: 1, topP: 0.999 },
      { temperature: 0.8, topK: 50, topP: 0.95 },
      { temperature: 1, topK: 200, topP: 0.9, minP: 0.02 },
      { temperature: 1, topP: 0.9, minP: 0.5 },
      { temperature: 1, topK: 5000, minP: 0.3 },
    ];
    const params = settings.map((p) => validateSamplingParams(p, V));
    for (let seed = 1; seed <= 4; seed++) {
      // Logits with many ties (rounded to 1/8) and a long flat tail, as top-k/p must handle.
      const logits = settings.map((_, i) =>
        randomF32(V, seed * 97 + i, 6).map((x, j) => j % 3 === 0 ? -8 : Math.round(x * 8) / 8)
      );
      const rng = () => settings.map((_, i) => ({ seed: seed * 7 + i, counter: 3 * seed }));
      // Equal sums need equal thread counts: each arity against bisection at the most threads
      // its workgroup memory allows (GL's llvmpipe: 32 KiB). GL compiles a kernel with the
      // compaction buffer for minutes: there these shapes run without it (its own test below).
      const noCompaction = GL ? { candidates: 0 } : {};
      const binary = new Map<number, number[]>();
      for (const splits of [2, 3, 15]) {
        const threads = sampleThreads(ctx.info.limits, splits);
        if (!binary.has(threads)) {
          const b = await gpuSample(ctx, logits, params, rng(), {
            shape: { threads, splits: 1, ...noCompaction },
          });
          binary.set(threads, b.tokens);
        }
        const r = await gpuSample(ctx, logits, params, rng(), {
          shape: { threads, splits, ...noCompaction },
        });
        assert.deepEqual(r.tokens, binary.get(threads), `seed ${seed}, ${threads}×${splits}`);
      }
    }
  },
);

gpuTest(
  "kernel sample: compacting the searches' values keeps the thresholds' bits and the tokens",
  async (ctx) => {
    // Against passes over the whole vocabulary (no compaction buffer): buffers that compact
    // early (4,096) and late (256), on a peaked distribution (most of the mass in few tokens), a
    // flat one with ties, and one where every weight is tiny but one.
    const V = 9000;
    const settings: SamplingParams[] = [
      { temperature: 1, topK: 50 },
      { temperature: 0.8, topP: 0.95 },
      { temperature: 0.8, topK: 50, topP: 0.95 },
      { temperature: 1, topK: 700, topP: 0.5, minP: 0.001 },
      { temperature: 1.1, topP: 0.999 },
      { temperature: 1, topK: 3000 },
    ];
    const params = settings.map((p) => validateSamplingParams(p, V));
    const shapes = (limits: typeof ctx.info.limits) => {
      const full = sampleShape(limits);
      // GL compiles each kernel with a compaction buffer for minutes: the device's shape only.
      return (GL ? [0, full.candidates ?? 0] : [0, 256, 4096]).filter((c) =>
        sampleWorkgroupBytes({ ...full, candidates: c }) <=
          limits.maxComputeWorkgroupStorageSize
      ).map((candidates) => ({ ...full, candidates }));
    };
    const kinds = {
      peaked: (i: number, s: number) => randomF32(V, s * 13 + i, 1).map((x) => 12 * x * x * x),
      ties: (i: number, s: number) =>
        randomF32(V, s * 17 + i, 6).map((x, j) => j % 3 === 0 ? -8 : Math.round(x * 8) / 8),
      spike: (i: number, s: number) =>
        randomF32(V, s * 19 + i, 1).map((x, j) => j === 77 * (i + 1) ? 30 : x),
    };
    const list = shapes(ctx.info.limits);
    assert.ok(list.length >= 2, "no compaction buffer fits this device");
    for (const [kind, make] of Object.entries(kinds)) {
      for (let seed = 1; seed <= 2; seed++) {
        const logits = settings.map((_, i) => make(i, seed));
        const rng = () => settings.map((_, i) => ({ seed: seed * 5 + i, counter: seed }));
        const runs: Awaited<ReturnType<typeof gpuSample>>[] = [];
        for (const shape of list) runs.push(await gpuSample(ctx, logits, params, rng(), { shape }));
        const tau = (r: (typeof runs)[number]) => settings.map((_, i) => r.rows[i * 16 + ROW.tau]);
        for (let k = 1; k < runs.length; k++) {
          const what = `${kind} seed ${seed}, ${list[k].candidates} candidates`;
          assert.deepEqual(tau(runs[k]), tau(runs[0]), `thresholds, ${what}`);
          assert.deepEqual(runs[k].tokens, runs[0].tokens, `tokens, ${what}`);
        }
      }
    }
  },
);

gpuTest("kernel sample: greedy ties go to the lowest id", async (ctx) => {
  const V = 1000;
  const a = randomF32(V, 9, 5), b = randomF32(V, 10, 5);
  a[17] = 99;
  a[900] = 99;
  b[999] = 50;
  const greedy = validateSamplingParams({ temperature: 0 }, V);
  const r = await gpuSample(ctx, [a, b], [greedy, greedy], [{ seed: 1, counter: 0 }, {
    seed: 1,
    counter: 0,
  }]);
  assert.deepEqual(r.tokens, [17, 999]);
  assert.deepEqual([r.rows[3], r.rows[16 + 3]], [0, 0], "greedy draws nothing");
  // Several blocks of ids in the first stage: ties across blocks, the maximum in a later block,
  // the last (partial) block.
  const W = 2 * ARGMAX_BLOCK + 300;
  const c = randomF32(W, 11, 5), d = randomF32(W, 12, 5);
  c[ARGMAX_BLOCK + 5] = 70;
  c[2 * ARGMAX_BLOCK + 7] = 70;
  d[ARGMAX_BLOCK - 1] = 60;
  d[ARGMAX_BLOCK] = 61;
  const g = validateSamplingParams({ temperature: 0 }, W);
  const rng = () => ({ seed: 1, counter: 0 });
  const r2 = await gpuSample(ctx, [c, d], [g, g], [rng(), rng()]);
  assert.deepEqual(r2.tokens, [ARGMAX_BLOCK + 5, ARGMAX_BLOCK]);
});

gpuTest("kernel sample: broken logits (a NaN, no finite value) sample nothing", async (ctx) => {
  // A NaN in a later block, a row of -inf, then a good row: the broken rows write the marker
  // (BROKEN_LOGITS_TOKEN as u32) to the ring, stop, and draw nothing; the good one samples.
  const W = 2 * ARGMAX_BLOCK + 300;
  const nan = randomF32(W, 13, 5), good = randomF32(W, 14, 5);
  nan[ARGMAX_BLOCK + 3] = NaN;
  const none = new Float32Array(W).fill(-Infinity);
  for (const sampling of [{ temperature: 0 }, { temperature: 0.9, topP: 0.9 }]) {
    const p = validateSamplingParams(sampling, W);
    const rng = () => ({ seed: 5, counter: 2 });
    const r = await gpuSample(ctx, [nan, none, good], [p, p, p], [rng(), rng(), rng()], {
      flags: 0,
    });
    const want = new Sampler().sample(good, p, null, rng());
    const marker = BROKEN_LOGITS_TOKEN >>> 0;
    assert.deepEqual(
      [r.ring[0], r.ring[4], r.ring[8]],
      [marker, marker, want],
      JSON.stringify(sampling),
    );
    assert.deepEqual([r.rows[9], r.rows[16 + 9], r.rows[32 + 9]], [1, 1, 0], "broken rows stop");
    assert.deepEqual([r.rows[5], r.rows[16 + 5]], [1, 1], "the marker is counted in the ring");
    assert.deepEqual([r.rows[3], r.rows[16 + 3]], [2, 2], "and draws nothing");
  }
});

gpuTest(
  "kernel sample: penalties use the slot's history; counts, ring, stop at EOS and budget",
  async (ctx) => {
    const sampler = new Sampler();
    const V = 300;
    const logits = randomF32(V, 5, 3);
    const p = validateSamplingParams({
      temperature: 0.9,
      repetitionPenalty: 1.3,
      presencePenalty: 0.5,
      frequencyPenalty: 0.4,
    }, V);
    const history = new TokenHistory([1, 2, 3, 40, 41], [40, 40, 7, 250]);
    const seen = new Uint32Array(Math.ceil(V / 32));
    for (const t of history.seenIds) seen[t >>> 5] |= 1 << (t & 31);
    const counts = new Uint32Array(V);
    history.generatedIds.forEach((t, i) => (counts[t] = history.generatedCounts[i]));
    const rng = { seed: 99, counter: 7 };
    const gpu = await gpuSample(ctx, [logits], [p], [{ ...rng }], { seen, counts, flags: 3 });
    const want = sampler.sample(logits, p, history, { ...rng });
    assert.equal(gpu.tokens[0], want);
    assert.equal(gpu.counts[want], counts[want] + 1, "generated count of the new token");
    assert.equal((gpu.seen[want >>> 5] >>> (want & 31)) & 1, 1, "seen bit of the new token");
    assert.equal(gpu.ring[0], want);
    assert.deepEqual(
      [gpu.rows[1], gpu.rows[5], gpu.rows[9]],
      [1, 1, 0],
      "position, ring count, not done",
    );
    // End-of-sequence (id 2 here) stops the row; so does a spent budget.
    const eos = new Float32Array(V).fill(-10);
    eos[2] = 10;
    const greedy = validateSamplingParams({ temperature: 0 }, V);
    assert.equal(
      (await gpuSample(ctx, [eos], [greedy], [{ ...rng }])).rows[9],
      1,
      "EOS stops the row",
    );
    assert.equal(
      (await gpuSample(ctx, [eos], [greedy], [{ ...rng }], { flags: 0 })).rows[9],
      0,
      "unless EOS is ignored",
    );
    const spent = await gpuSample(ctx, [logits], [greedy], [{ ...rng }], {
      outCount: [2],
      budget: 3,
      flags: 0,
    });
    assert.equal(spent.rows[9], 1, "the budget stops the row");
    assert.equal(spent.ring[2], spent.tokens[0], "appended at its count");
  },
);
