/**
 * WebAssembly SIMD kernels of the CPU backend, and the arena their operands live in.
 *
 * A {@link WasmArena} owns one `WebAssembly.Memory`, sized once and never grown (so the typed-array
 * views it hands out never detach). Weights, activations and scratch buffers are allocated in it;
 * {@link WasmArena.linear} then runs `y = x·Wᵀ + b` on those views without copying, with weights
 * in their stored precision: f32, bf16 or f16 (u16 storage), or int8 with per-row scales.
 *
 * ```ts
 * const T = 4, inDim = 256, out = 128; // tokens, input and output widths
 * if (WasmArena.supported()) {
 *   const arena = new WasmArena(64 << 20);
 *   const w = arena.allocF32(out * inDim); // fill in place: w.set(weights)
 *   const x = arena.allocF32(T * inDim), y = arena.allocF32(T * out);
 *   arena.linear(x, T, w, null, out, inDim, y);
 * }
 * ```
 * Numerics: float weights (16-bit widened exactly) are multiplied and accumulated in f32 with
 * fused multiply-adds (`f32x4.relaxed_madd`: fused where the CPU has FMA, so fixed per machine),
 * 4 lanes of partial sums per row in an order that does not depend on T, the tile or the thread:
 * they differ from the JS reference `linear` (f64 accumulation) by rounding only. int8 weights
 * multiply int16 activations (one scale per row and 128 columns: x̂ within half a step of 1/32767
 * of the block's largest |x|)
 * with exact integer sums per block, then the per-row scale: they differ from ŵ·x (ŵ = q·s, the
 * GPU's int8) by that rounding of x.
 * @module
 */

import { TnlError } from "../../errors.ts";
import { KERNELS_SHARED_WASM_BASE64, KERNELS_WASM_BASE64 } from "./kernels_wasm.ts";
import type { StoredMatrix } from "../stored.ts";
import type { Activation } from "../../model/config.ts";
import {
  ACTIVATIONS,
  CTRL,
  CTRL_BYTES,
  EPILOGUE,
  epilogue,
  KERNELS,
  LIGHTNING,
  type LinearFn,
  RECURRENT,
  runChunks,
  SPIN_MS,
} from "./threads.ts";

/** The q/k activation a linear applies to its outputs of rows below `rows` (`WasmArena.linear`). */
export interface LinearActivation {
  /** The activation (`activate` in `src/cpu/kernels.ts`). */
  activation: Activation;
  /** Output rows [0, rows) get it. */
  rows: number;
}

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

interface KernelExports {
  /** Kernels by stored dtype. */
  linear_f32: LinearFn;
  linear_bf16: LinearFn;
  linear_f16: LinearFn;
  linear_i8: LinearFn;
  /** Lightning Attention prefill of a range of heads (see {@link LightningArgs}). */
  lightning: (
    S: number,
    q: number,
    k: number,
    v: number,
    o: number,
    pw: number,
    h0: number,
    h1: number,
    T: number,
    dk: number,
    dv: number,
    blk: number,
    vs: number,
    os: number,
    sc: number,
  ) => void;
  /** The decode step of a range of heads of one sequence (see {@link RecurrentArgs}). */
  recurrent: (
    S: number,
    q: number,
    k: number,
    v: number,
    o: number,
    lam: number,
    h0: number,
    h1: number,
    dk: number,
    dv: number,
    qs: number,
  ) => void;
  /** int16 activations and block scales for linear_i8: `(x, T, in, q, c)`. */
  quant_i16: (x: number, T: number, n: number, q: number, c: number) => void;
}

/** Columns per int8 block: one activation scale per row and block (the generator uses it too). */
export const I8_BLOCK = 128;

/**
 * Bytes after an int8 matrix the kernels may read (times activations of 0, which cancel exactly):
 * they read a row's last 8 columns whole.
 */
export const I8_SLACK = 8;

/**
 * Bytes of the int8 activations for T rows of `inDim`: `quant_i16`'s int16 rows padded to 8, then
 * the block scales.
 */
export function int8ScratchBytes(T: number, inDim: number): number {
  const q = activationBytes(T, inDim);
  return q + T * Math.ceil(inDim / I8_BLOCK) * 4;
}

