/**
 * The shape of the sampling kernel (`wgsl/sample.wgsl`). Its threshold searches test
 * `SAMPLE_SPLITS` thresholds per pass over the logits (a (SPLITS + 1)-ary search: one pass narrows
 * the bit-pattern interval SPLITS + 1 times, where a binary search halves it), reading
 * `SAMPLE_UNROLL` logits per thread per iteration. The kernel unrolls its loops over thresholds and
 * logits as text (`//#for`, src/gpu/shaders.ts), so the per-threshold counts and masses live in
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

/**
 * Most values the threshold searches compact into workgroup memory (a power of two): once the
 * values at or above a search interval's lower end number at most this many, later passes read
 * them there instead of the whole vocabulary. Fewer than `MIN_CANDIDATES` fit: no compaction.
 */
export const SAMPLE_CANDIDATES = 4096;

/** The smallest compaction buffer worth having. */
const MIN_CANDIDATES = 256;

/**
 * The sampling kernel's shape: threads per sequence, thresholds per search pass and the capacity
 * of the compaction buffer.
 */
export interface SampleShape {
  /** Threads of the one workgroup per sequence (a power of two ≥ 256). */
  readonly threads: number;
  /** Thresholds per search pass (1 = binary search). */
  readonly splits: number;
  /** Values the searches may compact into workgroup memory (0: never; default 0). */
  readonly candidates?: number;
}

/**
 * Workgroup memory of the kernel: red_f, red_u (4 bytes × threads), red_k (splits + 1 sums per
 * pair of threads), the compaction buffer, bcast, bounds and two flags.
 */
export function sampleWorkgroupBytes(s: SampleShape): number {
  return 8 * s.threads + 4 * (s.splits + 1) * (s.threads / 2) + 4 * (s.candidates ?? 0) + 16 +
    16 + 8;
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
 * allow, then the most splits up to SAMPLE_SPLITS that fit its workgroup memory, then the largest
 * compaction buffer up to SAMPLE_CANDIDATES that fits beside them (none below 256 values). Fields
 * of `fixed` are kept as given (benchmarks and tests).
 */
export function sampleShape(limits: SampleLimits, fixed: Partial<SampleShape> = {}): SampleShape {
  const bytes = limits.maxComputeWorkgroupStorageSize;
  const threads = fixed.threads ?? sampleThreads(limits, 1);
  let splits = fixed.splits ?? SAMPLE_SPLITS;
  while (
    fixed.splits === undefined && splits > 1 && sampleWorkgroupBytes({ threads, splits }) > bytes
  ) {
    splits--;
  }
  if (fixed.candidates !== undefined) return { threads, splits, candidates: fixed.candidates };
  let candidates = SAMPLE_CANDIDATES;
  while (
    candidates >= MIN_CANDIDATES && sampleWorkgroupBytes({ threads, splits, candidates }) > bytes
  ) candidates /= 2;
  return { threads, splits, candidates: candidates >= MIN_CANDIDATES ? candidates : 0 };
}

/**
 * Defines of `wgsl/sample.wgsl` for a shape: WG (threads per sequence), UNROLL (logits per thread
 * per search iteration) and SPLITS (thresholds per search pass), the bounds of its unrolled loops,
 * and COMPACT with CAND (the compaction buffer's capacity) where it has one.
 */
export function sampleDefines(shape: SampleShape): Defines {
  const { threads, splits } = shape;
  const candidates = shape.candidates ?? 0;
  if (!Number.isInteger(candidates) || candidates < 0) {
    throw new RangeError(`sample candidates must be a non-negative integer, got ${candidates}`);
  }
  if (!Number.isInteger(splits) || splits < 1 || splits > 31) {
    throw new RangeError(`sample splits must be an integer in [1, 31], got ${splits}`);
  }
  if (![256, 512, 1024].includes(threads)) {
    throw new RangeError(`sample threads must be 256, 512 or 1024, got ${threads}`);
  }
  return {
    WG: threads,
    UNROLL: SAMPLE_UNROLL,
    SPLITS: splits,
    COMPACT: candidates > 0,
    CAND: candidates,
  };
}
