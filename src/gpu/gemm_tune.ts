/**
 * The prefill GEMM's autotuner: for each weight shape of a model, every tile the device can run
 * (`gemmTilesFor`) is timed on that shape with timestamp queries (after an untimed warm-up that
 * raises the clocks of an idle GPU, in interleaved rounds) and the fastest kept, cached by
 * adapter and shape for the life of the process. It runs while a model loads (`GpuPrefill.create`),
 * never at request time. Every tile gives the same numbers (see `src/gpu/gemm_tiling.ts`), so the
 * choice changes speed only. Without timestamp queries, or on a software adapter, the default tile
 * is used untimed.
 * @module
 */

import type { GpuContext } from "./device.ts";
import { GEMM_TILES, type GemmTile, gemmTilesFor } from "./gemm_tiling.ts";
import type { PipelineCache } from "./shaders.ts";
import { timePasses } from "./timing.ts";
import { dtypeBytes, type GpuDType, type GpuMatrix } from "./weights.ts";
import { GpuResources } from "./resources.ts";
import { encodeOps, gemmOps, gemmSplitParts, type Op } from "./ops/mod.ts";

/** A product to tune for: `tokens` × [rows, cols] weights of a dtype. */
export interface GemmShape {
  /** Weight rows (of one binding chunk). */
  readonly rows: number;
  /** Weight columns (the inner dimension). */
  readonly cols: number;
  /** Weight dtype. */
  readonly dtype: GpuDType;
  /** Tokens per product (the prefill chunk capacity). */
  readonly tokens: number;
  /** The SGLU pair (two matrices of this shape in one product). */
  readonly glu?: boolean;
}

/** What tuning found for one shape: the chosen tile and each tile's time in µs. */
export interface GemmTuneResult {
  /** The fastest tile. */
  readonly tile: GemmTile;
  /** Best time of each tile timed, in µs, in `GEMM_TILES` order of those the device runs. */
  readonly times: readonly { tile: GemmTile; us: number }[];
}

const cache = new Map<string, GemmTuneResult>();

/** GPU work before the timed rounds, so the clocks have risen (ms). */
const WARM_UP_MS = 100;
/** At most this many untimed rounds of all tiles (small shapes). */
const MAX_WARM_UP_ROUNDS = 50;
/** Dispatches of a tile per timed pass. */
const REPS = 2;

/** The cache key of a shape on an adapter. */
export function gemmTuneKey(adapter: string, s: GemmShape): string {
  return `${adapter}|${s.rows}x${s.cols}|${s.dtype}|${s.tokens}${s.glu ? "|glu" : ""}`;
}

/** Whether tiles are timed on this device (timestamp queries on a hardware adapter). */
export function canTune(ctx: GpuContext): boolean {
  return ctx.device.features.has("timestamp-query") && !ctx.info.fallback;
}

/**
 * The tile for `shape`: the cached choice, else (when `canTune`) the fastest of the device's tiles
 * timed now, else the default tile.
 */
export async function gemmTileFor(
  ctx: GpuContext,
  pipelines: PipelineCache,
  shape: GemmShape,
  rounds = 3,
): Promise<GemmTile> {
  if (!canTune(ctx)) return GEMM_TILES[0];
  return (await tuneGemm(ctx, pipelines, shape, rounds)).tile;
}

/**
 * Time every tile the device runs on `shape` (best of `rounds`), cached by adapter and shape.
 * `candidates` (benchmarks) replaces the tile list; such a tuning is neither cached nor reused.
 */
export async function tuneGemm(
  ctx: GpuContext,
  pipelines: PipelineCache,
  shape: GemmShape,
  rounds = 3,
  candidates?: readonly GemmTile[],
): Promise<GemmTuneResult> {
  const key = gemmTuneKey(ctx.info.description, shape);
  const hit = candidates ? undefined : cache.get(key);
  if (hit) return hit;
  const dev = ctx.device;
  const { rows, cols, dtype, tokens, glu } = shape;
  const usage = GPUBufferUsage.STORAGE;
  const a = dev.createBuffer({ size: Math.max(16, tokens * cols * 4), usage });
  const w = dev.createBuffer({
    size: Math.max(16, Math.ceil((rows * cols * dtypeBytes(dtype)) / 16) * 16),
    usage,
  });
  const scales = dev.createBuffer({ size: Math.max(16, rows * 4), usage });
  const y = dev.createBuffer({ size: Math.max(16, tokens * rows * 4), usage });
  // A split shape (a function of rows × cols, so of the key) writes partial sums first.
  const partBytes = glu ? 0 : gemmSplitParts(rows, cols, tokens);
  const parts = partBytes ? dev.createBuffer({ size: partBytes, usage }) : undefined;
  // The tune's own resources: uniform blocks and bind groups of the candidate ops.
  const res = new GpuResources(dev);
  const matrix: GpuMatrix = {
    dtype,
    rows,
    cols,
    chunks: [{ buffer: w, rowBase: 0, rows }],
    scales: dtype === "q8" ? scales : null,
  };
  try {
    const tiles = candidates ?? gemmTilesFor(dev.limits);
    // `ctl` is not read by the GEMM; any buffer stands for it.
    const t = { m: { pipelines, ctx, ctl: y }, res };
    const runs: { op: Op; tile: GemmTile }[] = [];
    for (const tile of tiles) {
      const [op] = await gemmOps(t, {
        label: "gemm.tune",
        w: matrix,
        // The SGLU pair reads one matrix twice: the same work as two.
        w2: glu ? matrix : undefined,
        input: { buffer: a, stride: cols },
        out: { buffer: y, stride: rows },
        tile,
        parts,
      });
      res.writeUniform(op.params, op.words(tokens, 0, 0));
      runs.push({ op, tile });
    }
    // An idle GPU runs at low clocks (an H200 at 345 MHz) until it has worked a while: a first
    // round, timed, sizes an untimed warm-up of about WARM_UP_MS of these tiles, encoded right
    // before the timed rounds. Rounds interleave the tiles so clocks and caches treat them alike;
    // each pass runs its tile REPS times; round k starts at tile k (no tile is always first or
    // last); the best round of each tile is kept.
    const count = runs.length;
    const tileAt = (i: number) => (i + Math.floor(i / count)) % count;
    const once = async (n: number, reps: number, warm = 0) =>
      await timePasses(
        dev,
        n,
        (pass, i) => {
          for (let r = 0; r < reps; r++) encodeOps(pass, [runs[tileAt(i)].op], tokens);
        },
        (enc, i) => {
          if (i > 0 || warm === 0) return;
          const pass = enc.beginComputePass();
          for (let r = 0; r < warm; r++) encodeOps(pass, runs.map((x) => x.op), tokens);
          pass.end();
        },
      );
    const roundNs = (await once(runs.length, 1)).reduce((a, b) => a + b, 0);
    const warm = Math.min(MAX_WARM_UP_ROUNDS, Math.ceil((WARM_UP_MS * 1e6) / Math.max(1, roundNs)));
    const ns = await once(runs.length * rounds, REPS, warm);
    const best = runs.map(() => Infinity);
    ns.forEach((t, i) => best[tileAt(i)] = Math.min(best[tileAt(i)], t / 1000 / REPS));
    const times = runs.map((r, j) => ({ tile: r.tile, us: best[j] }));
    const fastest = times.reduce((b, t) => (t.us < b.us ? t : b));
    const result = { tile: fastest.tile, times };
    if (!candidates) cache.set(key, result);
    return result;
  } finally {
    for (const b of [a, w, scales, y, parts]) b?.destroy();
    res.destroy();
  }
}
