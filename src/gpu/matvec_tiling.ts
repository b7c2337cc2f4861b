/**
 * Layout of the decode matrix-vector kernel (`wgsl/matvec.wgsl`): how many threads share a row,
 * how many rows and sequences one thread accumulates, and how the per-lane partial sums are
 * reduced. Only `lanes` (from the matrix shape alone) and the fixed pairing of the lane tree set
 * the numbers, so every other choice here is free to follow the batch size: decode stays
 * batch-invariant.
 * @module
 */

import type { Defines } from "./shaders.ts";

/** Threads per workgroup of the kernel. */
const WG = 256;

/** Batch size bucket → sequences per matvec workgroup. */
export function seqsPerWorkgroup(batch: number): number {
  return batch <= 1 ? 1 : batch <= 2 ? 2 : batch <= 4 ? 4 : batch <= 8 ? 8 : 16;
}

/**
 * Threads per output row of a matrix-vector product, from the matrix shape only (so results stay
 * batch-invariant): 32 wherever that still gives ~128 workgroups at batch 1 (one per SM of a large
 * GPU), more for short matrices, and no more lanes than 8-wide chunks in a row. On the H200 32
 * lanes matched 128 at batch 1 on 1024 × 1024 and 1024 × 2816 (±0.8 µs) and were 1.45-1.6× faster
 * at batch 64 (bench/matvec_micro.ts), where the lane tree costs a share of the work.
 */
export function lanesFor(rows: number, cols: number, maxLanes = WG): number {
  const pow2 = (n: number) => 1 << Math.ceil(Math.log2(Math.max(1, n)));
  const forWorkgroups = pow2(Math.ceil((WG * 128) / Math.max(1, rows)));
  return Math.max(32, Math.min(maxLanes, forWorkgroups, pow2(Math.ceil(cols / 8))));
}

/**
 * The lane tree as one WGSL expression over `parts[q + l]`, l < lanes: the value that the
 * stride-halving tree (pairs (l, l + s) for s = lanes/2, ..., 1) leaves in lane 0, with the very
 * same additions, so one thread can reduce a sum without barriers and get the same bits.
 *   V_lanes[l] = p(l);  V_s[l] = V_2s[l] + V_2s[l + s];  result = V_1[0].
 */
export function laneTreeExpression(lanes: number): string {
  const expr = (l: number, s: number): string =>
    s === lanes ? `parts[q + ${l}u]` : `(${expr(l, 2 * s)} + ${expr(l + s, 2 * s)})`;
  return expr(0, 1);
}

/** How a matrix-vector dispatch is laid out (see wgsl/matvec.wgsl). */
export interface MatvecTiling {
  /** Products of W and of W2 (SGLU): two sums per output. */
  glu: boolean;
  /** Threads per row (sets the summation order: from the matrix shape only). */
  lanes: number;
  /** Sequences per workgroup. */
  nb: number;
  /** Rows per lane group. */
  rpg: number;
  /** Partial sums reduced per round through workgroup memory. */
  round: number;
  /**
   * Reduce each sum in one thread (the tree as an expression; for many sums per round) instead of
   * all lanes stepping through the tree together (for few sums). Same bits either way.
   */
  serial: boolean;
  /**
   * Reduce the sums with a subgroup butterfly instead of workgroup memory (when the lanes of a
   * group fit in one subgroup): the very additions of the tree, with no barrier per level and
   * about one shuffle per sum and lane (see `butterfly`). Same bits.
   */
  subgroup: boolean;
  /** f32 partial sums in workgroup memory (`round` sums of 256 + groups floats). */
  parts: number;
  /** Rows per workgroup. */
  rowsPerWorkgroup: number;
}

/**
 * Matvec tiling for an adapter. `nb` and `rpg` trade registers (at most 64 accumulators per
 * thread) for reuse of each weight and input load; the sums go through workgroup memory
 * (`storageBytes`, the adapter's limit) in rounds; `gate`: the input is gated (fewer sequences per
 * thread at large batches). Software adapters get the smallest arrays
 * (llvmpipe's GL path compiles large ones very slowly). `shape` overrides `nb` and `rpg`
 * (benchmarks of other layouts).
 */
