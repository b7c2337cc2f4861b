/**
 * The WebAssembly attention kernels (Lightning prefill, decode step) against the JS reference
 * (`src/cpu/attention.ts`).
 */

import assert from "node:assert/strict";
import { decayPowers, lightningPrefill, recurrentStep } from "../../../src/cpu/attention.ts";
import { WasmArena } from "../../../src/cpu/wasm/mod.ts";

/** Deterministic uniform [-0.5, 0.5) values. */
function rnd(seed: number): () => number {
  let s = seed;
  return () => ((s = (s * 16807) % 2147483647) / 2147483647) - 0.5;
}

/**
 * Several heads with their own decay, an initial state, strided v/o rows (as in the model's
 * qkvu and output buffers): wasm (f32) and JS (f64 accumulation) agree to f32 rounding.
 */
function runCase(heads: number, dk: number, dv: number, T: number, block: number, seed: number) {
  const r = rnd(seed);
  const vStride = heads * dv + 7, oStride = heads * dv + 3;
  const a = new WasmArena(
    4 * (2 * heads * dk * dv + 2 * heads * T * dk + 2 * T * (vStride + oStride) +
          heads * (2 * block + 1)) + (1 << 16),
  );
  const S = a.allocF32(heads * dk * dv), q = a.allocF32(heads * T * dk);
  const k = a.allocF32(heads * T * dk), v = a.allocF32(T * vStride);
  const o = a.allocF32(T * oStride), pw = a.allocF32(heads * (block + 1));
  const scores = a.allocF32(heads * block);
  for (const x of [S, q, k, v]) for (let i = 0; i < x.length; i++) x[i] = r();
  const rates = Array.from({ length: heads }, (_, h) => 0.02 + 0.3 * h);
  const pws = rates.map((rate) => decayPowers(rate, block));
  pws.forEach((p, h) => pw.set(p, h * (block + 1)));
  const S0 = Float32Array.from(S);
  o.fill(NaN);
  a.lightning({ S, q, k, v, vStride, o, oStride, pw, scores, heads, T, dk, dv, block });
  const Sr = Float32Array.from(S0), orf = new Float32Array(o.length);
  const acc = new Float64Array(dv);
  for (let h = 0; h < heads; h++) {
    lightningPrefill(
      Sr,
      h * dk * dv,
      dk,
      dv,
      T,
      block,
      pws[h],
      q,
      h * T * dk,
      k,
      h * T * dk,
      dk,
      v,
      h * dv,
      vStride,
      orf,
      h * dv,
      oStride,
      acc,
    );
  }
  const label = `heads ${heads}, dk ${dk}, dv ${dv}, T ${T}, block ${block}`;
  const close = (got: Float32Array, want: Float32Array, what: string, rows: number, w: number) => {
    let scale = 0;
    for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]));
    for (let t = 0; t < rows; t++) {
      for (let c = 0; c < w; c++) {
        const i = t * (what === "o" ? oStride : w) + c;
        assert.ok(Math.abs(got[i] - want[i]) <= 2e-5 * scale, `${label}: ${what}[${i}]`);
      }
    }
  };
  close(o, orf, "o", T, heads * dv);
  close(S, Sr, "S", heads * dk, dv);
}

Deno.test("wasm lightning: equals the JS Lightning Attention (heads, odd T, blocks, strides)", () => {
  let seed = 11;
  for (const [heads, dk, dv] of [[1, 32, 32], [3, 64, 32], [2, 256, 128]]) {
    for (const T of [1, 5, 64, 67]) {
      for (const block of [1, 16, 64]) runCase(heads, dk, dv, T, block, seed++);
    }
  }
});

Deno.test("wasm lightning: rejects widths that are not multiples of 32", () => {
  const a = new WasmArena(1 << 16);
  const f = a.allocF32(64 * 48);
  assert.throws(() =>
    a.lightning({
      S: f,
      q: f,
      k: f,
      v: f,
      vStride: 48,
      o: a.allocF32(48),
      oStride: 48,
      pw: f,
      scores: f,
      heads: 1,
      T: 1,
      dk: 48,
      dv: 48,
      block: 4,
    }), /multiples of 32/);
});

/**
 * Decode steps of several heads (strided q and k, as the batched decode lays them out): the wasm
 * step (f32) and the JS step (f64 accumulation) agree to f32 rounding, step after step.
 */
function runStep(heads: number, dk: number, dv: number, steps: number, seed: number) {
  const r = rnd(seed);
  const qkStride = dk * 3;
  const a = new WasmArena(
    4 * (heads * dk * dv + 4 * heads * qkStride + 4 * heads * dv) + (1 << 16),
  );
  const S = a.allocF32(heads * dk * dv), q = a.allocF32(heads * qkStride);
  const k = a.allocF32(heads * qkStride), v = a.allocF32(heads * dv);
  const o = a.allocF32(heads * dv), lambda = a.allocF32(heads);
  for (let i = 0; i < S.length; i++) S[i] = r();
  const lam = Array.from({ length: heads }, (_, h) => Math.exp(-(0.02 + 0.3 * h)));
  lambda.set(lam);
  const Sr = Float32Array.from(S), orf = new Float32Array(o.length), acc = new Float64Array(dv);
  const label = `heads ${heads}, dk ${dk}, dv ${dv}`;
  for (let step = 0; step < steps; step++) {
    for (const x of [q, k, v]) for (let i = 0; i < x.length; i++) x[i] = r();
    o.fill(NaN);
    a.recurrent({ S, q, k, qkStride, v, o, lambda, heads, dk, dv });
    for (let h = 0; h < heads; h++) {
      // λ as the kernel sees it (f32), so that only the arithmetic differs.
      const l = Math.fround(lam[h]);
      recurrentStep(
        Sr,
        h * dk * dv,
        dk,
        dv,
        l,
        q,
        h * qkStride,
        k,
        h * qkStride,
        v,
        h * dv,
        orf,
        h * dv,
        acc,
      );
    }
    for (const [got, want, what] of [[o, orf, "o"], [S, Sr, "S"]] as const) {
      let scale = 0;
      for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]));
      for (let i = 0; i < want.length; i++) {
        assert.ok(
          Math.abs(got[i] - want[i]) <= 1e-5 * scale,
          `${label}, step ${step}: ${what}[${i}]`,
        );
      }
    }
  }
}

Deno.test("wasm recurrent: equals the JS decode step (heads, widths, strided q and k)", () => {
  let seed = 71;
  for (const [heads, dk, dv] of [[1, 32, 32], [3, 64, 32], [2, 256, 128], [5, 96, 160]]) {
    runStep(heads, dk, dv, 4, seed++);
  }
});

Deno.test("wasm recurrent: rejects widths that are not multiples of 32 and overlaps", () => {
  const a = new WasmArena(1 << 18);
  const f = a.allocF32(64 * 64);
  const o = a.allocF32(64);
  const args = { S: f, q: f, k: f, qkStride: 48, v: f, o, lambda: f, heads: 1, dk: 48, dv: 48 };
  assert.throws(() => a.recurrent(args), /multiples of 32/);
  assert.throws(
    () => a.recurrent({ ...args, dk: 32, dv: 32, qkStride: 32, o: f.subarray(64) }),
    /overlaps/,
  );
});
