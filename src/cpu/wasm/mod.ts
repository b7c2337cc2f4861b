/**
 * WebAssembly SIMD kernels of the CPU backend, and the arena their operands live in.
 *
 * A {@link WasmArena} owns one `WebAssembly.Memory`, sized once and never grown (so the typed-array
 * views it hands out never detach). Weights, activations and scratch buffers are allocated in it;
 * {@link WasmArena.linear} then runs `y = x·Wᵀ + b` on those views without copying, with weights
 * in their stored precision: f32, bf16 or f16 (u16 storage), or int8 with per-row scales.
 *
 * ```ts
 * if (WasmArena.supported()) {
 *   const arena = new WasmArena(64 << 20);
 *   const w = arena.allocF32(out * inDim); // fill in place: w.set(weights)
 *   const x = arena.allocF32(T * inDim), y = arena.allocF32(T * out);
 *   arena.linear(x, T, w, null, out, inDim, y);
 * }
 * ```
 * Numerics: the kernel multiplies and accumulates in f32 (4 lanes of partial sums per row, in an
 * order that does not depend on T), so it differs from the JS reference `linear` (f64
 * accumulation) by rounding only; 16-bit weights are widened exactly, int8 to ŵ = q·s (one
 * correctly rounded f32 product, as on the GPU).
 * @module
 */

import { TnlError } from "../../errors.ts";
import { KERNELS_WASM_BASE64 } from "./kernels_wasm.ts";
import type { StoredMatrix } from "../stored.ts";

/** What went wrong with an arena call. */
export type WasmArenaErrorReason = "out_of_memory" | "foreign_view" | "bad_argument";

/** Misuse of a {@link WasmArena} (a programming error, so its code is `internal`). */
export class WasmArenaError extends TnlError {
  /** Create an error; `reason` says which rule was broken. */
  constructor(readonly reason: WasmArenaErrorReason, detail: string) {
    super("internal", `wasm arena: ${detail}`);
    this.name = "WasmArenaError";
  }
}

/** Bytes of one WebAssembly page. */
const PAGE = 65536;
/** Every allocation starts on a cache line; address 0 is never handed out (it means "no bias"). */
const ALIGN = 64;

/** `linear_<dtype>(w, x, b, y, out, in, T, scales)`: byte addresses and sizes. */
type LinearFn = (
  w: number,
  x: number,
  b: number,
  y: number,
  out: number,
  inp: number,
  T: number,
  s: number,
) => void;

interface KernelExports {
  linear_f32: LinearFn;
  linear_bf16: LinearFn;
  linear_f16: LinearFn;
  linear_i8: LinearFn;
}

let bytesCache: Uint8Array<ArrayBuffer> | null = null;
let moduleCache: WebAssembly.Module | null = null;
let supportedCache: boolean | null = null;

function kernelBytes(): Uint8Array<ArrayBuffer> {
  if (!bytesCache) {
    const s = atob(KERNELS_WASM_BASE64);
    const b = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) b[i] = s.charCodeAt(i);
    bytesCache = b;
  }
  return bytesCache;
}

function kernelModule(): WebAssembly.Module {
  moduleCache ??= new WebAssembly.Module(kernelBytes());
  return moduleCache;
}

/**
 * Round f32 values to bf16 (round to nearest even; NaN stays NaN), writing the raw u16 into `dst`
 * (at least `src.length` long). Returns true when every value was exact, as it is for weights that
 * were bf16 in the checkpoint and widened on load.
 */
