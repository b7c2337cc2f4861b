/** The WebAssembly SIMD linear kernel against the JS reference, and the arena's checks. */

import assert from "node:assert/strict";
import { linear } from "../../../src/cpu/kernels.ts";
import { f32ToBf16, I8_BLOCK, WasmArena, WasmArenaError } from "../../../src/cpu/wasm/mod.ts";
import { type StoredMatrix, widenMatrix } from "../../../src/cpu/stored.ts";
import { f32ToF16 } from "../../../src/model/weights/dtype.ts";
import { dequantizeInt8, quantizeInt8 } from "../../../src/model/quantize.ts";
import { rng as uniform } from "../../support/random.ts";

/** Deterministic uniform [-1, 1) values (mulberry32). */
function rng(seed: number): () => number {
  const u = uniform(seed);
  return () => u() * 2 - 1;
}

/** bf16 bits back to f32 values. */
function widen(u: Uint16Array): Float32Array {
  const bits = new Uint32Array(u.length);
  for (let i = 0; i < u.length; i++) bits[i] = u[i] << 16;
  return new Float32Array(bits.buffer);
}

/**
 * |wasm - js| ≤ 1e-5 · (Σ_i |x_i·w_i| + |b|) for every output: relative to the size of the terms,
 * so that cancellation does not make a correct f32 sum look wrong.
 */
function assertClose(
  got: Float32Array,
  want: Float32Array,
  x: Float32Array,
  w: Float32Array,
  bias: Float32Array | null,
  T: number,
  out: number,
  inDim: number,
  label: string,
): void {
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < out; o++) {
      let scale = bias ? Math.abs(bias[o]) : 0;
      for (let i = 0; i < inDim; i++) scale += Math.abs(x[t * inDim + i] * w[o * inDim + i]);
      const g = got[t * out + o], e = want[t * out + o];
      assert.ok(
        Math.abs(g - e) <= 1e-5 * scale + 1e-30,
        `${label}: y[${t}, ${o}] = ${g}, reference ${e} (scale ${scale})`,
      );
    }
  }
}

const arena = new WasmArena(96 << 20);

function runCase(out: number, inDim: number, T: number, withBias: boolean, seed: number): void {
  const r = rng(seed);
  const label = `out ${out}, in ${inDim}, T ${T}, bias ${withBias}`;
  const mark = arena.used;
  const x = arena.allocF32(T * inDim);
  const wf = arena.allocF32(out * inDim);
  const wb = arena.allocU16(out * inDim);
  const bias = withBias ? arena.allocF32(out) : null;
  const y = arena.allocF32(T * out);
  assert.ok(arena.used > mark);
  for (let i = 0; i < x.length; i++) x[i] = r();
  for (let i = 0; i < wf.length; i++) wf[i] = r() * 0.5;
  if (bias) { for (let i = 0; i < out; i++) bias[i] = r(); }
  f32ToBf16(wf, wb);
  const want = new Float32Array(T * out);

  // f32 weights
  y.fill(NaN);
  arena.linear(x, T, wf, bias, out, inDim, y);
  linear(x, T, wf, bias, out, inDim, want);
  assertClose(y, want, x, wf, bias, T, out, inDim, `f32 ${label}`);

  // bf16 weights, against the JS kernel over the widened weights
  const ww = widen(wb);
  y.fill(NaN);
  arena.linear(x, T, wb, bias, out, inDim, y);
  linear(x, T, ww, bias, out, inDim, want);
  assertClose(y, want, x, ww, bias, T, out, inDim, `bf16 ${label}`);
}

/** Equal bit patterns. */
function sameBits(a: Float32Array, b: Float32Array): boolean {
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  return ua.length === ub.length && ua.every((v, i) => v === ub[i]);
}