/** Bytes of the int8 activations themselves (before their scales), aligned. */
function activationBytes(T: number, inDim: number): number {
  const bytes = T * ((inDim + 7) & ~7) * 2;
  return Math.ceil(bytes / ALIGN) * ALIGN;
}

/** The two builds of the kernels: importing a plain memory, or a shared one (threads). */
type Build = "plain" | "shared";
const bytesCache: Partial<Record<Build, Uint8Array<ArrayBuffer>>> = {};
const moduleCache: Partial<Record<Build, WebAssembly.Module>> = {};
let supportedCache: boolean | null = null;
let threadsCache: boolean | null = null;

function kernelBytes(build: Build = "plain"): Uint8Array<ArrayBuffer> {
  return bytesCache[build] ??= Uint8Array.from(
    atob(build === "plain" ? KERNELS_WASM_BASE64 : KERNELS_SHARED_WASM_BASE64),
    (c) => c.charCodeAt(0),
  );
}

function kernelModule(build: Build = "plain"): WebAssembly.Module {
  return moduleCache[build] ??= new WebAssembly.Module(kernelBytes(build));
}

/** Matrix element counts × tokens below which a linear runs on the calling thread only. */
const THREAD_MIN_MACS = 1 << 19;

/** Kernel codes of the control block (`KERNELS`), by stored dtype, and of the attention. */
const FN_CODE = { f32: 0, bf16: 1, f16: 2, int8: 3 } as const;
/** Chunks of rows per thread in a threaded linear (finer chunks balance a late thread better). */
const CHUNKS_PER_THREAD = 4;

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

/**
 * Lightning Attention prefill of every head of one layer (`src/cpu/attention.ts` in f32); all
 * views in the arena, strides in floats. dk and dv must be multiples of 32.
 */
export interface LightningArgs {
  /** States [heads][dk][dv], updated in place. */
  S: Float32Array;
  /** Head-major [heads][T][dk]. */
  q: Float32Array;
  /** Head-major [heads][T][dk]. */
  k: Float32Array;
  /** v of head 0, token 0 (head h at h·dv, token t at t·vStride). */
  v: Float32Array;
  /** Floats between tokens in v. */
  vStride: number;
  /** Output of head 0, token 0 (laid out as v). */
  o: Float32Array;
  /** Floats between tokens in o. */
  oStride: number;
  /** [heads][block + 1] decay powers λ^n. */
  pw: Float32Array;
  /** [heads][block] scratch. */
  scores: Float32Array;
  /** Heads. */
  heads: number;
  /** Tokens (at least 1). */
  T: number;
  /** Key width. */
  dk: number;
  /** Value width. */
  dv: number;
  /** Tokens per block. */
  block: number;
}

/**
 * One decode step of every head of one layer of one sequence (`recurrentStep` of
 * `src/cpu/attention.ts` in f32: S ← λ·S + kᵀ·v, o = q·S); all views in the arena. dk and dv
 * must be multiples of 32.
 */
export interface RecurrentArgs {
  /** States [heads][dk][dv], updated in place. */
  S: Float32Array;
  /** q of head 0 (dk floats; head h at h·qkStride). */
  q: Float32Array;
  /** k of head 0, laid out as q. */
  k: Float32Array;
  /** Floats between heads in q and k. */
  qkStride: number;
  /** v of head 0 (head h at h·dv). */
  v: Float32Array;
  /** Output of head 0 (head h at h·dv). */
  o: Float32Array;
  /** [heads] decay λ. */
  lambda: Float32Array;
  /** Heads. */
  heads: number;
  /** Key width. */
  dk: number;
  /** Value width. */
  dv: number;
}

/** Heads × dk × dv of a decode step below which it runs on the calling thread only. */
const THREAD_MIN_STATE = 1 << 16;

