/** CPU reference: invariants on random models of every supported configuration. */

import assert from "node:assert/strict";
import { CpuBackend } from "../../src/cpu/mod.ts";
import { decayPowers, lightningPrefill, recurrentStep } from "../../src/cpu/attention.ts";
import { InputError } from "../../src/errors.ts";
import { parseConfig } from "../../src/model/config.ts";
import { randomSource } from "../../src/model/random_weights.ts";
import { createState } from "../../src/model/state.ts";
import { maxAbsDiff, relDiff } from "../support/parity.ts";

function tiny(overrides: Record<string, unknown> = {}) {
  const layers = (overrides.decoder_layers as number) ?? 3;
  return parseConfig({
    vocab_size: 97,
    decoder_embed_dim: 48,
    hidden_dim: 48,
    decoder_layers: layers,
    decoder_attention_heads: 3,
    glu_dim: 80,
    linear_use_lrpe_list: Array.from({ length: layers }, (_, i) => (i % 2 === 0 ? 1 : 0)),
    linear_act_fun: "swish",
    ...overrides,
  });
}

function randomIds(n: number, vocab: number, seed = 7): Int32Array {
  let s = seed;
  return Int32Array.from({ length: n }, () => (s = (s * 1103515245 + 12345) >>> 0) % vocab);
}

Deno.test("cpu attention: Lightning blocks and the recurrence equal the direct sum", () => {
  const dk = 6, dv = 5, T = 37, rate = 0.3;
  const rnd = (() => {
    let s = 3;
    return () => ((s = (s * 16807) % 2147483647) / 2147483647) - 0.5;
  })();
  const q = Float32Array.from({ length: T * dk }, rnd);
  const k = Float32Array.from({ length: T * dk }, rnd);
  const v = Float32Array.from({ length: T * dv }, rnd);
  // Direct: o_t = Σ_{j≤t} λ^(t-j)(q_t·k_j) v_j.
  const direct = new Float64Array(T * dv);
  for (let t = 0; t < T; t++) {
    for (let j = 0; j <= t; j++) {
      let dot = 0;
      for (let i = 0; i < dk; i++) dot += q[t * dk + i] * k[j * dk + i];
      const w = Math.exp(-rate * (t - j)) * dot;
      for (let c = 0; c < dv; c++) direct[t * dv + c] += w * v[j * dv + c];
    }
  }
  const acc = new Float64Array(dv);
  for (const block of [1, 4, 16, 37, 64]) {
    const s = new Float32Array(dk * dv), o = new Float32Array(T * dv);
    lightningPrefill(
      s,
      0,
      dk,
      dv,
      T,
      block,
      decayPowers(rate, block),
      q,
      0,
      k,
      0,
      dk,
      v,
      0,
      dv,
      o,
      0,
      dv,
      acc,
    );
    assert.ok(maxAbsDiff(o, direct) < 1e-5, `block ${block}`);
  }
  const s = new Float32Array(dk * dv), o = new Float32Array(T * dv);
  for (let t = 0; t < T; t++) {
    recurrentStep(s, 0, dk, dv, Math.exp(-rate), q, t * dk, k, t * dk, v, t * dv, o, t * dv, acc);
  }
  assert.ok(maxAbsDiff(o, direct) < 1e-5, "recurrence");
});

const variants: [string, Record<string, unknown>][] = [
  ["silu, simplermsnorm, 3 heads", {}],
  ["6 heads (not a power of two), LRPE everywhere", {
    decoder_attention_heads: 6,
    linear_use_lrpe_list: [1, 1, 1],
  }],
  ["layernorm with bias", { norm_type: "layernorm", bias: true }],
  ["relu", { linear_act_fun: "relu" }],
  ["1+elu, no embedding scale", { linear_act_fun: "1+elu", no_scale_embedding: true }],
  ["gelu, glu_dim -1", { linear_act_fun: "gelu", glu_dim: -1 }],
  ["sigmoid, one layer", { linear_act_fun: "sigmoid", decoder_layers: 1 }],
  ["elu, hidden width differs from the model width", {
    linear_act_fun: "elu",
    hidden_dim: 96,
    linear_use_lrpe_list: [0, 0, 0],
  }],
];

for (const [name, overrides] of variants) {
  Deno.test(`cpu model (${name}): block size, chunking, prefill vs decode, batch vs single`, async () => {
    const config = tiny(overrides);
    const source = randomSource(config, { dtype: "F32", seed: 11, std: 0.2 });
    const ids = randomIds(150, config.vocabSize);
    const V = config.vocabSize;
    const results: Float32Array[] = [];
    const states = [];
    for (const [block, chunk] of [[64, 256], [7, 256], [256, 40], [1, 1000]]) {
      const b = await CpuBackend.load(source, config, "random", { block, chunk });
      const st = createState(config);
      results.push(await b.forward(st, ids, "all"));
      states.push(st);
    }
    for (let i = 1; i < results.length; i++) {
      assert.ok(maxAbsDiff(results[i], results[0]) < 1e-4, `logits, variant ${i}`);
      for (let l = 0; l < config.numLayers; l++) {
        assert.ok(relDiff(states[i].layers[l], states[0].layers[l]) < 1e-5);
      }
    }
    for (const v of results[0]) assert.ok(Number.isFinite(v));
    // Batched decode of three sequences equals decoding each alone.
    const backend = await CpuBackend.load(source, config, "random");
    const seqs = [ids.subarray(0, 5), ids.subarray(10, 40), ids.subarray(50, 51)];
    const resident = seqs.map(() => backend.allocState());
    for (let i = 0; i < seqs.length; i++) await backend.prefill(resident[i], seqs[i], "none");
    const next = Int32Array.from([3, 4, 5]);
    const batched = await backend.decode(resident, next);
    for (let i = 0; i < seqs.length; i++) {
      const alone = createState(config);
      await backend.forward(alone, seqs[i], "none");
      const lg = await backend.forward(alone, next.subarray(i, i + 1), "last");
      assert.ok(maxAbsDiff(batched, lg, i * V, 0, V) < 1e-5, `sequence ${i}`);
      const host = await backend.readState(resident[i]);
      assert.equal(host.position, alone.position);
      for (let l = 0; l < config.numLayers; l++) {
        assert.ok(relDiff(host.layers[l], alone.layers[l]) < 1e-6);
      }
    }
  });
}

Deno.test("cpu model: bad tokens and states get typed errors", async () => {
  const config = tiny();
  const backend = await CpuBackend.load(randomSource(config, { dtype: "BF16" }), config, "random");
  const st = createState(config);
  await assert.rejects(() => backend.forward(st, new Int32Array([]), "last"), InputError);
  await assert.rejects(
    () => backend.forward(st, new Int32Array([config.vocabSize]), "last"),
    /outside the vocabulary/,
  );
  await assert.rejects(() => backend.forward(st, new Int32Array([-1]), "last"), InputError);
  assert.equal(st.position, 0, "a rejected call leaves the state untouched");
  const s = backend.allocState();
  await assert.rejects(() => backend.decode([s], new Int32Array([1, 2])), InputError);
  const other = await CpuBackend.load(randomSource(config), config, "random");
  await assert.rejects(() => other.prefill(s, new Int32Array([1]), "none"), /another backend/);
  const wrong = createState(tiny({ decoder_layers: 2, linear_use_lrpe_list: [1, 0] }));
  await assert.rejects(() => backend.writeState(s, wrong), /layers/);
});