export function matvecTiling(
  rows: number,
  cols: number,
  nb: number,
  fallback: boolean,
  glu = false,
  storageBytes = 16384,
  shape?: { nb: number; rpg: number; lanes?: number },
  subgroupSize = 0,
  gate = false,
): MatvecTiling {
  const lanes = shape?.lanes ?? (fallback ? 32 : lanesFor(rows, cols));
  const groups = WG / lanes;
  const products = glu ? 2 : 1;
  let n = Math.max(1, Math.min(nb, fallback ? 2 : 8));
  let rpg = 1;
  if (shape) {
    [n, rpg] = [shape.nb, shape.rpg];
  } else {
    // Measured on the H200 at batch 64 (bench/matvec_micro.ts): 8 sequences × 8 rows per thread
    // beat 16 × 4 by 1.3× (fewer loads per product); with the butterfly reduction the SGLU pair
    // too, 8 × 8 (128 sums) against 8 × 4: 36.9 against 44.0 µs on 2816 × 1024 (2026-12-05).
    // Fewer rows for small batches, which are bound by memory and want more workgroups.
    // A gated input (out_proj: u ⊙ o) doubles the input loads per sequence: 4 sequences × 8 rows
    // beat 8 × 8 by 16-19% at batch 64 (1024 × 1024: 12.1 against 14.3 µs, 2026-12-05).
    const gated = !fallback && gate && nb >= 16;
    if (gated) n = 4;
    const maxRpg = n >= 8 || gated ? 8 : 4;
    const maxSums = glu && nb >= 16 ? 128 : 64;
    while (!fallback && n > 1 && rpg < maxRpg && products * n * (rpg + 1) <= maxSums) rpg++;
    // Batch 1 on wide matrices at least as tall as wide (the 7B shape's projections but its down
    // projection, and its head): two rows per lane group, 4-15% faster on the H200 (4096 × 4096:
    // 8.2 against 9.6 µs; 4096 × 11008 was 3% slower with two).
    if (!fallback && n === 1 && cols >= 4096 && rows >= cols) rpg = 2;
  }
  const sums = products * n * rpg + n;
  // Workgroup memory: `round` sums of 256 + groups floats, plus every reduced sum of every group.
  const stride = WG + groups;
  const maxRound = Math.floor((storageBytes / 4 - sums * groups) / stride);
  if (maxRound < 1) {
    throw new Error(`matvec: ${storageBytes} bytes of workgroup memory cannot hold ${sums} sums`);
  }
  const rounds = Math.ceil(sums / Math.min(sums, maxRound));
  const round = Math.ceil(sums / rounds);
  const serial = !fallback && round * groups >= 32;
  const subgroup = !fallback && subgroupSize >= lanes;
  return {
    glu,
    lanes,
    nb: n,
    rpg,
    round,
    serial,
    subgroup,
    parts: subgroup ? 1 : round * stride,
    rowsPerWorkgroup: groups * rpg,
  };
}

/**
 * The lane tree of every sum as a subgroup butterfly (the lanes of a group are consecutive
 * invocations of one subgroup, checked when the device is acquired: src/gpu/device.ts). At level
 * s = lanes/2, ..., 1 lane m and lane m ^ s hold the same list of sums; while the list has an even
 * length c they split it: the lower lane keeps the first half and the upper lane the second, each
 * sends the other half and adds what it receives (c/2 shuffles per lane instead of c), so
 * V_s[l] = V_2s[l] + V_2s[l + s] is computed once, by whichever lane keeps that sum. An odd list is
 * added whole across the pair. Additions are commutative in IEEE arithmetic, so every sum gets the
 * bits of the stride-halving tree; in the end each lane holds the sums at `base` + i, and the lanes
 * whose bits of the unsplit levels are clear write them. Every lane takes part in every shuffle
 * (uniform control flow). Returns the WGSL lines (ending with a barrier).
 */
