/**
 * Batched feeding of several sequences (issue 20): `prefillMany` gives the same states as one
 * `prefill` per sequence, and `replayMany` (the decode path, sequences of different lengths batched)
 * the same states as one `replay` per sequence, bit for bit: only the number of round trips
 * differs. `readStates` reads several slots in one readback. A prompt fed in chunks that end on
 * Lightning block boundaries gives the bits of one prefill, so `prefillMany` joins such chunks of
 * one sequence into larger submissions; joins off a boundary are fed apart. A head that is a
 * split product (small vocabulary, wide model) gives every position's logits.
 */

import assert from "node:assert/strict";
import { WebGpuBackend } from "../../src/gpu/backend.ts";
import { lightningBlock } from "../../src/gpu/ops/mod.ts";
import { gemmSplits } from "../../src/gpu/gemm_tiling.ts";
import { CpuBackend } from "../../src/cpu/backend.ts";
import { randomSource, shapeConfig } from "../../src/model/random_weights.ts";
import { assertClose, sameBits, sameStates } from "./harness.ts";
import type { BackendState } from "../../src/engine/backend.ts";
import { loadConfig } from "../../src/model/config.ts";
import { openSafetensors } from "../../src/model/weights/safetensors.ts";
import { DEFAULT_MODEL_DIR } from "../fixtures.ts";
import { gpuTest } from "./support.ts";

const config = await loadConfig(DEFAULT_MODEL_DIR + "config.json");
const prompts = [
  [5, 9, 300, 41],
  [77],
  [12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22],
  [1000, 2000, 3000, 40, 50, 60, 70],
].map((p) => Int32Array.from(p));

gpuTest(
  "gpu: prefillMany and replayMany give one-sequence prefill's and replay's states",
  async (ctx) => {
    const src = await openSafetensors(DEFAULT_MODEL_DIR + "model.safetensors");
    const b = await WebGpuBackend.load(src, config, "default", {
      context: ctx,
      maxSlots: 16,
      maxBatch: 3, // fewer than the sequences: replayMany splits the batch
    }).finally(() => src.close());
    try {
      const alloc = () => prompts.map(() => b.allocState());
      const release = (s: BackendState[]) => s.forEach((x) => b.releaseState(x));
      for (const [many, one] of [["prefillMany", "prefill"], ["replayMany", "replay"]] as const) {
        const batched = alloc(), alone = alloc();
        await b[many](prompts.map((tokens, i) => ({ state: batched[i], tokens })));
        for (let i = 0; i < prompts.length; i++) {
          if (one === "prefill") await b.prefill(alone[i], prompts[i], "none");
          else await b.replay(alone[i], prompts[i]);
        }
        const x = await b.readStates(batched);
        const y = await Promise.all(alone.map((s) => b.readState(s)));
        sameStates(x, y);
        assert.deepEqual(x.map((s) => s.position), prompts.map((p) => p.length));
        release(batched);
        release(alone);
      }
    } finally {
      await b.dispose();
    }
  },
);

gpuTest(
  "gpu: a prompt fed in chunks ending on block boundaries gives the one prefill's bits; prefillMany joins a sequence's chunks",
  async (ctx) => {
    const src = await openSafetensors(DEFAULT_MODEL_DIR + "model.safetensors");
    const b = await WebGpuBackend.load(src, config, "default", { context: ctx, maxSlots: 8 })
      .finally(() => src.close());
    try {
      const blk = lightningBlock(config.headDim);
      assert.ok(b.preferredPrefillChunk <= b.prefiller.capacity);
      const n = 5 * blk + 7;
      const tokens = Int32Array.from({ length: n }, (_, i) => (i * 37 + 11) % config.vocabSize);
      const whole = b.allocState(), parts = b.allocState(), many = b.allocState();
      const odd = b.allocState(), oddMany = b.allocState();
      // Logits of the last token after the prompt, and the state.
      const last = tokens.subarray(n - 1);
      const cuts = [0, blk, 3 * blk, n - 1];
      await b.prefill(whole, tokens.subarray(0, n - 1), "none");
      for (let i = 0; i + 1 < cuts.length; i++) {
        await b.prefill(parts, tokens.subarray(cuts[i], cuts[i + 1]), "none");
      }
      const spans = cuts.slice(1).map((c, i) => tokens.subarray(cuts[i], c));
      await b.prefillMany(spans.map((t) => ({ state: many, tokens: t })));
      // A join off a block boundary: fed apart, the blocks start at the join.
      const oddCuts = [0, blk + 3, n - 1];
      const oddSpans = oddCuts.slice(1).map((c, i) => tokens.subarray(oddCuts[i], c));
      for (const t of oddSpans) await b.prefill(odd, t, "none");
      await b.prefillMany(oddSpans.map((t) => ({ state: oddMany, tokens: t })));
      const logits = async (s: BackendState) =>
        new Uint32Array((await b.prefill(s, last, "last")).buffer);
      const [w, p, m, o, om] = await Promise.all(
        [whole, parts, many, odd, oddMany].map(async (s) => ({
          logits: await logits(s),
          state: await b.readState(s),
        })),
      );
      sameStates([p.state, m.state], [w.state, w.state]);
      sameBits(p.logits, w.logits, "logits, chunk by chunk");
      sameBits(m.logits, w.logits, "logits, prefillMany");
      sameStates([om.state], [o.state]);
      sameBits(om.logits, o.logits, "logits, a join off a block boundary");
    } finally {
      await b.dispose();
    }
  },
);

gpuTest(
  "gpu: a head that is a split product (vocabulary ≤ 1,024, width ≥ 512) gives all positions' logits",
  async (ctx) => {
    // Random weights at a small shape whose tied head (1,000 × 512) sums its inner dimension in
    // two parts (`gemmSplits`), as the layers' down projection does (512 × 1,024).
    const cfg = shapeConfig({
      decoder_embed_dim: 512,
      hidden_dim: 512,
      decoder_layers: 1,
      decoder_attention_heads: 4,
      glu_dim: 1024,
    }, { vocab_size: 1000 });
    assert.equal(gemmSplits(cfg.vocabSize, cfg.embedDim), 2);
    const gpu = await WebGpuBackend.load(randomSource(cfg, { dtype: "BF16" }), cfg, "split head", {
      context: ctx,
      maxSlots: 2,
    });
    const cpu = await CpuBackend.load(randomSource(cfg, { dtype: "BF16" }), cfg, "split head");
    try {
      const tokens = Int32Array.from({ length: 40 }, (_, i) => (i * 31 + 7) % cfg.vocabSize);
      const s = gpu.allocState(), c = cpu.allocState();
      const got = await gpu.prefill(s, tokens, "all");
      const want = await cpu.prefill(c, tokens, "all");
      assertClose(got, want, 1e-4, "logits of every position");
    } finally {
      await gpu.dispose();
      await cpu.dispose();
    }
  },
);
