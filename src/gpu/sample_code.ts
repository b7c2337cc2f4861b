/**
 * Generated parts of the sampling kernel (`wgsl/sample.wgsl`). Its threshold searches test
 * `SAMPLE_SPLITS` thresholds per pass over the logits (a (SPLITS + 1)-ary search: one pass narrows
 * the bit-pattern interval SPLITS + 1 times, where a binary search halves it), reading
 * `SAMPLE_UNROLL` logits per thread per iteration. The per-threshold counts and masses live in
 * named scalars: a private array indexed in a loop can end up in slow local memory.
 * @module
 */

import type { Defines } from "./shaders.ts";

/** Logits per thread per iteration of the threshold searches (the kernel's UNROLL). */
export const SAMPLE_UNROLL = 8;

/** Thresholds tested per pass of the threshold searches (measured on the H200: README). */
export const SAMPLE_SPLITS = 3;

/** Threads per sequence the sampler prefers (measured on the H200: README). */
export const SAMPLE_THREADS = 1024;

/** The sampling kernel's shape: threads per sequence and thresholds per search pass. */
export interface SampleShape {
  /** Threads of the one workgroup per sequence (a power of two ≥ 256). */
  readonly threads: number;
  /** Thresholds per search pass (1 = binary search). */
  readonly splits: number;
}

/** Workgroup memory of the kernel: red_f, red_u (4 bytes × threads), red_k, bcast, bounds. */
export function sampleWorkgroupBytes(s: SampleShape): number {
  return 8 * s.threads + 4 * s.splits * (s.threads / 2) + 16 + 8;
}

/** The device limits that bound the sampling kernel's shape. */
export interface SampleLimits {
  /** Most invocations per workgroup. */
  readonly maxComputeInvocationsPerWorkgroup: number;
  /** Largest workgroup size in x. */
  readonly maxComputeWorkgroupSizeX: number;
  /** Workgroup memory in bytes. */
  readonly maxComputeWorkgroupStorageSize: number;
}

/** The most threads per sequence, up to SAMPLE_THREADS (at least 256), that fit with `splits`. */
export function sampleThreads(limits: SampleLimits, splits: number): number {
  let threads = SAMPLE_THREADS;
  while (
    threads > 256 &&
    (threads > limits.maxComputeInvocationsPerWorkgroup ||
      threads > limits.maxComputeWorkgroupSizeX ||
      sampleWorkgroupBytes({ threads, splits }) > limits.maxComputeWorkgroupStorageSize)
  ) threads /= 2;
  return threads;
}

/**
 * The preferred shape that fits the device: the most threads up to SAMPLE_THREADS the limits
 * allow, then the most splits up to SAMPLE_SPLITS that fit its workgroup memory.
 */
export function sampleShape(limits: SampleLimits): SampleShape {
  const threads = sampleThreads(limits, 1);
  let splits = SAMPLE_SPLITS;
  while (
    splits > 1 && sampleWorkgroupBytes({ threads, splits }) > limits.maxComputeWorkgroupStorageSize
  ) splits--;
  return { threads, splits };
}

/**
 * Defines of `wgsl/sample.wgsl` for a shape: WG, UNROLL, SPLITS, EXP (the weights, in place, and
 * the thread's share of their sum), KEPT (the kept mass and last kept id of the thread's range),
 * LOADS (the thread's logits, -1 past the end, which no threshold keeps), THRESHOLDS (t1..tS),
 * ZERO_COUNT/ZERO_MASS, COUNT (a_j += [w ≥ t_j]), MASS (a_j += w·[w ≥ t_j]), in the same order for
 * every threshold, and the first folding step of the workgroup reduction (FOLD_COUNT/FOLD_MASS:
 * upper half into `red_k`, lower half adds it).
 */
export function sampleDefines(shape: SampleShape): Defines {
  const { threads, splits } = shape;
  if (!Number.isInteger(splits) || splits < 1 || splits > 31) {
    throw new RangeError(`sample splits must be an integer in [1, 31], got ${splits}`);
  }
  if (![256, 512, 1024].includes(threads)) {
    throw new RangeError(`sample threads must be 256, 512 or 1024, got ${threads}`);
  }
  const us = [...Array(SAMPLE_UNROLL).keys()];
  const js = Array.from({ length: splits }, (_, i) => i + 1);
  const lines = (f: (j: number) => string, indent = 10) =>
    js.map((j) => " ".repeat(indent) + f(j)).join("\n");
  const slot = (j: number) => `red_k[${j - 1}u * HALF + tid`;
  const fold = (toBits: (x: string) => string, fromBits: (x: string) => string) =>
    [
      `        if (tid >= HALF) {`,
      lines((j) => `${slot(j)} - HALF] = ${toBits(`a${j}`)};`),
      `        }`,
      `        workgroupBarrier();`,
      `        if (tid < HALF) {`,
      lines((j) => `${slot(j)}] = ${toBits(`a${j} + ${fromBits(`${slot(j)}]`)}`)};`),
      `        }`,
      `        workgroupBarrier();`,
    ].join("\n");
  return {
    WG: threads,
    UNROLL: SAMPLE_UNROLL,
    SPLITS: splits,
    LOADS: us.map((u) =>
      `          let w${u} = select(-1.0, logits[base + min(i0 + ${u}u * WG, V - 1u)], ` +
      `i0 + ${u}u * WG < V);`
    ).join("\n"),
    THRESHOLDS: lines((j) => `let t${j} = bitcast<f32>(lo + ${j}u * step);`, 8),
    ZERO_COUNT: lines((j) => `var a${j} = 0u;`, 8),
    ZERO_MASS: lines((j) => `var a${j} = 0.0;`, 8),
    COUNT: us.flatMap((u) => js.map((j) => `          a${j} += select(0u, 1u, w${u} >= t${j});`))
      .join("\n"),
    MASS: us.flatMap((u) => js.map((j) => `          a${j} += select(0.0, w${u}, w${u} >= t${j});`))
      .join("\n"),
    EXP: us.map((u) =>
      [
        `      let e${u} = exp((logits[base + min(i0 + ${u}u * WG, V - 1u)] - zmax) / temp);`,
        `      if (i0 + ${u}u * WG < V) { logits[base + i0 + ${u}u * WG] = e${u}; total += e${u}; }`,
      ].join("\n")
    ).join("\n"),
    KEPT:
      us.map((u) =>
        `      let v${u} = select(-1.0, logits[base + min(i0 + ${u}u, V - 1u)], i0 + ${u}u < hi);`
      ).join("\n") + "\n" + us.map((u) =>
        [
          `      kept += select(0.0, v${u}, v${u} >= tau);`,
          `      lastk = select(lastk, i0 + ${u + 1}u, v${u} >= tau);`,
        ].join("\n")
      ).join("\n"),
    FOLD_COUNT: fold((x) => x, (x) => x),
    FOLD_MASS: fold((x) => `bitcast<u32>(${x})`, (x) => `bitcast<f32>(${x})`),
  };
}