/** Round half to even, as f32.nearest does. */
function roundEven(v: number): number {
  const r = Math.round(v);
  return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * The activations the int8 kernels multiply by: per row and block of I8_BLOCK columns, q =
 * round_even(x · f32(32767 / m)) (m = max |x|), times f32(m / 32767), the product kept exact.
 */
function int16Activations(x: Float32Array, T: number, n: number): Float64Array {
  const out = new Float64Array(T * n);
  for (let t = 0; t < T; t++) {
    for (let j0 = 0; j0 < n; j0 += I8_BLOCK) {
      const j1 = Math.min(n, j0 + I8_BLOCK);
      let m = 0;
      for (let j = j0; j < j1; j++) m = Math.max(m, Math.abs(x[t * n + j]));
      const scale = Math.fround(m / 32767), inv = Math.fround(32767 / m);
      for (let j = j0; j < j1; j++) {
        const q = m === 0 ? 0 : roundEven(Math.fround(x[t * n + j] * inv));
        out[t * n + j] = Math.max(-32767, Math.min(32767, q)) * scale;
      }
    }
  }
  return out;
}

/**
 * Every stored dtype (f32, bf16, f16, int8 + scales) against the JS reference over its widened
 * values; the float dtypes bit-identical to the f32 kernel over those values (one summation order
 * for all), int8 against the reference over its int16 activations, and within their rounding of
 * the f32 result.
 */
function runDtypes(out: number, inDim: number, T: number, withBias: boolean, seed: number): void {
  const r = rng(seed);
  const label = `out ${out}, in ${inDim}, T ${T}, bias ${withBias}`;
  const a = new WasmArena(out * inDim * 16 + (T * (inDim + 3 * out) + 2 * out) * 4 + (1 << 16));
  const x = a.allocF32(T * inDim), y = a.allocF32(T * out), yf = a.allocF32(T * out);
  for (let i = 0; i < x.length; i++) x[i] = r();
  const bias = withBias ? a.allocF32(out) : null;
  if (bias) { for (let i = 0; i < out; i++) bias[i] = r(); }
  // Weights with a spread of magnitudes (f16 subnormals and zeros included).
  const w = Float32Array.from({ length: out * inDim }, (_, i) => {
    const v = r() * 2 ** Math.floor(r() * 12 - 10);
    return i % 29 === 0 ? 0 : i % 31 === 0 ? v * 2 ** -12 : v;
  });
  const f16 = a.allocU16(w.length);
  for (let i = 0; i < w.length; i++) f16[i] = f32ToF16(w[i]);
  const bf16 = a.allocU16(w.length);
  f32ToBf16(w, bf16);
  const q = quantizeInt8(w, out, inDim);
  const qd = a.allocI8(w.length), qs = a.allocF32(out);
  qd.set(q.q);
  qs.set(q.scales);
  const f32 = a.allocF32(w.length);
  f32.set(w);
  const mats: StoredMatrix[] = [
    { dtype: "f32", rows: out, cols: inDim, data: f32 },
    { dtype: "bf16", rows: out, cols: inDim, data: bf16 },
    { dtype: "f16", rows: out, cols: inDim, data: f16 },
    { dtype: "int8", rows: out, cols: inDim, data: qd, scales: qs },
  ];
  const wf = a.allocF32(w.length);
  const want = new Float32Array(T * out);
  for (const m of mats) {
    const wide = widenMatrix(m);
    if (m.dtype === "int8") {
      // The kernels' ŵ is the GPU's: q·s, one correctly rounded f32 product.
      assert.ok(sameBits(wide, dequantizeInt8(q)), `${label}: int8 widening`);
    }
    wf.set(wide);
    y.fill(NaN);
    a.linear(x, T, m, bias, out, inDim, y);
    if (m.dtype === "int8") {
      const xq = int16Activations(x, T, inDim);
      const exact = Float32Array.from(xq);
      for (let i = 0; i < xq.length; i++) {
        assert.ok(Math.abs(xq[i] - x[i]) <= 1e-4 * Math.abs(x[i]) + 2e-5, `${label}: x rounding`);
      }
      linear(exact, T, wide, bias, out, inDim, want);
      assertClose(y, want, exact, wide, bias, T, out, inDim, `int8 ${label} (int16 x)`);
      // Against f32 x: the x rounding moves y by at most Σ |ŵ_i·(x_i - x̂_i)|.
      linear(x, T, wide, bias, out, inDim, want);
      for (let t = 0; t < T; t++) {
        for (let o = 0; o < out; o++) {
          let moved = 0, scale = bias ? Math.abs(bias[o]) : 0;
          for (let i = 0; i < inDim; i++) {
            moved += Math.abs(wide[o * inDim + i] * (x[t * inDim + i] - xq[t * inDim + i]));
            scale += Math.abs(wide[o * inDim + i] * x[t * inDim + i]);
          }
          const d = Math.abs(y[t * out + o] - want[t * out + o]);
          assert.ok(d <= moved + 1e-5 * scale + 1e-30, `int8 ${label} (f32 x): y[${t}, ${o}]`);
        }
      }
      continue;
    }
    linear(x, T, wide, bias, out, inDim, want);
    assertClose(y, want, x, wide, bias, T, out, inDim, `${m.dtype} ${label}`);
    a.linear(x, T, wf, bias, out, inDim, yf);
    assert.ok(sameBits(y, yf), `${m.dtype} ${label}: not bit-identical to f32 over ŵ`);
  }
  // Batch invariance: each row alone gives the bits it gives in the batch.
  const y1 = a.allocF32(out);
  for (const m of mats) {
    a.linear(x, T, m, bias, out, inDim, y);
    for (let t = 0; t < T; t++) {
      a.linear(x.subarray(t * inDim, (t + 1) * inDim), 1, m, bias, out, inDim, y1);
      assert.ok(sameBits(y1, y.subarray(t * out, (t + 1) * out)), `${m.dtype} ${label} row ${t}`);
    }
  }
}

Deno.test("wasm linear: every stored dtype on odd shapes, one summation order", () => {
  let seed = 500;
  for (const inDim of [1, 3, 4, 7, 8, 9, 12, 15, 16, 17, 33, 257, 300]) {
    for (const out of [1, 2, 3, 5, 8, 13]) {
      for (const T of [1, 2, 3, 5]) runDtypes(out, inDim, T, seed % 2 === 0, seed++);
    }
  }
  runDtypes(1024, 256, 3, true, seed++);
  runDtypes(37, 704, 4, false, seed++);
  // int8: whole unrolled steps, single steps and a partial step in one block, many blocks.
  for (const inDim of [40, 100, 1100]) runDtypes(19, inDim, 3, true, seed++);
});

Deno.test("wasm linear: supported on this runtime", () => {
  assert.equal(WasmArena.supported(), true);
});

Deno.test("wasm linear: matches the JS kernel on odd and model shapes", () => {
  let seed = 1;
  for (const inDim of [1, 3, 5, 8, 257]) {
    for (const out of [1, 7, 4096]) {
      for (const T of [1, 2, 3, 5, 64]) {
        if (out * T * inDim > 4096 * 64 * 5) continue; // keep the JS reference quick
        for (const withBias of [false, true]) runCase(out, inDim, T, withBias, seed++);
      }
    }
  }
  // The default model's shapes, decode and a prefill chunk.
  for (const [out, inDim] of [[1024, 256], [256, 256], [704, 256], [256, 704], [4096, 256]]) {
    for (const T of [1, 3]) runCase(out, inDim, T, seed % 2 === 0, seed++);
  }
  runCase(13, 257, 64, true, seed++);
});

Deno.test("wasm linear: random shapes", () => {
  const r = rng(12345);
  const pick = (max: number) => 1 + Math.floor(((r() + 1) / 2) * max);
  for (let k = 0; k < 60; k++) runCase(pick(70), pick(300), pick(9), k % 2 === 0, 1000 + k);
});

Deno.test("wasm linear: T = 0 and out = 0 write nothing", () => {
  const x = arena.allocF32(4), w = arena.allocF32(8), y = arena.allocF32(2).fill(7);
  arena.linear(x, 0, w, null, 2, 4, y);
  arena.linear(x, 1, w, null, 0, 4, y);
  assert.deepEqual(Array.from(y), [7, 7]);
});

Deno.test("wasm linear: writes only its outputs (subarray views)", () => {
  const out = 5, inDim = 6, T = 3;
  const x = arena.allocF32(T * inDim).fill(1);
  const w = arena.allocF32(out * inDim).fill(0.5);
  const yAll = arena.allocF32(T * out + 2).fill(-1);
  arena.linear(x, T, w, null, out, inDim, yAll.subarray(1, 1 + T * out));
  assert.equal(yAll[0], -1);
  assert.equal(yAll[T * out + 1], -1);
  for (let i = 1; i <= T * out; i++) assert.equal(yAll[i], 3);
});

Deno.test("wasm arena: views are aligned, zeroed and never detach", () => {
  const a = new WasmArena(1 << 16);
  assert.ok(a.capacity >= 1 << 16);
  const f = a.allocF32(3), u = a.allocU16(5), g = a.allocF32(1);
  for (const v of [f, u, g]) {
    assert.equal(v.byteOffset % 64, 0);
    assert.ok(v.byteOffset > 0);
    assert.ok(a.owns(v));
    assert.ok(Array.from(v).every((e) => e === 0));
  }
  assert.ok(u.byteOffset >= f.byteOffset + 12 && g.byteOffset >= u.byteOffset + 10);
  assert.equal(a.owns(new Float32Array(4)), false);
  assert.equal(arena.owns(f), false);
  a.allocF32(1000);
  assert.equal(f.length, 3); // not detached
});

Deno.test("wasm arena: allocation beyond capacity throws", () => {
  const a = new WasmArena(1 << 16);
  assert.throws(() => a.allocF32(a.capacity), (e) => {
    assert.ok(e instanceof WasmArenaError);
    assert.equal(e.reason, "out_of_memory");
    assert.equal(e.code, "internal");
    return true;
  });
  const rest = a.allocU16(Math.floor(a.free / 2));
  assert.ok(rest.length > 0);
  assert.throws(() => a.allocF32(1), /requested/);
  assert.throws(() => a.allocF32(-1), WasmArenaError);
  assert.throws(() => a.allocF32(1.5), WasmArenaError);
  assert.throws(() => new WasmArena(0), WasmArenaError);
  assert.throws(() => new WasmArena(2 ** 33), WasmArenaError);
});

Deno.test("wasm arena: linear rejects foreign, short, mistyped and overlapping views", () => {
  const a = new WasmArena(1 << 16);
  const x = a.allocF32(2 * 4), w = a.allocF32(3 * 4), b = a.allocF32(3), y = a.allocF32(2 * 3);
  const wb = a.allocU16(3 * 4);
  a.linear(x, 2, w, b, 3, 4, y);
  a.linear(x, 2, wb, b, 3, 4, y);
  const reason = (r: string) => (e: unknown) => {
    assert.ok(e instanceof WasmArenaError, String(e));
    assert.equal(e.reason, r);
    return true;
  };
  // views of plain memory or of another arena
  assert.throws(() => a.linear(new Float32Array(8), 2, w, b, 3, 4, y), reason("foreign_view"));
  assert.throws(() => a.linear(x, 2, new Float32Array(12), b, 3, 4, y), reason("foreign_view"));
  assert.throws(() => a.linear(x, 2, w, new Float32Array(3), 3, 4, y), reason("foreign_view"));
  assert.throws(() => a.linear(x, 2, w, b, 3, 4, arena.allocF32(6)), reason("foreign_view"));
  // too short for the shapes
  assert.throws(() => a.linear(x, 3, w, b, 3, 4, y), reason("bad_argument"));
  assert.throws(() => a.linear(x, 2, w.subarray(1), b, 3, 4, y), reason("bad_argument"));
  assert.throws(() => a.linear(x, 2, wb.subarray(1), b, 3, 4, y), reason("bad_argument"));
  assert.throws(() => a.linear(x, 2, w, b.subarray(1), 3, 4, y), reason("bad_argument"));
  assert.throws(() => a.linear(x, 2, w, b, 3, 4, y.subarray(1)), reason("bad_argument"));
  // bad numbers and types
  assert.throws(() => a.linear(x, -1, w, b, 3, 4, y), reason("bad_argument"));
  assert.throws(() => a.linear(x, 1.5, w, b, 3, 4, y), reason("bad_argument"));
  const i32 = new Int32Array(x.buffer, x.byteOffset, 8) as unknown as Float32Array;
  assert.throws(() => a.linear(x, 2, i32, b, 3, 4, y), reason("bad_argument"));
  assert.throws(() => a.linear(i32, 2, w, b, 3, 4, y), reason("bad_argument"));
  // output overlapping an input
  const big = a.allocF32(64);
  assert.throws(
    () => a.linear(big.subarray(0, 8), 2, w, null, 3, 4, big.subarray(4, 10)),
    reason("bad_argument"),
  );
  // a bias at address 0 would read as "no bias"
  const zero = new Float32Array(x.buffer, 0, 3);
  assert.throws(() => a.linear(x, 2, w, zero, 3, 4, y), reason("bad_argument"));
});

Deno.test("f32ToBf16: exact for bf16 values, rounds to nearest even otherwise", () => {
  const src = new Float32Array([1, -2.5, 0, 3.140625, Infinity, -Infinity]);
  const dst = new Uint16Array(src.length);
  assert.equal(f32ToBf16(src, dst), true);
  assert.deepEqual(Array.from(widen(dst)), Array.from(src));
  const bits = new Uint32Array([0x3f808000, 0x3f818000, 0x3f808001, 0x7fc00001, 0x7f800001]);
  const f = new Float32Array(bits.buffer);
  const d = new Uint16Array(f.length);
  assert.equal(f32ToBf16(f, d), false);
  assert.equal(d[0], 0x3f80); // tie, to even
  assert.equal(d[1], 0x3f82); // tie, to even (up)
  assert.equal(d[2], 0x3f81); // above the tie
  assert.ok(Number.isNaN(widen(d.subarray(3, 4))[0]));
  assert.ok(Number.isNaN(widen(d.subarray(4, 5))[0])); // signalling NaN does not become Infinity
  assert.throws(() => f32ToBf16(f, new Uint16Array(1)), WasmArenaError);
});
