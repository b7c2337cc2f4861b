/**
 * The control block shared by a {@link WasmArena} and its kernel threads: a generation counter the
 * workers wait on, a done counter the caller waits on, the kernel to run, and per worker the
 * integer arguments of its share of the job. One job at a time (the arena is not re-entrant).
 * @module
 */

/**
 * A kernel export: `(w, x, b, y, out, in, T, scales, yStride, xScales)`, byte addresses and sizes
 * (int8: x is `quant_i16`'s int16 rows and xScales their block scales; unused by the others).
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

/** Kernels the threads run, by code: the four linears (f32, bf16, f16, int8), then attention. */
export const KERNELS = [
  "linear_f32",
  "linear_bf16",
  "linear_f16",
  "linear_i8",
  "lightning",
] as const;

/** Int32 indices of the shared header. */
export const CTRL = {
  /** Bumped (and notified) once per job; workers wait on it. */
  gen: 0,
  /** Workers that finished the current job. */
  done: 1,
  /** Index into {@link KERNELS} of the job; -1 stops the workers. */
  fn: 2,
} as const;

/** Most integer arguments of one kernel call. */
export const MAX_ARGS = 15;

/** A worker's slot: a flag (0: nothing to do this job), then the arguments of its call. */
const HEADER = 4, SLOT = 1 + MAX_ARGS;

/** Start of worker `index`'s slot (its flag; the arguments follow). */
export function threadSlot(index: number): number {
  return HEADER + index * SLOT;
}

/** Bytes of a control block for `workers` workers. */
export function ctrlBytes(workers: number): number {
  return 4 * (HEADER + workers * SLOT);
}
