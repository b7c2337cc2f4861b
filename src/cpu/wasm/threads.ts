/**
 * The control block shared by a {@link WasmArena} and its kernel threads. A job is one kernel, its
 * integer arguments, and a number of chunks (blocks of output rows, or heads); every thread, the
 * caller included, claims chunks one at a time until none is left, so a thread that is slow to
 * wake (or descheduled on a busy host) takes fewer chunks instead of holding the others up. Which
 * thread computes a chunk never changes its numbers. One job at a time (not re-entrant).
 * @module
 */

/**
 * A kernel export: `(w, x, b, y, out, in, T, scales, yStride, xScales)`, byte addresses and sizes
 * (int8: x is `quant_x`'s digit rows and xScales their block scales; unused by the others).
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

/** Most integer arguments of a job. */
const MAX_ARGS = 16;

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
 * s, ys, c, rowBytes, rowsPerChunk)`, a chunk is a block of rows (slices of w, b, s, y with y's
 * full row stride). Attention (prefill or decode): the kernel's own arguments with heads [0, n), a
 * chunk is a head.
 */
export function chunkArgs(c: Int32Array, fn: number, i: number, out: number[]): void {
  const a = CTRL.args;
  if (fn >= LIGHTNING) {
    for (let j = 0; j < 15; j++) out[j] = c[a + j];
    out[6] = i;
    out[7] = i + 1;
    return;
  }
  const per = c[a + 11], rows = c[a + 4], r0 = i * per;
  const b = c[a + 2], s = c[a + 7];
  out[0] = c[a] + r0 * c[a + 10];
  out[1] = c[a + 1];
  out[2] = b ? b + 4 * r0 : 0;
  out[3] = c[a + 3] + 4 * r0;
  out[4] = Math.min(per, rows - r0);
  out[5] = c[a + 5];
  out[6] = c[a + 6];
  out[7] = s ? s + 4 * r0 : 0;
  out[8] = c[a + 8];
  out[9] = c[a + 9];
}

/**
 * Claim and run chunks of the current job until none is left. After a successful claim the job
 * cannot end (its chunk is not finished), so the arguments read then are that job's.
 */
export function runChunks(
  c: Int32Array,
  fns: readonly ((...args: number[]) => void)[],
  args: number[],
): void {
  for (;;) {
    const v = Atomics.load(c, CTRL.claim);
    if ((v & 0xffff) >= v >>> 16) return;
    if (Atomics.compareExchange(c, CTRL.claim, v, v + 1) !== v) continue;
    const fn = c[CTRL.fn];
    chunkArgs(c, fn, v & 0xffff, args);
    fns[fn](...args);
    Atomics.add(c, CTRL.finished, 1);
    Atomics.notify(c, CTRL.finished);
  }
}
