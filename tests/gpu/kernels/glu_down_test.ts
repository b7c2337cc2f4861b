/**
 * The fused SGLU + down projection of decode (`wgsl/glu_down.wgsl`: x += ((srms(x)·W1ᵀ + b1) ⊙
 * (srms(x)·W2ᵀ + b2))·W3ᵀ + b3, partials summed by the workgroups that finish last) against the
 * CPU reference (`linear`): every weight dtype, odd G, several tiles of sequences, the counters
 * left at 0, and each sequence's bits the same at batch 1, 3 and 6. Tolerance: 2e-5 relative.
 */

import assert from "node:assert/strict";
import { linear } from "../../../src/cpu/kernels.ts";
import {
  GLU_DOWN_SEQS,
  gluDownDefines,
  gluDownScratch,
  gluDownTiling,
} from "../../../src/gpu/glu_down_tiling.ts";
import { assertClose, encodeWeights, randomF32, runKernel, type WeightDType } from "../harness.ts";
import { gpuTest } from "../support.ts";

interface Case {
  D: number;
  G: number;
  dtype: WeightDType;
  bias: boolean;
}

async function gluDown(
  ctx: Parameters<Parameters<typeof gpuTest>[1]>[0],
  c: Case,
  B: number,
  seed: number,
) {
  const { D, G } = c;
  const t = gluDownTiling(D, G);
  const w1 = encodeWeights(randomF32(G * D, seed, 0.1), c.dtype, G);
  const w2 = encodeWeights(randomF32(G * D, seed + 1, 0.1), c.dtype, G);
  const w3 = encodeWeights(randomF32(D * G, seed + 2, 0.1), c.dtype, D);
  const b1 = randomF32(G, seed + 3, 0.3), b2 = randomF32(G, seed + 4, 0.3);
  const b3 = randomF32(D, seed + 5, 0.3);
  // Weights of scale 0.1 keep g and the output near 1 (f32 cancellation stays below the tolerance).
  // Sequence b's input does not depend on B (batch invariance is checked on the same rows).
  const x = randomF32(6 * D, seed + 6, 2).subarray(0, B * D);
  const scratch = gluDownScratch(t, D, B);
  const bindings: Parameters<typeof runKernel>[3] = {
    0: { data: new Uint32Array([D, G, 0, 0]), uniform: true },
    1: { data: new Uint32Array([B, 0, 0, 0]) },
    2: { data: x, read: true },
    3: { data: w1.bytes },
    5: { data: w2.bytes },
    7: { data: w3.bytes },
    12: { data: scratch.parts },
    13: { data: scratch.sums },
    14: { data: new Uint32Array(scratch.counters / 4), read: true },
  };
  if (w1.scales) bindings[4] = { data: w1.scales };
  if (w2.scales) bindings[6] = { data: w2.scales };
  if (w3.scales) bindings[8] = { data: w3.scales };
  if (c.bias) Object.assign(bindings, { 9: { data: b1 }, 10: { data: b2 }, 11: { data: b3 } });
  const out = await runKernel(
    ctx,
    "glu_down",
    {
      ...gluDownDefines(t, D),
      W1_DTYPE: c.dtype,
      W2_DTYPE: c.dtype,
      W3_DTYPE: c.dtype,
      BIAS12: c.bias,
      BIAS3: c.bias,
    },
    bindings,
    [t.workgroups, Math.ceil(B / GLU_DOWN_SEQS)],
  );
  // Reference.
  const want = new Float64Array(B * D);
  for (let b = 0; b < B; b++) {
    const xb = x.subarray(b * D, b * D + D);
    let ss = 0;
    for (let i = 0; i < D; i++) ss += xb[i] * xb[i];
    const scale = 1 / Math.sqrt(ss / D + 1e-6);
    const y1 = new Float32Array(G), y2 = new Float32Array(G), y3 = new Float32Array(D);
    linear(xb, 1, w1.exact, null, G, D, y1);
    linear(xb, 1, w2.exact, null, G, D, y2);
    const g = new Float32Array(G);
    for (let i = 0; i < G; i++) {
      g[i] = (y1[i] * scale + (c.bias ? b1[i] : 0)) * (y2[i] * scale + (c.bias ? b2[i] : 0));
    }
    linear(g, 1, w3.exact, null, D, G, y3);
    for (let d = 0; d < D; d++) want[b * D + d] = xb[d] + y3[d] + (c.bias ? b3[d] : 0);
  }
  return { x: new Float32Array(out[2]), count: new Uint32Array(out[14]), want };
}

gpuTest(
  "kernel glu_down: every dtype, odd G, several tiles, counters reset, batch-invariant",
  async (ctx) => {
    const cases: Case[] = [
      { D: 64, G: 200, dtype: "f32", bias: true },
      { D: 296, G: 1088, dtype: "bf16", bias: false },
      { D: 40, G: 72, dtype: "f16", bias: true },
      { D: 512, G: 264, dtype: "q8", bias: false },
      { D: 16, G: 4104, dtype: "bf16", bias: true },
    ];
    let seed = 21;
    for (const c of cases) {
      const six = await gluDown(ctx, c, 6, seed);
      const three = await gluDown(ctx, c, 3, seed);
      const one = await gluDown(ctx, c, 1, seed);
      seed += 10;
      assertClose(six.x, six.want, 2e-5, JSON.stringify(c));
      assert.ok(six.count.every((v) => v === 0), "counters left at 0");
      const bits = (a: Float32Array, n: number) => [...new Uint32Array(a.buffer.slice(0, n * 4))];
      assert.deepEqual(bits(one.x, c.D), bits(six.x, c.D), `batch 1 vs 6 ${JSON.stringify(c)}`);
      assert.deepEqual(bits(three.x, 3 * c.D), bits(six.x, 3 * c.D), `3 vs 6 ${JSON.stringify(c)}`);
    }
  },
);
