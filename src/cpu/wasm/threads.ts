/**
 * The control block shared by a {@link WasmArena} and its kernel threads: a generation counter the
 * workers wait on, a done counter the caller waits on, the kernel to run, and per worker the
 * arguments of its block of rows. One linear at a time (the arena is not re-entrant).
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

/** Int32 indices of the shared header. */
export const CTRL = {
  /** Bumped (and notified) once per job; workers wait on it. */
  gen: 0,
  /** Workers that finished the current job. */
  done: 1,
  /** Kernel of the job: 0 f32, 1 bf16, 2 f16, 3 int8; -1 stops the workers. */
  fn: 2,
} as const;

/** Int32 offsets of one worker's arguments within its slot. */
export const THREAD_SLOT = {
  active: 0,
  w: 1,
  x: 2,
  b: 3,
  y: 4,
  out: 5,
  inp: 6,
  T: 7,
  s: 8,
  ys: 9,
  c: 10,
} as const;

const HEADER = 4, SLOT = 12;

/** Start of worker `index`'s slot. */
export function threadSlot(index: number): number {
  return HEADER + index * SLOT;
}

/** Bytes of a control block for `workers` workers. */
export function ctrlBytes(workers: number): number {
  return 4 * (HEADER + workers * SLOT);
}
