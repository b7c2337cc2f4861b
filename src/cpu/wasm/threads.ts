/**
 * The control block shared by a {@link WasmArena} and its kernel threads. A job is one kernel, its
 * integer arguments, and a number of chunks (blocks of output rows, or heads); every thread, the
 * caller included, claims chunks one at a time until none is left, so a thread that is slow to
 * wake (or descheduled on a busy host) takes fewer chunks instead of holding the others up. Which
 * thread computes a chunk never changes its numbers. One job at a time (not re-entrant).
 * @module
 */

import type { Activation } from "../../model/config.ts";
import { activate } from "../kernels.ts";

/**
 * A kernel export: `(w, x, b, y, out, in, T, scales, yStride, xScales)`, byte addresses and sizes
 * (int8: x is `quant_i16`'s rows and xScales their block scales; unused by the others).
 */
export type LinearFn = (
  w: number,
  x: number,
  b: number,
  y: number,
  out: number,
  inp: number,
  T: number,
  s: number,
  ys: number,
  c: number,
) => void;

/**
 * Kernels the threads run, by code: the four linears (f32, bf16, f16, int8), then the attention
 * kernels (prefill, decode step), whose arguments 6 and 7 are their range of heads.
 */
export const KERNELS = [
  "linear_f32",
  "linear_bf16",
  "linear_f16",
  "linear_i8",
  "lightning",
  "recurrent",
] as const;

/** Code of the prefill attention kernel in {@link KERNELS} (the first attention kernel). */
export const LIGHTNING = 4;

/** Code of the decode attention kernel in {@link KERNELS}. */
export const RECURRENT = 5;

/** Int32 indices of the control block. */
export const CTRL = {
  /** Bumped (and notified) once per job; idle workers wait on it. */
  gen: 0,
  /** chunks << 16 | next unclaimed chunk: claimed by compare-and-swap. */
  claim: 1,
  /** Chunks finished in the current job. */
  finished: 2,
  /** Index into {@link KERNELS} of the job; -1 stops the workers. */
  fn: 3,
  /** The job's arguments (see {@link chunkArgs}). */
  args: 4,
} as const;

/**
 * Job arguments of a linear past the kernel's own (see {@link chunkArgs}): what the thread that
 * computed a chunk does to its rows before it counts the chunk finished (element-wise, so which
 * thread does it never changes a bit), and the second matrix of a paired linear.
 */
export const LIN = {
  /** {@link EPILOGUE} code. */
  epilogue: 12,
  /** Index into {@link ACTIVATIONS} (epilogue "act"). */
  act: 13,
  /** Rows below which the activation applies (epilogue "act"). */
  actRows: 14,
  /** Second matrix, bias, output and int8 scales (epilogue "glu"): byte addresses. */
  w2: 15,
  b2: 16,
  y2: 17,
  s2: 18,
} as const;

/** Epilogues of a linear's chunk: none; the q/k activation; the SGLU gate of a paired linear. */
export const EPILOGUE = { none: 0, act: 1, glu: 2 } as const;

/** Activations by code (job argument {@link LIN}.act). */
export const ACTIVATIONS: readonly Activation[] = [
  "silu",
  "relu",
  "elu",
  "1+elu",
  "2+elu",
  "sigmoid",
  "gelu",
  "none",
];

/** Most integer arguments of a job. */
const MAX_ARGS = 20;

/** Bytes of a control block. */
export const CTRL_BYTES = 4 * (CTRL.args + MAX_ARGS);

/**
 * Milliseconds a thread spins on the control block before it sleeps in `Atomics.wait`. Short: on
 * a host whose cores are shared, a spinning thread takes the core from the one with work (this
 * 2-core machine at load 4.5, 385M bf16 decode b1 on 2 threads: 12-16 tok/s spinning 2 ms,
 * 20-24 spinning 0.05 ms).
 */
export const SPIN_MS = 0.05;