function butterfly(sums: string[], lanes: number): string[] {
  const out = [`  var base = 0u;`];
  let cur = sums;
  const whole: number[] = [];
  for (let s = lanes >> 1, level = 0; s > 0; s >>= 1, level++) {
    const c = cur.length;
    if (c % 2 === 0) {
      const h = c / 2;
      out.push(`  let up${level} = (lane & ${s}u) != 0u;`);
      out.push(`  base += select(0u, ${h}u, up${level});`);
      cur = cur.slice(0, h).map((a, i) => {
        const b = cur[h + i], v = `b${level}_${i}`;
        out.push(
          `  let ${v} = select(${a}, ${b}, up${level}) + ` +
            `subgroupShuffleXor(select(${b}, ${a}, up${level}), ${s}u);`,
        );
        return v;
      });
    } else {
      whole.push(s);
      cur = cur.map((a, i) => {
        const v = `b${level}_${i}`;
        out.push(`  let ${v} = ${a} + subgroupShuffleXor(${a}, ${s}u);`);
        return v;
      });
    }
  }
  const mask = whole.reduce((m, s) => m | s, 0);
  out.push(`  if ((lane & ${mask}u) == 0u) {`);
  cur.forEach((v, i) => out.push(`    red[(base + ${i}u) * GROUPS + grp] = ${v};`));
  out.push(`  }`, `  workgroupBarrier();`);
  return out;
}

/**
 * The kernel defines of a tiling for a matrix of `cols` columns: the layout constants (the kernel
 * unrolls its loops over rows and sequences by NB and RPG) and the generated reduction (ROUNDS:
 * the loop over rounds and sums written out, see wgsl/matvec.wgsl). The additions are the ones the
 * loops would make, in the same order.
 */
export function matvecTilingDefines(t: MatvecTiling, cols: number): Defines {
  const { nb: NB, rpg: RPG, round: ROUND } = t;
  const rows = [...Array(RPG).keys()], seqs = [...Array(NB).keys()];
  const pairs = rows.flatMap((r) => seqs.map((j) => [r, j] as const));
  // Every sum in kernel order: products of W (o = r·NB + j), of W2, then squares of each input.
  const sums = [
    ...pairs.map(([r, j]) => `a_${r}_${j}`),
    ...(t.glu ? pairs.map(([r, j]) => `g_${r}_${j}`) : []),
    ...seqs.map((j) => `s_${j}`),
  ];

  const rounds: string[] = t.subgroup ? butterfly(sums, t.lanes) : [];
  for (let r0 = 0; r0 < (t.subgroup ? 0 : sums.length); r0 += ROUND) {
    const n = Math.min(ROUND, sums.length - r0);
    for (let k = 0; k < n; k++) rounds.push(`  parts[${k}u * PS + slot] = ${sums[r0 + k]};`);
    rounds.push(`  workgroupBarrier();`);
    if (t.serial) {
      rounds.push(
        `  for (var t = tid; t < ${n}u * GROUPS; t += WG) {`,
        `    let k = t / GROUPS;`,
        `    let g = t % GROUPS;`,
        `    let q = k * PS + g * (LANES + 1u);`,
        `    red[(${r0}u + k) * GROUPS + g] = ${laneTreeExpression(t.lanes)};`,
        `  }`,
      );
    } else {
      rounds.push(
        `  for (var s = LANES / 2u; s > 0u; s = s / 2u) {`,
        `    if (lane < s) {`,
        `      for (var k = 0u; k < ${n}u; k++) {`,
        `        parts[k * PS + slot] = parts[k * PS + slot] + parts[k * PS + slot + s];`,
        `      }`,
        `    }`,
        `    workgroupBarrier();`,
        `  }`,
        `  if (lane == 0u) {`,
        `    for (var k = 0u; k < ${n}u; k++) { red[(${r0}u + k) * GROUPS + grp] = parts[k * PS + slot]; }`,
        `  }`,
      );
    }
    rounds.push(`  workgroupBarrier();`);
  }

  return {
    LANES: t.lanes,
    NB,
    RPG,
    ROUND,
    PARTS: t.parts,
    CHUNKS: Math.ceil(cols / (8 * t.lanes)),
    ROUNDS: rounds.join("\n"),
  };
}
