/** Matvec tiling: the lane tree written as one expression, and the layout rules (no GPU needed). */

import assert from "node:assert/strict";
import {
  lanesFor,
  laneTreeExpression,
  matvecTiling,
  matvecTilingDefines,
} from "../../src/gpu/matvec_tiling.ts";
import { preprocess } from "../../src/gpu/shaders.ts";

/** The stride-halving tree as the lanes run it together, in f32. */
function parallelTree(values: Float32Array): number {
  const a = Float32Array.from(values);
  for (let s = a.length >> 1; s > 0; s >>= 1) {
    for (let l = 0; l < s; l++) a[l] = a[l] + a[l + s];
  }
  return a[0];
}

/** Evaluate the WGSL expression, `parts[q + Lu]` read from `values`, rounding every sum to f32. */
function evalExpression(expr: string, values: Float32Array): number {
  const tokens = expr.match(/parts\[q \+ \d+u\]|[()+]/g)!;
  let at = 0;
  const term = (): number => {
    const t = tokens[at++];
    if (t !== "(") return values[Number(t.match(/\d+/)![0])];
    const a = term();
    assert.equal(tokens[at++], "+");
    const b = term();
    assert.equal(tokens[at++], ")");
    return Math.fround(a + b);
  };
  const v = term();
  assert.equal(at, tokens.length, "the whole expression was read");
  return v;
}

Deno.test("laneTreeExpression: the same additions as the lanes' tree, bit for bit", () => {
  let seed = 12345;
  const rand = () =>
    ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32 - 0.5) * 2 ** (seed % 20);
  for (const lanes of [2, 4, 32, 128, 256]) {
    const expr = laneTreeExpression(lanes);
    assert.equal(expr.match(/parts\[/g)!.length, lanes, "every lane is read once");
    assert.equal(expr.match(/\+ parts|\) \+ /g)!.length, lanes - 1, "lanes - 1 additions");
    for (let trial = 0; trial < 50; trial++) {
      const v = Float32Array.from({ length: lanes }, rand);
      assert.equal(evalExpression(expr, v), parallelTree(v), `lanes ${lanes}, trial ${trial}`);
    }
  }
  assert.equal(
    laneTreeExpression(4),
    "((parts[q + 0u] + parts[q + 2u]) + (parts[q + 1u] + parts[q + 3u]))",
  );
});

Deno.test("matvecTiling: lanes from the shape only; registers and workgroup memory bounded", async () => {
  for (const [rows, cols] of [[4096, 1024], [1024, 1024], [1024, 2816], [64000, 1024], [45, 96]]) {
    for (const glu of [false, true]) {
      for (const storage of [16384, 32768, 49152]) {
        for (const nb of [1, 2, 4, 8, 16, 64]) {
          const t = matvecTiling(rows, cols, nb, false, glu, storage);
          assert.equal(t.lanes, lanesFor(rows, cols));
          assert.ok(t.nb >= 1 && t.nb <= 16 && t.nb <= nb);
          const products = glu ? 2 : 1;
          const maxSums = glu && nb >= 16 ? 128 : 64;
          assert.ok(t.nb === 1 ? t.rpg === 1 : products * t.nb * t.rpg <= maxSums, "accumulators");
          const groups = 256 / t.lanes;
          const sums = products * t.nb * t.rpg + t.nb;
          assert.ok(t.round >= 1 && t.round <= sums);
          assert.equal(t.parts, t.round * (256 + groups));
          assert.ok((t.parts + sums * groups) * 4 <= storage, "workgroup memory");
          assert.equal(t.rowsPerWorkgroup, groups * t.rpg);
          const d = matvecTilingDefines(t, cols);
          assert.equal(d.CHUNKS, Math.ceil(cols / (8 * t.lanes)));
          // Every sum is declared once (the kernel's //#for loops) and stored once for the
          // reduction (the generated ROUNDS).
          const wgsl = await preprocess("matvec", {
            ...d,
            X4: true,
            VEC8: true,
            GLU: glu,
            GATE: true,
            W_DTYPE: "bf16",
            W2_DTYPE: "bf16",
          });
          const decls = wgsl.match(/var [ags]_[\d_]+ = 0\.0;/g)!.length;
          assert.equal(decls, sums);
          assert.equal(String(d.ROUNDS).match(/parts\[\d+u \* PS \+ slot\] = /g)!.length, sums);
        }
      }
    }
  }
  // Batch 1 keeps one row and sequence per lane group and the lanes' tree; two rows on wide
  // matrices at least as tall as wide.
  const b1 = matvecTiling(4096, 1024, 1, false);
  assert.deepEqual([b1.nb, b1.rpg, b1.serial], [1, 1, false]);
  assert.equal(matvecTiling(16384, 4096, 1, false).rpg, 2);
  assert.equal(matvecTiling(4096, 11008, 1, false).rpg, 1);
  assert.equal(matvecTiling(16384, 4096, 1, true).rpg, 1, "software adapters: one row");
  // Many sums per round go one per thread.
  assert.equal(matvecTiling(4096, 1024, 16, false, true, 49152).serial, true);
  // A gated input at large batches: 4 sequences × 8 rows.
  const gated = matvecTiling(1024, 1024, 16, false, false, 16384, undefined, 32, true);
  assert.deepEqual([gated.nb, gated.rpg], [4, 8]);
  assert.equal(matvecTiling(1024, 1024, 8, false, false, 16384, undefined, 32, true).nb, 8);
  // Software adapters: at most two sequences, one row, the lanes' tree.
  const sw = matvecTiling(4096, 1024, 16, true);
  assert.deepEqual([sw.lanes, sw.nb, sw.rpg, sw.serial], [32, 2, 1, false]);
});