/** A fixed-size WebAssembly memory with a bump allocator and the SIMD kernels bound to it. */
export class WasmArena {
  /** Capacity in bytes (a whole number of 64 KiB pages, at least the size asked for). */
  readonly capacity: number;
  readonly #memory: WebAssembly.Memory;
  readonly #buffer: ArrayBuffer;
  /** The whole memory as f32 (the linears' epilogues). */
  readonly #f32: Float32Array;
  readonly #k: KernelExports;
  readonly #fns: LinearFn[];
  /** Every kernel a thread may run, by code (`KERNELS` in threads.ts). */
  readonly #all: ((...args: number[]) => void)[];
  readonly #args: number[] = new Array(15).fill(0);
  readonly #shared: boolean;
  #top = ALIGN;
  /** Where int8 linears put their int16 activations (grown on demand; see reserveInt8Scratch). */
  #q8 = { at: 0, bytes: 0 };
  #workers: Worker[] = [];
  #ctrl: Int32Array | null = null;

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

  /**
   * True when this runtime can run the kernels on worker threads over a shared memory
   * (`SharedArrayBuffer`, shared `WebAssembly.Memory`, module workers, `Atomics.wait`): detected by
   * trying, never assumed. Cached after the first call.
   */
  static threadsSupported(): boolean {
    if (threadsCache === null) {
      try {
        threadsCache = WasmArena.supported() && typeof SharedArrayBuffer === "function" &&
          typeof Worker === "function" && typeof Atomics?.wait === "function" &&
          WebAssembly.validate(kernelBytes("shared")) &&
          new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true }).buffer instanceof
            SharedArrayBuffer;
        // Atomics.wait throws on threads that may not block.
        if (threadsCache) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 1, 0);
      } catch {
        threadsCache = false;
      }
    }
    return threadsCache;
  }

  /**
   * Reserve `capacityBytes` (rounded up to whole pages) of memory, all of it at once; `shared`
   * (where {@link WasmArena.threadsSupported}) makes it shareable with kernel threads.
   */
  constructor(capacityBytes: number, options: { shared?: boolean } = {}) {
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
    this.#shared = options.shared === true;
    if (this.#shared && !WasmArena.threadsSupported()) {
      throw new WasmArenaError("bad_argument", "shared arenas are not supported on this runtime");
    }
    this.#memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: this.#shared });
    // A SharedArrayBuffer when shared; typed as ArrayBuffer for the views handed out.
    this.#buffer = this.#memory.buffer as ArrayBuffer;
    this.#f32 = new Float32Array(this.#buffer);
    this.capacity = pages * PAGE;
    const instance = new WebAssembly.Instance(kernelModule(this.#shared ? "shared" : "plain"), {
      env: { memory: this.#memory },
    });
    this.#k = instance.exports as unknown as KernelExports;
    const k = this.#k;
    this.#fns = [k.linear_f32, k.linear_bf16, k.linear_f16, k.linear_i8];
    this.#all = KERNELS.map((name) => k[name] as (...args: number[]) => void);
  }

  /** Whether the memory is shared (kernel threads can be started). */
  get shared(): boolean {
    return this.#shared;
  }

  /** Threads running the kernels (1: the caller's only). */
  get threads(): number {
    return this.#workers.length + 1;
  }

  /**
   * Start `threads - 1` workers (a shared arena only) that split every large enough linear by
   * blocks of output rows with the calling thread. Each output is computed by one thread in the
   * same order as without threads, so results are bit-identical. Returns the threads now running.
   */
  async startThreads(threads: number): Promise<number> {
    if (!Number.isInteger(threads) || threads < 1 || threads > 64) {
      throw new WasmArenaError("bad_argument", `threads must be an integer in [1, 64]`);
    }
    if (this.#workers.length) throw new WasmArenaError("bad_argument", "threads already started");
    if (threads === 1) return 1;
    if (!this.#shared) {
      throw new WasmArenaError("bad_argument", "threads need an arena made with shared: true");
    }
    const n = threads - 1;
    const ctrl = new Int32Array(new SharedArrayBuffer(CTRL_BYTES));
    const workers: Worker[] = [];
    try {
      for (let i = 0; i < n; i++) {
        const w = new Worker(new URL("./worker.ts", import.meta.url).href, { type: "module" });
        workers.push(w);
        const ready = new Promise<void>((resolve, reject) => {
          w.onmessage = () => resolve();
          w.onerror = (e) => {
            e.preventDefault();
            reject(new WasmArenaError("bad_argument", `kernel thread failed: ${e.message}`));
          };
        });
        w.postMessage({
          module: kernelModule("shared"),
          memory: this.#memory,
          ctrl: ctrl.buffer,
        });
        await ready;
      }
    } catch (e) {
      for (const w of workers) w.terminate();
      throw e;
    }
    this.#ctrl = ctrl;
    this.#workers = workers;
    return threads;
  }

  /** Stop the kernel threads (idempotent); linears then run on the calling thread only. */
  stopThreads(): void {
    const c = this.#ctrl;
    if (c) {
      Atomics.store(c, CTRL.fn, -1);
      Atomics.add(c, CTRL.gen, 1);
      Atomics.notify(c, CTRL.gen);
    }
    for (const w of this.#workers) w.terminate();
    this.#workers = [];
    this.#ctrl = null;
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
  allocF32(n: number): Float32Array<ArrayBuffer> {
    return new Float32Array(this.#buffer, this.#alloc(n * 4, `allocF32(${n})`), n);
  }

  /** A zeroed, 64-byte aligned `Uint16Array` of `n` values (bf16 storage) inside the arena. */
  allocU16(n: number): Uint16Array {
    return new Uint16Array(this.#buffer, this.#alloc(n * 2, `allocU16(${n})`), n);
  }

  /**
   * A zeroed, 64-byte aligned `Int8Array` of `n` values (int8 weights) inside the arena, followed
   * by {@link I8_SLACK} bytes of slack: the int8 kernels read a row's last 8 columns whole.
   */
  allocI8(n: number): Int8Array {
    return new Int8Array(this.#buffer, this.#alloc(n + I8_SLACK, `allocI8(${n})`), n);
  }

  /**
   * Set aside the int16 activation scratch of int8 linears for up to `rows` rows of `maxIn`
   * columns (`int8ScratchBytes`); a later linear that needs more allocates more.
   */
  reserveInt8Scratch(rows: number, maxIn: number): void {
    const bytes = int8ScratchBytes(rows, maxIn);
    if (bytes > this.#q8.bytes) this.#q8 = { at: this.#alloc(bytes, "int8 scratch"), bytes };
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
   * the inputs; otherwise this throws `WasmArenaError`. `act`: then `activate(act.activation, …)`
   * on the outputs of rows below `act.rows` (by the thread that computed them).
   */
  linear(
    x: Float32Array,
    T: number,
    w: Float32Array | Uint16Array | StoredMatrix,
    bias: Float32Array | null,
    outDim: number,
    inDim: number,
    y: Float32Array,
    act?: LinearActivation,
  ): void {
    this.#linear(x, T, [{ w, bias, y }], outDim, inDim, act ?? null);
  }

  /**
   * The SGLU gate of a channel mixer in one pass: y1 = (X·W1ᵀ + b1) ⊙ (X·W2ᵀ + b2), y2 = X·W2ᵀ +
   * b2 (both [T, outDim]); W1 and W2 of one stored dtype. Each block of rows is computed (both
   * matrices, then the f32 products) by one thread: the same bits as two `linear`s and the
   * product, with one thread wake-up instead of two.
   */
  glu(
    x: Float32Array,
    T: number,
    w1: Float32Array | Uint16Array | StoredMatrix,
    b1: Float32Array | null,
    w2: Float32Array | Uint16Array | StoredMatrix,
    b2: Float32Array | null,
    outDim: number,
    inDim: number,
    y1: Float32Array,
    y2: Float32Array,
  ): void {
    this.#linear(
      x,
      T,
      [{ w: w1, bias: b1, y: y1 }, { w: w2, bias: b2, y: y2 }],
      outDim,
      inDim,
      null,
    );
  }

  #linear(
    x: Float32Array,
    T: number,
    mats: {
      w: Float32Array | Uint16Array | StoredMatrix;
      bias: Float32Array | null;
      y: Float32Array;
    }[],
    outDim: number,
    inDim: number,
    act: LinearActivation | null,
  ): void {
    for (const [name, v] of [["T", T], ["outDim", outDim], ["inDim", inDim]] as const) {
      if (!Number.isInteger(v) || v < 0 || v > 0x7fffffff) {
        throw new WasmArenaError("bad_argument", `linear: ${name} must be a non-negative integer`);
      }
    }
    const ms = mats.map(({ w, bias, y }) => {
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
      return { m, bias, y };
    });
    if (ms.length === 2 && ms[0].m.dtype !== ms[1].m.dtype) {
      throw new WasmArenaError("bad_argument", "glu: w1 and w2 must have one stored dtype");
    }
    if (act && !(ACTIVATIONS.includes(act.activation) && Number.isInteger(act.rows))) {
      throw new WasmArenaError("bad_argument", "linear: unknown activation");
    }
    if (T === 0 || outDim === 0) return;
    // No output may overlap an input or the other output.
    for (const [k, { y }] of ms.entries()) {
      const y0 = y.byteOffset, y1 = y0 + T * outDim * 4;
      const overlaps = (v: ArrayBufferView, bytes: number) =>
        v.byteOffset < y1 && y0 < v.byteOffset + bytes;
      if (
        overlaps(x, T * inDim * 4) ||
        ms.some(({ m, bias, y: other }, j) =>
          overlaps(m.data, outDim * inDim * m.data.BYTES_PER_ELEMENT) ||
          (m.dtype === "int8" && overlaps(m.scales, outDim * 4)) ||
          (bias !== null && overlaps(bias, outDim * 4)) ||
          (j !== k && overlaps(other, T * outDim * 4))
        )
      ) {
        throw new WasmArenaError("bad_argument", "linear: y overlaps an input");
      }
    }
    const { m } = ms[0];
    const code = FN_CODE[m.dtype];
    let x0 = x.byteOffset, c0 = 0;
    if (m.dtype === "int8") {
      // x → int16 with block scales, once, on this thread (every thread reads them).
      this.reserveInt8Scratch(T, inDim);
      x0 = this.#q8.at;
      c0 = x0 + activationBytes(T, inDim);
      this.#k.quant_i16(x.byteOffset, T, inDim, x0, c0);
    }
    const at = ms.map(({ m, bias, y }) => ({
      w: m.data.byteOffset,
      b: bias ? bias.byteOffset : 0,
      y: y.byteOffset,
      s: m.dtype === "int8" ? m.scales.byteOffset : 0,
    }));
    const kind = ms.length === 2 ? EPILOGUE.glu : act ? EPILOGUE.act : EPILOGUE.none;
    const actCode = act ? ACTIVATIONS.indexOf(act.activation) : 0, actRows = act ? act.rows : 0;
    const fn = this.#fns[code];
    if (
      !this.#ctrl || outDim * inDim * T * ms.length < THREAD_MIN_MACS || outDim < 8 * this.threads
    ) {
      for (const a of at) fn(a.w, x0, a.b, a.y, outDim, inDim, T, a.s, 0, c0);
      const y2 = ms.length === 2 ? at[1].y >> 2 : 0;
      epilogue(this.#f32, kind, T, at[0].y >> 2, outDim, 0, outDim, actCode, actRows, y2);
      return;
    }
    // Blocks of output rows (multiples of 8; CHUNKS_PER_THREAD per thread): slices of w, b, s
    // and y with y's full row stride. Which thread computes a row does not change its sums.
    const per = Math.ceil(outDim / (this.threads * CHUNKS_PER_THREAD) / 8) * 8;
    const rs = inDim * m.data.BYTES_PER_ELEMENT;
    const second = at[1] ?? { w: 0, b: 0, y: 0, s: 0 };
    this.#parallel(code, Math.ceil(outDim / per), [
      at[0].w,
      x0,
      at[0].b,
      at[0].y,
      outDim,
      inDim,
      T,
      at[0].s,
      outDim * 4,
      c0,
      rs,
      per,
      kind,
      actCode,
      actRows,
      second.w,
      second.b,
      second.y,
      second.s,
    ]);
  }

  /**
   * Run kernel `code` as `chunks` chunks (`chunkArgs` in threads.ts) on every thread: post the job,
   * claim chunks here too, then wait for the chunks the workers claimed.
   */
  #parallel(code: number, chunks: number, args: readonly number[]): void {
    const c = this.#ctrl!;
    for (let j = 0; j < args.length; j++) c[CTRL.args + j] = args[j];
    c[CTRL.fn] = code;
    Atomics.store(c, CTRL.finished, 0);
    Atomics.store(c, CTRL.claim, chunks << 16);
    Atomics.add(c, CTRL.gen, 1);
    Atomics.notify(c, CTRL.gen);
    runChunks(c, this.#all, this.#args, this.#f32);
    const t0 = performance.now();
    for (let d; (d = Atomics.load(c, CTRL.finished)) < chunks;) {
      const waited = performance.now() - t0;
      if (waited > SPIN_MS) Atomics.wait(c, CTRL.finished, d, 1);
      // A worker that died (it cannot trap on checked arguments) must not hang the caller.
      if (waited > 30_000) {
        this.stopThreads();
        throw new WasmArenaError("bad_argument", "a kernel thread stopped answering");
      }
    }
  }

  /** Lightning Attention prefill of one layer's heads: {@link LightningArgs}. */
  lightning(a: LightningArgs): void {
    const { heads, T, dk, dv, block } = a;
    if (T < 1 || dk % 32 !== 0 || dv % 32 !== 0 || block < 1) {
      throw new WasmArenaError("bad_argument", "lightning: T ≥ 1, dk and dv multiples of 32");
    }
    const need: [string, Float32Array, number][] = [
      ["S", a.S, heads * dk * dv],
      ["q", a.q, heads * T * dk],
      ["k", a.k, heads * T * dk],
      ["v", a.v, (T - 1) * a.vStride + heads * dv],
      ["o", a.o, (T - 1) * a.oStride + heads * dv],
      ["pw", a.pw, heads * (block + 1)],
      ["scores", a.scores, heads * block],
    ];
    for (const [name, v, n] of need) this.#check(name, v, n, Float32Array);
    const args = (h0: number, h1: number) => [
      a.S.byteOffset,
      a.q.byteOffset,
      a.k.byteOffset,
      a.v.byteOffset,
      a.o.byteOffset,
      a.pw.byteOffset,
      h0,
      h1,
      T,
      dk,
      dv,
      block,
      a.vStride * 4,
      a.oStride * 4,
      a.scores.byteOffset,
    ];
    if (!this.#ctrl || heads < 2) {
      this.#k.lightning(...(args(0, heads) as Parameters<KernelExports["lightning"]>));
      return;
    }
    // Heads are independent (each has its own state, output columns and scores): one a chunk.
    this.#parallel(LIGHTNING, heads, args(0, heads));
  }

  /** The decode step of one layer's heads of one sequence: {@link RecurrentArgs}. */
  recurrent(a: RecurrentArgs): void {
    const { heads, dk, dv, qkStride } = a;
    if (heads < 1 || dk < 32 || dv < 32 || dk % 32 !== 0 || dv % 32 !== 0 || qkStride < dk) {
      throw new WasmArenaError("bad_argument", "recurrent: dk and dv multiples of 32, heads ≥ 1");
    }
    const need: [string, Float32Array, number][] = [
      ["S", a.S, heads * dk * dv],
      ["q", a.q, (heads - 1) * qkStride + dk],
      ["k", a.k, (heads - 1) * qkStride + dk],
      ["v", a.v, heads * dv],
      ["o", a.o, heads * dv],
      ["lambda", a.lambda, heads],
    ];
    for (const [name, v, n] of need) this.#check(name, v, n, Float32Array);
    const o0 = a.o.byteOffset, o1 = o0 + heads * dv * 4;
    for (const [name, v, n] of need) {
      if (name !== "o" && v.byteOffset < o1 && o0 < v.byteOffset + 4 * n) {
        throw new WasmArenaError("bad_argument", `recurrent: o overlaps ${name}`);
      }
    }
    const args = [
      a.S.byteOffset,
      a.q.byteOffset,
      a.k.byteOffset,
      a.v.byteOffset,
      o0,
      a.lambda.byteOffset,
      0,
      heads,
      dk,
      dv,
      qkStride * 4,
    ] as const;
    if (!this.#ctrl || heads < 2 || heads * dk * dv < THREAD_MIN_STATE) {
      this.#k.recurrent(...args);
      return;
    }
    // Heads are independent (each has its own state and output columns): one a chunk.
    this.#parallel(RECURRENT, heads, args);
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