export function f32ToBf16(src: Float32Array, dst: Uint16Array): boolean {
  if (dst.length < src.length) {
    throw new WasmArenaError(
      "bad_argument",
      `f32ToBf16: destination holds ${dst.length} values, source ${src.length}`,
    );
  }
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  let exact = true;
  for (let i = 0; i < bits.length; i++) {
    const u = bits[i];
    if ((u & 0x7fffffff) > 0x7f800000) {
      dst[i] = (u >>> 16) | 0x40; // quiet NaN, sign kept
      continue;
    }
    if ((u & 0xffff) !== 0) exact = false;
    dst[i] = (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
  }
  return exact;
}

/** A fixed-size WebAssembly memory with a bump allocator and the SIMD kernels bound to it. */
export class WasmArena {
  /** Capacity in bytes (a whole number of 64 KiB pages, at least the size asked for). */
  readonly capacity: number;
  readonly #memory: WebAssembly.Memory;
  readonly #buffer: ArrayBuffer;
  readonly #k: KernelExports;
  #top = ALIGN;

  /**
   * True when this runtime can compile the kernels (WebAssembly with 128-bit SIMD). Where it is
   * false, use the JS kernels instead. Cached after the first call.
   */
  static supported(): boolean {
    if (supportedCache === null) {
      try {
        supportedCache = typeof WebAssembly === "object" && WebAssembly.validate(kernelBytes());
      } catch {
        supportedCache = false;
      }
    }
    return supportedCache;
  }

  /** Reserve `capacityBytes` (rounded up to whole pages) of memory, all of it at once. */
  constructor(capacityBytes: number) {
    if (!Number.isSafeInteger(capacityBytes) || capacityBytes < 1) {
      throw new WasmArenaError(
        "bad_argument",
        `capacity must be a positive integer, got ${capacityBytes}`,
      );
    }
    const pages = Math.ceil((capacityBytes + ALIGN) / PAGE);
    if (pages > 65536) {
      throw new WasmArenaError("out_of_memory", `capacity ${capacityBytes} exceeds 4 GiB`);
    }
    this.#memory = new WebAssembly.Memory({ initial: pages, maximum: pages });
    this.#buffer = this.#memory.buffer as ArrayBuffer; // not shared
    this.capacity = pages * PAGE;
    const instance = new WebAssembly.Instance(kernelModule(), { env: { memory: this.#memory } });
    this.#k = instance.exports as unknown as KernelExports;
  }

  /** Bytes handed out so far (including alignment padding and the reserved first line). */
  get used(): number {
    return this.#top;
  }

  /** Bytes still free. */
  get free(): number {
    return this.capacity - this.#top;
  }

  #alloc(bytes: number, what: string): number {
    if (!Number.isSafeInteger(bytes) || bytes < 0) {
      throw new WasmArenaError("bad_argument", `${what}: bad length`);
    }
    const at = this.#top;
    const end = at + Math.ceil(bytes / ALIGN) * ALIGN;
    if (end > this.capacity) {
      throw new WasmArenaError(
        "out_of_memory",
        `${what}: ${bytes} bytes requested, ${this.capacity - at} of ${this.capacity} free`,
      );
    }
    this.#top = end;
    return at;
  }

  /** A zeroed, 64-byte aligned `Float32Array` of `n` values inside the arena. */
  allocF32(n: number): Float32Array {
    return new Float32Array(this.#buffer, this.#alloc(n * 4, `allocF32(${n})`), n);
  }

  /** A zeroed, 64-byte aligned `Uint16Array` of `n` values (bf16 storage) inside the arena. */
  allocU16(n: number): Uint16Array {
    return new Uint16Array(this.#buffer, this.#alloc(n * 2, `allocU16(${n})`), n);
  }

  /** A zeroed, 64-byte aligned `Int8Array` of `n` values (int8 weights) inside the arena. */
  allocI8(n: number): Int8Array {
    return new Int8Array(this.#buffer, this.#alloc(n, `allocI8(${n})`), n);
  }

  /** Whether `view` lies in this arena's memory. */
  owns(view: ArrayBufferView): boolean {
    return view.buffer === this.#buffer;
  }

  /**
   * Y[t, o] = Σ_i X[t, i]·W[o, i] + b[o] for t < T, o < outDim: the arena's version of
   * `linear` in `src/cpu/kernels.ts` (same argument order, no output stride or offset: pass a
   * `subarray` of y instead). `w` is [outDim, inDim] row-major: a `StoredMatrix` (any stored
   * dtype), or the shorthands `Float32Array` (f32) and `Uint16Array` (bf16, the high 16 bits of
   * each f32). Every view must come from this arena and be long enough, and `y` must not overlap
   * the inputs; otherwise this throws `WasmArenaError`.
   */
  linear(
    x: Float32Array,
    T: number,
    w: Float32Array | Uint16Array | StoredMatrix,
    bias: Float32Array | null,
    outDim: number,
    inDim: number,
    y: Float32Array,
  ): void {
    for (const [name, v] of [["T", T], ["outDim", outDim], ["inDim", inDim]] as const) {
      if (!Number.isInteger(v) || v < 0 || v > 0x7fffffff) {
        throw new WasmArenaError("bad_argument", `linear: ${name} must be a non-negative integer`);
      }
    }
    const m: StoredMatrix | null = w instanceof Float32Array
      ? { dtype: "f32", rows: outDim, cols: inDim, data: w }
      : w instanceof Uint16Array
      ? { dtype: "bf16", rows: outDim, cols: inDim, data: w }
      : typeof w === "object" && w !== null && "dtype" in w
      ? w
      : null;
    if (!m) {
      throw new WasmArenaError(
        "bad_argument",
        "linear: w must be a Float32Array, a Uint16Array or a StoredMatrix",
      );
    }
    const type = m.dtype === "f32" ? Float32Array : m.dtype === "int8" ? Int8Array : Uint16Array;
    this.#check("x", x, T * inDim, Float32Array);
    this.#check("w", m.data, outDim * inDim, type);
    if (m.dtype === "int8") this.#check("scales", m.scales, outDim, Float32Array);
    this.#check("y", y, T * outDim, Float32Array);
    if (bias) {
      this.#check("bias", bias, outDim, Float32Array);
      // Address 0 is the kernel's "no bias"; the allocator never hands it out.
      if (bias.byteOffset === 0) {
        throw new WasmArenaError("bad_argument", "linear: bias at address 0 (not from allocF32)");
      }
    }
    if (T === 0 || outDim === 0) return;
    const y0 = y.byteOffset, y1 = y0 + T * outDim * 4;
    const overlaps = (v: ArrayBufferView, bytes: number) =>
      v.byteOffset < y1 && y0 < v.byteOffset + bytes;
    if (
      overlaps(x, T * inDim * 4) ||
      overlaps(m.data, outDim * inDim * m.data.BYTES_PER_ELEMENT) ||
      (m.dtype === "int8" && overlaps(m.scales, outDim * 4)) ||
      (bias !== null && overlaps(bias, outDim * 4))
    ) {
      throw new WasmArenaError("bad_argument", "linear: y overlaps an input");
    }
    const k = this.#k;
    const f = m.dtype === "f32"
      ? k.linear_f32
      : m.dtype === "bf16"
      ? k.linear_bf16
      : m.dtype === "f16"
      ? k.linear_f16
      : k.linear_i8;
    const s = m.dtype === "int8" ? m.scales.byteOffset : 0;
    f(m.data.byteOffset, x.byteOffset, bias ? bias.byteOffset : 0, y0, outDim, inDim, T, s);
  }

  #check(
    name: string,
    v: ArrayBufferView,
    need: number,
    type: Float32ArrayConstructor | Uint16ArrayConstructor | Int8ArrayConstructor,
  ): void {
    if (!(v instanceof type)) {
      throw new WasmArenaError("bad_argument", `linear: ${name} must be a ${type.name}`);
    }
    if (v.buffer !== this.#buffer) {
      throw new WasmArenaError(
        "foreign_view",
        `linear: ${name} is not a view of this arena's memory (allocate it with allocF32/allocU16)`,
      );
    }
    if (v.length < need) {
      throw new WasmArenaError(
        "bad_argument",
        `linear: ${name} holds ${v.length} values, needs ${need}`,
      );
    }
  }
}
