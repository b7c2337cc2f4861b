/** Matvec tiling: the lane tree of `wgsl/matvec.wgsl` in one thread, and the layout rules (no GPU). */

import assert from "node:assert/strict";
import { lanesFor, matvecTiling, matvecTilingDefines } from "../../src/gpu/matvec_tiling.ts";
import { preprocess } from "../../src/gpu/shaders.ts";

/** The stride-halving tree as the lanes run it together, in f32. */
function parallelTree(values: Float32Array): number {
  const a = Float32Array.from(values);
  for (let s = a.length >> 1; s > 0; s >>= 1) {
    for (let l = 0; l < s; l++) a[l] = a[l] + a[l + s];
  }
  return a[0];
}

/**
 * The kernel's one-thread lane tree (`treeN(q, s)` of wgsl/matvec.wgsl, SERIAL tilings) read from
 * its text and evaluated on `values` at parts[q + l], rounding every sum to f32.
 */
function kernelTree(wgsl: string, values: Float32Array): number {
  const body = new Map<number, string>();
  for (const m of wgsl.matchAll(/^fn tree(\d+)\(q: u32, s: u32\) -> f32 \{ return (.*); \}$/gm)) {
    body.set(Number(m[1]), m[2]);
  }
  const tree = (n: number, q: number, s: number): number => {
    const b = body.get(n);
    if (n === 2) {
      assert.equal(b, "parts[q] + parts[q + s]");
      return Math.fround(values[q] + values[q + s]);
    }
    assert.equal(b, `tree${n / 2}(q, 2u * s) + tree${n / 2}(q + s, 2u * s)`);
    return Math.fround(tree(n / 2, q, 2 * s) + tree(n / 2, q + s, 2 * s));
  };
  const top = wgsl.match(/^fn lane_tree\(q: u32\) -> f32 \{ return tree(\d+)\(q, 1u\); \}$/m);
  assert.equal(Number(top?.[1]), values.length, "lane_tree starts at the lanes' count");
  return tree(values.length, 0, 1);
}

Deno.test("matvec.wgsl lane_tree: the same additions as the lanes' tree, bit for bit", async () => {
  let seed = 12345;
  const rand = () =>
    ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32 - 0.5) * 2 ** (seed % 20);
  for (const lanes of [32, 64, 128, 256]) {
    const t = { ...matvecTiling(4096, 1024, 64, false, false, 49152), lanes, serial: true };
    const wgsl = await preprocess("matvec", {
      ...matvecTilingDefines(t, 1024),
      SUBGROUP: false,
      X4: true,
      VEC8: true,
      W_DTYPE: "bf16",
    });
    for (let trial = 0; trial < 50; trial++) {
      const v = Float32Array.from({ length: lanes }, rand);
      assert.equal(kernelTree(wgsl, v), parallelTree(v), `lanes ${lanes}, trial ${trial}`);
    }
  }
});

Deno.test("matvecTiling: lanes from the shape only; registers and workgroup memory bounded", () => {
  for (const [rows, cols] of [[4096, 1024], [1024, 1024], [1024, 2816], [64000, 1024], [45, 96]]) {
    for (const glu of [false, true]) {
      for (const storage of [16384, 32768, 49152]) {
        for (const nb of [1, 2, 4, 8, 16, 64]) {
          const t = matvecTiling(rows, cols, nb, false, glu, storage);
          assert.equal(t.lanes, lanesFor(rows, cols));
          assert.ok(t.nb >= 1 && t.nb <= 16 && t.nb <= nb);
          const products = glu ? 2 : 1;
          assert.ok(t.nb === 1 ? t.rpg === 1 : products * t.nb * t.rpg <= 64, "accumulators");
          const groups = 256 / t.lanes;
          const sums = products * t.nb * t.rpg + t.nb;
          assert.ok(t.round >= 1 && t.round <= sums);
          assert.equal(t.parts, t.round * (256 + groups));
          assert.ok((t.parts + sums * groups) * 4 <= storage, "workgroup memory");
          assert.equal(t.rowsPerWorkgroup, groups * t.rpg);
          const d = matvecTilingDefines(t, cols);
          assert.equal(d.CHUNKS, Math.ceil(cols / (8 * t.lanes)));
          // The rounds hold every sum.
          assert.equal(d.ROUNDS, Math.ceil(sums / t.round));
          assert.ok((t.rounds - 1) * t.round < sums && sums <= t.rounds * t.round);
        }
      }
    }
  }
  // Batch 1 keeps one row and sequence per lane group and the lanes' tree.
  const b1 = matvecTiling(4096, 1024, 1, false);
  assert.deepEqual([b1.nb, b1.rpg, b1.serial], [1, 1, false]);
  // Many sums per round go one per thread.
  assert.equal(matvecTiling(4096, 1024, 16, false, true, 49152).serial, true);
  // Software adapters: at most two sequences, one row, the lanes' tree.
  const sw = matvecTiling(4096, 1024, 16, true);
  assert.deepEqual([sw.lanes, sw.nb, sw.rpg, sw.serial], [32, 2, 1, false]);
});