/**
 * The kernel arguments of chunk `i` (into `out`). Linears: job arguments `(w, x, b, y, out, in, T,
 * s, ys, c, rowBytes, rowsPerChunk)` then {@link LIN}'s, a chunk is a block of rows (slices of w,
 * b, s, y with y's full row stride; a paired linear's second call: `second`). Attention (prefill or decode): the kernel's own arguments with heads [0, n), a
 * chunk is a head.
 */
export function chunkArgs(
  c: Int32Array,
  fn: number,
  i: number,
  out: number[],
  second = false,
): void {
  const a = CTRL.args;
  if (fn >= LIGHTNING) {
    for (let j = 0; j < 15; j++) out[j] = c[a + j];
    out[6] = i;
    out[7] = i + 1;
    return;
  }
  const per = c[a + 11], rows = c[a + 4], r0 = i * per;
  const b = c[a + (second ? LIN.b2 : 2)], s = c[a + (second ? LIN.s2 : 7)];
  out[0] = c[a + (second ? LIN.w2 : 0)] + r0 * c[a + 10];
  out[1] = c[a + 1];
  out[2] = b ? b + 4 * r0 : 0;
  out[3] = c[a + (second ? LIN.y2 : 3)] + 4 * r0;
  out[4] = Math.min(per, rows - r0);
  out[5] = c[a + 5];
  out[6] = c[a + 6];
  out[7] = s ? s + 4 * r0 : 0;
  out[8] = c[a + 8];
  out[9] = c[a + 9];
}

/**
 * A linear's epilogue on rows [r0, r1) of its T tokens (outputs `ys` floats apart), on the
 * memory's f32 view; `y`, `y2` are float indices. "act": the activation on the rows below
 * `actRows`; "glu": y ← y ⊙ y2 (f32 products).
 */
export function epilogue(
  mem: Float32Array,
  kind: number,
  T: number,
  y: number,
  ys: number,
  r0: number,
  r1: number,
  act: number,
  actRows: number,
  y2: number,
): void {
  if (kind === EPILOGUE.act) {
    const end = Math.min(r1, actRows);
    if (end <= r0) return;
    for (let t = 0; t < T; t++) activate(ACTIVATIONS[act], mem, y + t * ys + r0, end - r0);
  } else if (kind === EPILOGUE.glu) {
    for (let t = 0; t < T; t++) {
      const p = y + t * ys, q = y2 + t * ys;
      for (let r = r0; r < r1; r++) mem[p + r] *= mem[q + r];
    }
  }
}

/**
 * Claim and run chunks of the current job until none is left (`mem`: the f32 view of the
 * kernels' memory, for the epilogues). After a successful claim the job cannot end (its chunk is
 * not finished), so the arguments read then are that job's.
 */
export function runChunks(
  c: Int32Array,
  fns: readonly ((...args: number[]) => void)[],
  args: number[],
  mem: Float32Array,
): void {
  const a = CTRL.args;
  for (;;) {
    const v = Atomics.load(c, CTRL.claim);
    if ((v & 0xffff) >= v >>> 16) return;
    if (Atomics.compareExchange(c, CTRL.claim, v, v + 1) !== v) continue;
    const fn = c[CTRL.fn], i = v & 0xffff;
    chunkArgs(c, fn, i, args);
    fns[fn](...args);
    const kind = fn < LIGHTNING ? c[a + LIN.epilogue] : EPILOGUE.none;
    if (kind !== EPILOGUE.none) {
      if (kind === EPILOGUE.glu) {
        chunkArgs(c, fn, i, args, true);
        fns[fn](...args);
      }
      const per = c[a + 11], r0 = i * per;
      epilogue(
        mem,
        kind,
        c[a + 6],
        c[a + 3] >> 2,
        c[a + 8] >> 2,
        r0,
        Math.min(c[a + 4], r0 + per),
        c[a + LIN.act],
        c[a + LIN.actRows],
        c[a + LIN.y2] >> 2,
      );
    }
    Atomics.add(c, CTRL.finished, 1);
    Atomics.notify(c, CTRL.finished);
  }
}
