/**
 * Tile shapes of the prefill matrix product (`wgsl/gemm.wgsl`) and the register-tile code each one
 * needs, written out here (named accumulators, no private arrays indexed in loops, which a compiler
 * may put in local memory). Every tile sums each output over the inner dimension in order, in one
 * thread, so all tiles give the same numbers: the choice (`src/gpu/gemm_tune.ts`) only sets speed.
 * @module
 */

import type { Defines } from "./shaders.ts";

/** One tile shape: a workgroup computes `bm` tokens × `bn` rows, each thread `tm` × `tn`. */
export interface GemmTile {
  /** Tokens per workgroup tile (a multiple of 4·(bm/tm)). */
  readonly bm: number;
  /** Weight rows per workgroup tile. */
  readonly bn: number;
  /** Inner columns staged per step (8, 16 or 32: a multiple of 8 that divides a split, 32). */
  readonly bk: number;
  /** Tokens per thread (a multiple of 4). */
  readonly tm: number;
  /** Rows per thread (a multiple of 4). */
  readonly tn: number;
}

/** The tile shapes the autotuner chooses from (the first is the default without tuning). */
export const GEMM_TILES: readonly GemmTile[] = [
  { bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 },
  { bm: 128, bn: 128, bk: 8, tm: 8, tn: 8 },
  { bm: 128, bn: 128, bk: 16, tm: 8, tn: 8 },
  { bm: 128, bn: 64, bk: 16, tm: 8, tn: 4 },
  { bm: 64, bn: 128, bk: 16, tm: 4, tn: 8 },
  { bm: 64, bn: 64, bk: 32, tm: 4, tn: 4 },
  // bk 8 made the 128 × 128 tile the fastest on the H200 (27 against 19-20 TFLOP/s at bk 16).
  { bm: 128, bn: 64, bk: 8, tm: 8, tn: 4 },
  { bm: 64, bn: 128, bk: 8, tm: 4, tn: 8 },
];

/** A short name of a tile, e.g. `128x128x16/8x8`. */
export function tileName(t: GemmTile): string {
  return `${t.bm}x${t.bn}x${t.bk}/${t.tm}x${t.tn}`;
}

/** The tile a short name gives (`tileName`'s inverse), e.g. `128x128x16/8x8`. */
export function parseTile(name: string): GemmTile {
  const m = /^(\d+)x(\d+)x(\d+)\/(\d+)x(\d+)$/.exec(name.trim());
  if (!m) throw new Error(`gemm tile "${name}": expected BMxBNxBK/TMxTN, e.g. 128x128x8/8x8`);
  const [bm, bn, bk, tm, tn] = m.slice(1).map(Number);
  return { bm, bn, bk, tm, tn };
}

/** Threads per workgroup of a tile. */
export function gemmThreads(t: GemmTile): number {
  return (t.bm / t.tm) * (t.bn / t.tn);
}

/** Workgroup memory of a tile: two buffers (double-buffered) of bk × (bm + bn) floats. */
export function gemmWorkgroupBytes(t: GemmTile): number {
  return 2 * t.bk * (t.bm + t.bn) * 4;
}

/** The tiles a device can run (workgroup size and memory within its limits). */
export function gemmTilesFor(limits: GPUSupportedLimits): GemmTile[] {
  return GEMM_TILES.filter((t) =>
    gemmThreads(t) <= limits.maxComputeInvocationsPerWorkgroup &&
    gemmThreads(t) <= limits.maxComputeWorkgroupSizeX &&
    gemmWorkgroupBytes(t) <= limits.maxComputeWorkgroupStorageSize
  );
}

/**
 * Workgroups of a product of `rows` output rows by `tokens` tokens (`glu`: the SGLU pair, whose
 * tile covers bn/2 output rows of each matrix; `splits`: parts of the inner dimension, along z).
 */
export function gemmGroups(
  t: GemmTile,
  rows: number,
  tokens: number,
  glu = false,
  splits = 1,
): [number, number, number] {
  return [Math.ceil(rows / (glu ? t.bn / 2 : t.bn)), Math.ceil(tokens / t.bm), splits];
}

/**
 * Parts the inner dimension of a `rows` × `cols` product is summed in (then added in order by
 * `wgsl/gemm_reduce.wgsl`): 2 for at most 1,024 output rows and at least 512 columns, else 1.
 * A prefill chunk of such a product has few tiles (2,048 tokens × 1,024 rows are 128 tiles of
 * 128 × 128 for the H200's 132 SMs), and the halves double its workgroups. The split is part of
 * the numerics, so it is a function of the shape alone: every tile, chunk and device sums alike.
 */
export function gemmSplits(rows: number, cols: number): number {
  return rows <= 1024 && cols >= 512 ? 2 : 1;
}

/** Inner columns per split: a multiple of 32 (so of every tile's bk), the last part shorter. */
export function gemmSplitCols(cols: number, splits: number): number {
  return Math.ceil(cols / splits / 32) * 32;
}

/**
 * Whether the wide path applies: whole 8-column chunks of weights (one 16-byte load of bf16/f16)
 * and 4-float loads of the input (its stride, and so its offsets, multiples of 4).
 */
