/**
 * Layout of the fused SGLU + down projection of decode (`wgsl/glu_down.wgsl`): rows of g per
 * workgroup and the grouping of the two-level sum of the down projection's partials. Every choice
 * follows the matrix shape only, so each sequence's sums are the same at every batch size.
 * @module
 */

import type { Defines } from "./shaders.ts";

/** Sequences per workgroup of the kernel (fixed in its WGSL). */
export const GLU_DOWN_SEQS = 4;

/** How a fused SGLU + down projection dispatch is laid out. */
export interface GluDownTiling {
  /** Rows of g per workgroup (a multiple of 8 dividing 256). */
  rows: number;
  /** Workgroups along x: ceil(G / rows). */
  workgroups: number;
  /** Workgroups per group of the first sum. */
  fanIn: number;
  /** Groups: ceil(workgroups / fanIn). */
  groups: number;
}

/**
 * The layout for D = `dim` and G = `glu`: 16 rows of g per workgroup (32 where that still leaves
 * 128 workgroups, one per SM of a large GPU; 8 for small matrices), and groups of about
 * √workgroups, so that neither sum reads much more than the other.
 */
export function gluDownTiling(dim: number, glu: number): GluDownTiling {
  void dim;
  const rows = glu >= 32 * 128 ? 32 : glu >= 16 * 64 ? 16 : 8;
  const workgroups = Math.ceil(glu / rows);
  const fanIn = Math.max(1, Math.ceil(Math.sqrt(workgroups)));
  return { rows, workgroups, fanIn, groups: Math.ceil(workgroups / fanIn) };
}

/** Whether the kernel takes a matrix pair of this shape (8-column chunks throughout). */
export function gluDownFits(dim: number, glu: number): boolean {
  return dim % 8 === 0 && glu % 8 === 0;
}

/** Scratch bytes for `batch` sequences: partials, group sums and the counters. */
export function gluDownScratch(
  t: GluDownTiling,
  dim: number,
  batch: number,
): { parts: number; sums: number; counters: number } {
  return {
    parts: batch * t.workgroups * dim * 4,
    sums: batch * t.groups * dim * 4,
    counters: Math.ceil(batch / GLU_DOWN_SEQS) * (t.groups + 1) * 4,
  };
}

/** The kernel defines of a layout for D = `dim`. */
export function gluDownDefines(t: GluDownTiling, dim: number): Defines {
  const lanes = 256 / t.rows;
  return {
    R: t.rows,
    CHUNKS: Math.ceil(dim / (8 * lanes)),
    NWG: t.workgroups,
    F: t.fanIn,
    NG: t.groups,
    RPT: Math.ceil(dim / 256),
  };
}
