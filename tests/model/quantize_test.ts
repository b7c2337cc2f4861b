import assert from "node:assert/strict";
import {
  dequantizeInt8,
  parseQuantization,
  quantizeInt8,
  roundHalfAway,
} from "../../src/model/quantize.ts";
import { InputError } from "../../src/errors.ts";

Deno.test("quantizeInt8: per-row scale max|w|/127, error at most half a step", () => {
  const rows = 3, cols = 5;
  // Rows: max 1.27; max 2 (±127 at both ends); all zero.
  const v = new Float32Array(rows * cols);
  v.set([0.5, -1.27, 0.01, 0.3, 1.0], 0);
  v.set([-2, 2, 1, -1, 0], 5);
  const q = quantizeInt8(v, rows, cols);
  assert.equal(q.scales[0], Math.fround(1.27 / 127));
  assert.equal(q.scales[1], Math.fround(2 / 127));
  assert.equal(q.scales[2], 0);
  assert.deepEqual([...q.q.subarray(5, 10)], [-127, 127, 64, -64, 0]);
  assert.deepEqual([...q.q.subarray(10)], [0, 0, 0, 0, 0]);
  const d = dequantizeInt8(q);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < cols; i++) {
      const k = r * cols + i;
      assert.ok(Math.abs(d[k] - v[k]) <= q.scales[r] / 2 + 1e-7, `(${r}, ${i})`);
      // The reconstruction is the correctly rounded f32 product q·s (what a GPU computes).
      assert.equal(d[k], Math.fround(q.q[k] * q.scales[r]));
    }
  }
});

Deno.test("quantizeInt8: rounds half away from zero, symmetric in sign", () => {
  // Scale 1: values 2.5 and -2.5 map to ±3, 0.49 to 0.
  const v = Float32Array.from([127, 2.5, -2.5, 0.49, -127]);
  const q = quantizeInt8(v, 1, 5);
  assert.equal(q.scales[0], 1);
  assert.deepEqual([...q.q], [127, 3, -3, 0, -127]);
});

/** The next f64 above (dir 1) or below (dir -1) x, for x > 0. */
function nextF64(x: number, dir: 1 | -1): number {
  const b = new BigInt64Array(Float64Array.of(x).buffer);
  b[0] += BigInt(dir);
  return new Float64Array(b.buffer)[0];
}

Deno.test("roundHalfAway: exact at every half, its f64 neighbours and the integers", () => {
  // Defined mathematically: Math.round is exact (ties toward +∞), so sign · round(|x|) is the
  // reference. The tricky inputs are the ties and their neighbours, where x + 0.5 may round.
  const reference = (x: number) => Math.sign(x) * Math.round(Math.abs(x)) + 0;
  const xs: number[] = [0, 0.49999999999999994, 0.5, Number.MIN_VALUE, 127.0000076];
  for (let k = 0; k <= 127; k++) {
    for (const c of [k, k + 0.5]) {
      if (c === 0) continue;
      xs.push(c, nextF64(c, 1), nextF64(c, -1), nextF64(nextF64(c, -1), -1));
    }
  }
  for (const x of xs) {
    for (const y of [x, -x]) assert.equal(roundHalfAway(y) + 0, reference(y), `x = ${y}`);
  }
});

Deno.test("quantizeInt8: non-finite weights and wrong sizes are rejected by name", () => {
  assert.throws(
    () => quantizeInt8(Float32Array.from([1, NaN]), 1, 2, "layers.0.w"),
    (e: unknown) => e instanceof InputError && /layers\.0\.w.*row 0.*non-finite/.test(e.message),
  );
  assert.throws(() => quantizeInt8(Float32Array.from([1, Infinity]), 1, 2), InputError);
  assert.throws(() => quantizeInt8(new Float32Array(5), 2, 3), RangeError);
});

Deno.test("parseQuantization: none by default, int8, and a clear error otherwise", () => {
  assert.equal(parseQuantization(undefined), "none");
  assert.equal(parseQuantization("int8"), "int8");
  assert.throws(
    () => parseQuantization("int4"),
    (e: unknown) => e instanceof InputError && /none, int8.*int4/.test(e.message),
  );
});