export function gemmVectorized(cols: number, inStride: number): boolean {
  return cols % 8 === 0 && inStride % 4 === 0;
}

/**
 * Defines of `wgsl/gemm.wgsl` for a tile (the generated register-tile code included). With `glu`
 * (the SGLU pair W, W2 in one product) the tile's bn weight rows interleave the two matrices by
 * fours (rows r, r+1 of W, then of W2): each vec4 of a thread's register block is two outputs'
 * pairs of sums, so the tile keeps its registers and memory and covers bn/2 output rows. With
 * `split` the tile sums one part of the inner dimension (`gemmSplits`) into a plane of partials.
 */
export function gemmTileDefines(t: GemmTile, vec: boolean, glu = false, split = false): Defines {
  const { bm, bn, bk, tm, tn } = t;
  if (tm % 4 || tn % 4 || bk % 8 || 32 % bk || bm % tm || bn % tn) {
    throw new Error(`gemm tile ${tileName(t)}: not a valid shape`);
  }
  if (glu && split) throw new Error("gemm: the SGLU pair is not split");
  const ntx = bn / tn, nty = bm / tm, wg = ntx * nty;
  const ca = tm / 4, cw = tn / 4;
  const decls: string[] = [];
  for (let i = 0; i < tm; i++) {
    for (let d = 0; d < cw; d++) decls.push(`  var acc_${i}_${d} = vec4<f32>(0.0);`);
  }
  // Inner step: this thread's tokens (ca vec4 of As) times its rows (cw vec4 of Ws).
  const fma: string[] = [];
  for (let c = 0; c < ca; c++) fma.push(`      let a${c} = As[ab + ${c * nty}u + ty];`);
  for (let d = 0; d < cw; d++) fma.push(`      let w${d} = Ws[wb + ${d * ntx}u + tx];`);
  for (let i = 0; i < tm; i++) {
    const a = `a${i >> 2}.${"xyzw"[i & 3]}`;
    for (let d = 0; d < cw; d++) fma.push(`      acc_${i}_${d} += ${a} * w${d};`);
  }
  // Staging: ceil(loads / threads) per thread, the last ones guarded.
  const nA = (bm * bk) / 4, nW = (bn * bk) / 8;
  const fetch: string[] = [], store: string[] = [], pro: string[] = [];
  for (let i = 0; i * wg < nA; i++) {
    const e = `tid + ${i * wg}u`;
    const guard = (i + 1) * wg > nA ? `${e} < ${nA}u` : "true";
    fetch.push(
      `    var pa${i} = vec4<f32>(0.0);`,
      `    if (more && ${guard}) { pa${i} = load_a(t0, k1, ${e}); }`,
    );
    store.push(`    if (more && ${guard}) { store_a(nxt, ${e}, pa${i}); }`);
    pro.push(`  if (${guard}) { store_a(0u, ${e}, load_a(t0, k_begin, ${e})); }`);
  }
  for (let i = 0; i * wg < nW; i++) {
    const e = `tid + ${i * wg}u`;
    const guard = (i + 1) * wg > nW ? `${e} < ${nW}u` : "true";
    fetch.push(
      `    var pw${i} = array<vec4<f32>, 2>(vec4<f32>(0.0), vec4<f32>(0.0));`,
      `    if (more && ${guard}) { pw${i} = load_w(r0, k1, ${e}); }`,
    );
    store.push(`    if (more && ${guard}) { store_w(nxt, ${e}, pw${i}[0], pw${i}[1]); }`);
    pro.push(
      `  if (${guard}) { let w = load_w(r0, k_begin, ${e}); store_w(0u, ${e}, w[0], w[1]); }`,
    );
  }
  const epi: string[] = [];
  for (let i = 0; i < tm; i++) {
    const tok = `t0 + ${(i >> 2) * 4 * nty + (i & 3)}u + ty * 4u`;
    // Block d covers tile rows (d·ntx + tx)·4..; with GLU, output rows (d·ntx + tx)·2..
    for (let d = 0; d < cw; d++) {
      const acc = `acc_${i}_${d}`;
      epi.push(
        glu
          ? `  out2_glu(${tok}, r0 + ${d * 2 * ntx}u + tx * 2u, ${acc}.xy, ${acc}.zw);`
          : `  out4(${tok}, r0 + ${d * 4 * ntx}u + tx * 4u, ${acc});`,
      );
    }
  }
  return {
    VEC: vec,
    GLU: glu,
    SPLIT: split,
    BM: bm,
    BN: bn,
    RN: glu ? bn / 2 : bn,
    BK: bk,
    NTX: ntx,
    NTY: nty,
    WG: wg,
    AS: (2 * bk * bm) / 4,
    WS: (2 * bk * bn) / 4,
    DECLS: decls.join("\n"),
    FMA: fma.join("\n"),
    FETCH: vec ? fetch.join("\n") : "",
    STORE: vec ? store.join("\n") : "",
    PROLOGUE: vec ? pro.join("\n") : "",
    EPILOGUE: epi.join("\n"),
  };
}
