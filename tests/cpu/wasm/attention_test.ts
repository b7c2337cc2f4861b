/** The WebAssembly Lightning Attention prefill against the JS reference (`src/cpu/attention.ts`). */

import assert from "node:assert/strict";
import { decayPowers, lightningPrefill } from "../../../src/cpu/attention.ts";
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
