/**
 * The CPU reference forward pass of TransNormerLLM: the numerical spec of this project.
 *
 * ```
 * x = embed_scale · E[ids]
 * per layer: a = norm(x); q,k,v,u = split4(a·Wqkvuᵀ); q,k = act(q), act(k); LRPE where listed
 *            o = decayed linear attention (per head);  x += (u ⊙ norm_H(o))·Woutᵀ
 *            a = norm(x);  x += ((a·W1ᵀ) ⊙ (a·W2ᵀ))·W3ᵀ
 * logits = norm(x)·Eᵀ
 * ```
 * Prefill runs Lightning Attention blocks; decode runs the recurrence, batched over sequences.
 * @module
 */

import { InputError } from "../errors.ts";
import { layerDecayRate, type ModelConfig, stateKeyDim, stateLayerSize } from "../model/config.ts";
import { createState, type ModelState } from "../model/state.ts";
import { decayPowers, lightningPrefill, recurrentStep } from "./attention.ts";
import { activate, layerNorm, linear, simpleRmsNorm } from "./kernels.ts";
import type { CpuWeights } from "./weights.ts";
import { I8_SLACK, int8ScratchBytes, WasmArena } from "./wasm/mod.ts";
import { storedBytes, type StoredMatrix, widenMatrix, widenRow } from "./stored.ts";

/** Rows [t0, t0 + n) of a pass that belong to one sequence. */
interface Segment {
  t0: number;
  n: number;
}

/** Which logits to return. */
export type CpuLogitsMode = "all" | "last" | "none";

/** Options of the CPU model. */
export interface CpuModelOptions {
  /** Lightning Attention block size (any size gives the same numbers up to rounding). Default 64. */
  block?: number;
  /** Tokens processed per pass of a long prefill (bounds scratch memory). Default 256. */
  chunk?: number;
  /**
   * Matrix kernels: "js" (f64 accumulation over weights widened to f32, the reference spec),
   * "wasm" (WebAssembly SIMD: f32 fused multiply-adds over weights in their stored precision, int8
   * on integers with int16 activations; the attention, prefill and decode, too, in f32), or "auto" (default: wasm
   * where supported).
   */
  kernels?: "auto" | "js" | "wasm";
  /** Most sequences per decode call (sizes the wasm scratch). Default 256. */
  maxBatch?: number;
  /**
   * Threads of the wasm kernels: a number, or "auto" (every core the host reports). Used where the
   * runtime allows worker threads over shared memory (`WasmArena.threadsSupported`), else 1; the
   * results are bit-identical for any count. Default 1. Threads live until `dispose()`.
   */
  threads?: number | "auto";
  /**
   * States {@link CpuModel.allocState} keeps in the wasm arena, where the attention kernels update
   * them in place (a state on the JS heap is copied into the arena and back at every layer of every
   * step: 2 × 26 MB a token at 385M). More states than this live on the JS heap. Their memory is
   * reserved at load and becomes resident as states use it. Default 8 (0 on the js kernels).
   */
  arenaStates?: number;
}

/** Default of {@link CpuModelOptions.arenaStates}. */
const ARENA_STATES = 8;

/** Arena bytes of one state: each layer on its own 64-byte line. */
function arenaStateBytes(config: ModelConfig): number {
  let n = 0;
  for (let l = 0; l < config.numLayers; l++) {
    n += Math.ceil((stateLayerSize(config, l) * 4) / 64) * 64;
  }
  return n;
}

/** The arena states `options` ask for (checked). */
function arenaStateCount(options: CpuModelOptions): number {
  const n = options.arenaStates ?? ARENA_STATES;
  if (!(Number.isInteger(n) && n >= 0 && n <= 4096)) {
    throw new InputError("arenaStates", `must be an integer in [0, 4096], got ${n}`);
  }
  return n;
}

/**
 * Arena bytes of the wasm attention (a layer's state, λ^n in f32, scores), or 0 where it does not
 * apply (head widths that are not a multiple of 32 run the JS attention).
 */
function attnScratchBytes(config: ModelConfig, options: CpuModelOptions): number {
  const { numHeads: nh, headDim: hd, numLayers: L } = config;
  if (hd % 32 !== 0) return 0;
  const block = options.block ?? 64;
  const floats = (n: number) => Math.ceil((n * 4) / 64) * 64;
  return floats(nh * 2 * hd * hd) + floats(L * nh * (block + 1)) + floats(nh * block) +
    floats(L * nh);
}

/** The kernel threads `options` ask for, as this runtime allows them. */
export function cpuThreads(options: CpuModelOptions): number {
  const t = options.threads ?? 1;
  if (t !== "auto" && !(Number.isInteger(t) && t >= 1 && t <= 64)) {
    throw new InputError("threads", `must be "auto" or an integer in [1, 64], got ${t}`);
  }
  if (t === 1 || options.kernels === "js" || !WasmArena.threadsSupported()) return 1;
  return t === "auto" ? Math.max(1, Math.min(64, navigator.hardwareConcurrency || 1)) : t;
}

/** A linear layer's weights for the active kernels: f32 (js), or stored in the wasm arena. */
type LinearWeights = Float32Array | StoredMatrix;

/** The weights the matrix kernels read (arena views on the wasm path). */
interface KernelLayer {
  qkvu: LinearWeights;
  out: LinearWeights;
  l1: LinearWeights;
  l2: LinearWeights;
  l3: LinearWeights;
  qkvuBias: Float32Array | null;
  outBias: Float32Array | null;
  l1Bias: Float32Array | null;
  l2Bias: Float32Array | null;
  l3Bias: Float32Array | null;
}

/** The CPU model: weights plus reusable scratch buffers. Not re-entrant (one call at a time). */
export class CpuModel {
  /** The model configuration. */
  readonly config: ModelConfig;
  /** Lightning Attention block size. */
  readonly block: number;
  /** Prefill chunk size. */
  readonly chunk: number;
  readonly #w: CpuWeights;
  /** Which matrix kernels run. */
  readonly kernels: "js" | "wasm";
  /** Bytes the weight matrices take as the kernels read them (int8 scales included). */
  readonly weightBytes: number;
  readonly #arena: WasmArena | null = null;
  readonly #kl: KernelLayer[];
  readonly #headW: LinearWeights;
  #headScratch: Float32Array = new Float32Array(0);
  readonly #pw: Float64Array[];
  readonly #lambda: number[][];
  #rows = 0;
  #x: Float32Array = new Float32Array(0);
  #a: Float32Array = new Float32Array(0);
  #qkvu: Float32Array = new Float32Array(0);
  #q: Float32Array = new Float32Array(0);
  #k: Float32Array = new Float32Array(0);
  #o: Float32Array = new Float32Array(0);
  #g1: Float32Array = new Float32Array(0);
  #g2: Float32Array = new Float32Array(0);
  #acc: Float64Array;
  readonly #erow: Float32Array;
  /** The wasm attention's arena buffers (null: the JS attention runs). */
  #attn:
    | { state: Float32Array; pw: Float32Array; scores: Float32Array; lambda: Float32Array }
    | null = null;
  /** Arena states still to be carved from the arena (see {@link CpuModelOptions.arenaStates}). */
  #stateRoom = 0;
  /** Released arena states, ready for reuse. */
  readonly #freeStates: ModelState[] = [];
  /** Arena states handed out and not released. */
  readonly #liveStates = new Set<ModelState>();

  /**
   * Arena bytes the wasm path's scratch takes for `options` (rows of a chunk or a batch); the
   * loader leaves this much free after the weights.
   */
  static scratchBytes(config: ModelConfig, options: CpuModelOptions = {}): number {
    const rows = Math.max(options.chunk ?? 256, options.maxBatch ?? 256);
    const { embedDim: D, hiddenDim: H, gluDim: G, vocabSize: V } = config;
    const floats = (n: number) => Math.ceil((n * 4) / 64) * 64;
    return floats(rows * D) + floats(rows * Math.max(D, H)) + floats(rows * 4 * H) +
      floats(rows * Math.max(H, D)) + floats(rows * Math.max(G, D)) + floats(rows * G) +
      floats(Math.min(rows, 64) * V) + 2 * floats(rows * H * 2) +
      int8ScratchBytes(rows, Math.max(D, H, G)) + attnScratchBytes(config, options) + (1 << 16) +
      (attnScratchBytes(config, options) > 0
        ? arenaStateCount(options) * arenaStateBytes(config)
        : 0);
  }

  /**
   * Build from loaded weights. The js kernels widen the matrices to f32; the wasm kernels run on
   * them in place when they live in an arena with room for the scratch (as `CpuBackend.load`
   * loads them), else on a copy in a new arena.
   */
  constructor(config: ModelConfig, weights: CpuWeights, options: CpuModelOptions = {}) {
    this.config = config;
    this.#w = weights;
    this.block = options.block ?? 64;
    this.chunk = options.chunk ?? 256;
    if (!(this.block >= 1 && this.chunk >= 1)) throw new InputError("block", "must be at least 1");
    this.#pw = [];
    this.#lambda = [];
    for (let l = 0; l < config.numLayers; l++) {
      const rates = layerDecayRate(config.slopes, l, config.numLayers);
      this.#lambda.push(rates.map((r) => Math.exp(-r)));
      for (const r of rates) this.#pw.push(decayPowers(r, this.block));
    }
    this.#acc = new Float64Array(config.headDim);
    this.#erow = new Float32Array(config.embedDim);
    const held = weights.layers.flatMap((l) => [l.qkvu, l.out, l.l1, l.l2, l.l3]);
    if (weights.head !== weights.embed) held.push(weights.head);
    held.push(weights.embed);
    const want = options.kernels ?? "auto";
    this.kernels = want === "js" || (want === "auto" && !WasmArena.supported()) ? "js" : "wasm";
    if (this.kernels === "js") {
      this.#kl = weights.layers.map((l) => ({
        ...l,
        qkvu: widenMatrix(l.qkvu),
        out: widenMatrix(l.out),
        l1: widenMatrix(l.l1),
        l2: widenMatrix(l.l2),
        l3: widenMatrix(l.l3),
      }));
      this.#headW = widenMatrix(weights.head);
      this.weightBytes = held.reduce((n, m) => n + 4 * m.rows * m.cols, 0);
      return;
    }
    const rows = Math.max(this.chunk, options.maxBatch ?? 256);
    const { embedDim: D, hiddenDim: H, gluDim: G, vocabSize: V } = config;
    const scratch = CpuModel.scratchBytes(config, options);
    this.weightBytes = held.reduce(
      (n, m) => n + storedBytes(m.dtype, m.rows * m.cols) + (m.dtype === "int8" ? 4 * m.rows : 0),
      0,
    );
    let arena = weights.arena;
    if (arena && arena.free >= scratch) {
      this.#kl = weights.layers;
      this.#headW = weights.head;
    } else {
      // Weights on the JS heap (or an arena without room): copy them into a new arena.
      const mats = weights.layers.flatMap((l) => [l.qkvu, l.out, l.l1, l.l2, l.l3]);
      mats.push(weights.head);
      let bytes = scratch + 64;
      for (const m of mats) {
        bytes += storedBytes(m.dtype, m.rows * m.cols) + 4 * m.rows + 128 + I8_SLACK;
      }
      for (const l of weights.layers) {
        for (const v of [l.qkvuBias, l.outBias, l.l1Bias, l.l2Bias, l.l3Bias]) {
          if (v) bytes += v.length * 4 + 64;
        }
      }
      const a = new WasmArena(bytes, { shared: cpuThreads(options) > 1 });
      arena = a;
      const vec = (v: Float32Array | null) => v && copyInto(a.allocF32(v.length), v);
      this.#kl = weights.layers.map((l) => ({
        qkvu: copyMatrix(a, l.qkvu),
        out: copyMatrix(a, l.out),
        l1: copyMatrix(a, l.l1),
        l2: copyMatrix(a, l.l2),
        l3: copyMatrix(a, l.l3),
        qkvuBias: vec(l.qkvuBias),
        outBias: vec(l.outBias),
        l1Bias: vec(l.l1Bias),
        l2Bias: vec(l.l2Bias),
        l3Bias: vec(l.l3Bias),
      }));
      this.#headW = copyMatrix(a, weights.head);
    }
    this.#arena = arena;
    this.#rows = rows;
    if (held.some((m) => m.dtype === "int8")) arena.reserveInt8Scratch(rows, Math.max(D, H, G));
    if (attnScratchBytes(config, options) > 0) {
      const { numHeads: nh, headDim: hd, numLayers: L } = config;
      const pw = arena.allocF32(L * nh * (this.block + 1));
      this.#pw.forEach((p, i) => pw.set(p, i * (this.block + 1)));
      const lambda = arena.allocF32(L * nh);
      this.#lambda.forEach((ls, l) => lambda.set(ls, l * nh));
      this.#attn = {
        state: arena.allocF32(nh * 2 * hd * hd),
        pw,
        scores: arena.allocF32(nh * this.block),
        lambda,
      };
    }
    if (this.#attn) this.#stateRoom = arenaStateCount(options);
    this.#x = arena.allocF32(rows * D);
    this.#a = arena.allocF32(rows * Math.max(D, H));
    this.#qkvu = arena.allocF32(rows * 4 * H);
    this.#o = arena.allocF32(rows * Math.max(H, D));
    this.#g1 = arena.allocF32(rows * Math.max(G, D));
    this.#g2 = arena.allocF32(rows * G);
    this.#headScratch = arena.allocF32(Math.min(rows, 64) * V);
    this.#q = arena.allocF32(rows * H * 2);
    this.#k = arena.allocF32(rows * H * 2);
  }

  /** Start the kernel threads `options.threads` asks for (where allowed); returns the count. */
  async startThreads(options: CpuModelOptions): Promise<number> {
    const n = cpuThreads(options);
    if (n <= 1 || !this.#arena?.shared) return 1;
    return await this.#arena.startThreads(n);
  }

  /**
   * A zero state at position 0: in the wasm arena while {@link CpuModelOptions.arenaStates} allows
   * (its layers are views of the arena's memory, updated in place by the kernels), else on the JS
   * heap. Hand it back with {@link CpuModel.releaseState} when done.
   */
  allocState(): ModelState {
    const free = this.#freeStates.pop();
    if (free) {
      free.position = 0;
      for (const layer of free.layers) layer.fill(0);
      this.#liveStates.add(free);
      return free;
    }
    if (this.#stateRoom === 0) return createState(this.config);
    this.#stateRoom--;
    const st: ModelState = {
      position: 0,
      layers: Array.from(
        { length: this.config.numLayers },
        (_, l) => this.#arena!.allocF32(stateLayerSize(this.config, l)),
      ),
    };
    this.#liveStates.add(st);
    return st;
  }

  /**
   * Give back a state from {@link CpuModel.allocState}: an arena state's memory goes to the next
   * allocation (do not use the state after this); a heap state is left to the GC.
   */
  releaseState(state: ModelState): void {
    if (this.#liveStates.delete(state)) this.#freeStates.push(state);
  }

  /** Threads running the matrix kernels. */
  get threads(): number {
    return this.#arena?.threads ?? 1;
  }

  /** Stop the kernel threads (the model stays usable, single-threaded). */
  dispose(): void {
    this.#arena?.stopThreads();
  }

  /** y[t·yStride + yOffset + o] = x_t·w_oᵀ + b_o through the active kernels. */
  #linear(
    x: Float32Array,
    T: number,
    w: LinearWeights,
    bias: Float32Array | null,
    outDim: number,
    inDim: number,
    y: Float32Array,
  ): void {
    if (this.#arena) this.#arena.linear(x, T, w, bias, outDim, inDim, y);
    else linear(x, T, w as Float32Array, bias, outDim, inDim, y);
  }

  #ensureRows(rows: number): void {
    if (rows <= this.#rows) return;
    if (this.#arena) {
      throw new InputError(
        "batch",
        `${rows} rows exceed the ${this.#rows} the model was sized for`,
      );
    }
    const { embedDim: D, hiddenDim: H, gluDim: G, headDim: hd } = this.config;
    this.#rows = rows;
    this.#x = new Float32Array(rows * D);
    this.#a = new Float32Array(rows * Math.max(D, H));
    this.#qkvu = new Float32Array(rows * 4 * H);
    this.#q = new Float32Array(rows * H * 2);
    this.#k = new Float32Array(rows * H * 2);
    this.#o = new Float32Array(rows * Math.max(H, D));
    this.#g1 = new Float32Array(rows * Math.max(G, D));
    this.#g2 = new Float32Array(rows * G);
    this.#acc = new Float64Array(Math.max(hd, this.#acc.length));
  }

  /** Check token ids against the vocabulary. */
  checkTokens(tokens: ArrayLike<number>, field = "tokens"): void {
    const V = this.config.vocabSize;
    for (let i = 0; i < tokens.length; i++) {
      const t = tokens[i];
      if (!Number.isInteger(t) || t < 0 || t >= V) {
        throw new InputError(field, `token ${t} at index ${i} is outside the vocabulary [0, ${V})`);
      }
    }
  }

  /**
   * Run `tokens` of one sequence, advancing `state` in place; returns logits per `mode`
   * ([T, V], [V], or an empty array).
   */
  forward(state: ModelState, tokens: ArrayLike<number>, mode: CpuLogitsMode): Float32Array {
    const T = tokens.length;
    if (T === 0) throw new InputError("tokens", "must not be empty");
    this.checkTokens(tokens);
    const V = this.config.vocabSize;
    const out = new Float32Array(mode === "all" ? T * V : mode === "last" ? V : 0);
    for (let c = 0; c < T; c += this.chunk) {
      const n = Math.min(this.chunk, T - c);
      const ids = Array.from({ length: n }, (_, i) => tokens[c + i]);
      this.#ensureRows(n);
      this.#embed(ids);
      const pos0 = state.position;
      this.#layers(n, (l, dk, q, k) => this.#lightning(state, l, dk, q, k, 0, n), (t) => pos0 + t);
      state.position += n;
      if (mode === "all") this.#head(0, n, out, c * V);
      else if (mode === "last" && c + n === T) this.#head(n - 1, 1, out, 0);
    }
    return out;
  }

  /**
   * Prefill several sequences, no logits: the same numbers as one `forward(state, tokens, "none")`
   * per item in order. The rows of as many sequences as fit in a chunk go through the linears,
   * norms and gates together (their kernels give each row the bits it gets alone); the attention
   * runs per sequence. A sequence longer than a chunk goes alone. Every item is checked before any
   * state changes.
   */
  forwardMany(items: readonly { state: ModelState; tokens: ArrayLike<number> }[]): void {
    for (const [i, it] of items.entries()) {
      if (it.tokens.length === 0) throw new InputError(`items[${i}].tokens`, "must not be empty");
      this.checkTokens(it.tokens, `items[${i}].tokens`);
    }
    let group: { state: ModelState; tokens: ArrayLike<number> }[] = [];
    let rows = 0;
    const flush = () => {
      if (group.length === 1) this.forward(group[0].state, group[0].tokens, "none");
      else if (group.length) this.#prefillTogether(group);
      group = [];
      rows = 0;
    };
    for (const it of items) {
      const n = it.tokens.length;
      // A state met twice continues from its first item's end: the first goes before it.
      if (rows + n > this.chunk || group.some((g) => g.state === it.state)) flush();
      if (n > this.chunk) this.forward(it.state, it.tokens, "none");
      else {
        group.push(it);
        rows += n;
      }
    }
    flush();
  }

  /** Sequences whose tokens fit in one chunk together: one pass over their rows. */
  #prefillTogether(group: readonly { state: ModelState; tokens: ArrayLike<number> }[]): void {
    const segments: Segment[] = [];
    const ids: number[] = [];
    for (const { tokens } of group) {
      segments.push({ t0: ids.length, n: tokens.length });
      for (let i = 0; i < tokens.length; i++) ids.push(tokens[i]);
    }
    const T = ids.length;
    this.#ensureRows(T);
    this.#embed(ids);
    const position = new Float64Array(T);
    group.forEach(({ state }, s) => {
      const { t0, n } = segments[s];
      for (let t = 0; t < n; t++) position[t0 + t] = state.position + t;
    });
    this.#layers(
      T,
      (l, dk, q, k) => {
        const nh = this.config.numHeads;
        group.forEach(({ state }, s) => {
          const { t0, n } = segments[s];
          const seg = t0 * nh * dk;
          this.#lightning(state, l, dk, q.subarray(seg), k.subarray(seg), t0, n);
        });
      },
      (t) => position[t],
      segments,
    );
    group.forEach(({ state }, s) => state.position += segments[s].n);
  }

  /**
   * Lightning attention of layer l for the `n` rows of one sequence that start at row `row` of
   * this pass: q and k head-major for these rows ([h][n][dk]); v read from #qkvu and the output
   * written to #o from row `row` on, in their full-width row layouts.
   */
  #lightning(
    state: ModelState,
    l: number,
    dk: number,
    q: Float32Array,
    k: Float32Array,
    row: number,
    n: number,
  ): void {
    const { headDim: hd, hiddenDim: H, numHeads: nh } = this.config;
    if (this.#attn) {
      // The state in the arena (the kernel reads and writes it there): in place, or a copy.
      const own = this.#arena!.owns(state.layers[l]);
      const S = own ? state.layers[l] : this.#attn.state.subarray(0, nh * dk * hd);
      if (!own) S.set(state.layers[l]);
      this.#arena!.lightning({
        S,
        q,
        k,
        v: this.#qkvu.subarray(row * 4 * H + 2 * H),
        vStride: 4 * H,
        o: this.#o.subarray(row * H),
        oStride: H,
        pw: this.#attn.pw.subarray(l * nh * (this.block + 1)),
        scores: this.#attn.scores,
        heads: nh,
        T: n,
        dk,
        dv: hd,
        block: this.block,
      });
      if (!own) state.layers[l].set(S);
      return;
    }
    for (let h = 0; h < nh; h++) {
      lightningPrefill(
        state.layers[l],
        h * dk * hd,
        dk,
        hd,
        n,
        this.block,
        this.#pw[l * nh + h],
        q,
        h * n * dk,
        k,
        h * n * dk,
        dk,
        this.#qkvu,
        row * 4 * H + 2 * H + h * hd,
        4 * H,
        this.#o,
        row * H + h * hd,
        H,
        this.#acc,
      );
    }
  }

  /** One token for each of `states` (batched decode); returns [B, V] logits. */
  decode(states: readonly ModelState[], tokens: ArrayLike<number>): Float32Array {
    const B = states.length;
    if (B === 0 || tokens.length !== B) {
      throw new InputError("tokens", `expected one token per state (${B}), got ${tokens.length}`);
    }
    this.checkTokens(tokens);
    this.#ensureRows(B);
    this.#embed(Array.from(tokens));
    const { headDim: hd, hiddenDim: H } = this.config;
    this.#layers(B, (l, dk, q, k) => {
      const nh = this.config.numHeads;
      if (this.#attn) {
        // Each sequence's layer state in the arena (the kernel updates it there): in place, or
        // through a copy.
        const scratch = this.#attn.state.subarray(0, nh * dk * hd);
        const lambda = this.#attn.lambda.subarray(l * nh);
        for (let b = 0; b < B; b++) {
          const own = this.#arena!.owns(states[b].layers[l]);
          const S = own ? states[b].layers[l] : scratch;
          if (!own) S.set(states[b].layers[l]);
          this.#arena!.recurrent({
            S,
            q: q.subarray(b * dk),
            k: k.subarray(b * dk),
            qkStride: B * dk,
            v: this.#qkvu.subarray(b * 4 * H + 2 * H),
            o: this.#o.subarray(b * H),
            lambda,
            heads: nh,
            dk,
            dv: hd,
          });
          if (!own) states[b].layers[l].set(S);
        }
        return;
      }
      for (let h = 0; h < nh; h++) {
        const lambda = this.#lambda[l][h];
        for (let b = 0; b < B; b++) {
          recurrentStep(
            states[b].layers[l],
            h * dk * hd,
            dk,
            hd,
            lambda,
            q,
            (h * B + b) * dk,
            k,
            (h * B + b) * dk,
            this.#qkvu,
            b * 4 * H + 2 * H + h * hd,
            this.#o,
            b * H + h * hd,
            this.#acc,
          );
        }
      }
    }, (b) => states[b].position);
    for (const s of states) s.position++;
    const out = new Float32Array(B * this.config.vocabSize);
    this.#head(0, B, out, 0);
    return out;
  }

  #embed(ids: number[]): void {
    const D = this.config.embedDim;
    const scale = this.config.embedScale;
    const e = this.#erow;
    for (let t = 0; t < ids.length; t++) {
      widenRow(this.#w.embed, ids[t], e);
      for (let i = 0; i < D; i++) this.#x[t * D + i] = Math.fround(scale * e[i]);
    }
  }

  #norm(
    x: Float32Array,
    T: number,
    D: number,
    ln: { w: Float32Array; b: Float32Array } | null,
    y: Float32Array,
  ): void {
    if (ln) layerNorm(x, T, D, ln.w, ln.b, y);
    else simpleRmsNorm(x, T, D, y);
  }

  /**
   * The decoder stack over T rows. `attend(l, dk, q, k)` computes every head of layer l into #o
   * from q/k head-major per segment of rows (segment [t0, t0 + n) at t0·h·dk as [h][n][dk]; one
   * segment of all T rows by default); `position(t)` is row t's absolute position (for LRPE).
   */
  #layers(
    T: number,
    attend: (l: number, dk: number, q: Float32Array, k: Float32Array) => void,
    position: (t: number) => number,
    segments: readonly Segment[] = [{ t0: 0, n: T }],
  ): void {
    const c = this.config;
    const { embedDim: D, hiddenDim: H, gluDim: G, numHeads: nh, headDim: hd } = c;
    const x = this.#x, a = this.#a, qkvu = this.#qkvu, q = this.#q, k = this.#k, o = this.#o;
    for (let l = 0; l < c.numLayers; l++) {
      const w = this.#w.layers[l];
      const kw = this.#kl[l];
      this.#norm(x, T, D, w.tokenNorm, a);
      if (this.#arena) {
        // The activation of q and k by the thread that computed them.
        const act = { activation: c.activation, rows: 2 * H };
        this.#arena.linear(a, T, kw.qkvu as StoredMatrix, kw.qkvuBias, 4 * H, D, qkvu, act);
      } else {
        linear(a, T, kw.qkvu as Float32Array, kw.qkvuBias, 4 * H, D, qkvu);
        for (let t = 0; t < T; t++) activate(c.activation, qkvu, t * 4 * H, 2 * H);
      }
      const dk = stateKeyDim(c, l);
      // Head-major q and k per segment, widened by LRPE: [x·cos(θ·pos), x·sin(θ·pos)].
      for (const { t0, n } of segments) {
        for (let h = 0; h < nh; h++) {
          for (let t = t0; t < t0 + n; t++) {
            const src = t * 4 * H + h * hd;
            const dst = (t0 * nh + h * n + t - t0) * dk;
            if (w.theta) {
              const pos = position(t);
              for (let i = 0; i < hd; i++) {
                const ang = Math.fround(w.theta[h * hd + i] * pos);
                const cs = Math.cos(ang), sn = Math.sin(ang);
                const qv = qkvu[src + i], kv = qkvu[src + H + i];
                q[dst + i] = qv * cs;
                q[dst + hd + i] = qv * sn;
                k[dst + i] = kv * cs;
                k[dst + hd + i] = kv * sn;
              }
            } else {
              for (let i = 0; i < hd; i++) {
                q[dst + i] = qkvu[src + i];
                k[dst + i] = qkvu[src + H + i];
              }
            }
          }
        }
      }
      attend(l, dk, q, k);
      // norm over the whole hidden width, then the u gate.
      this.#norm(o, T, H, w.mixerNorm, a);
      for (let t = 0; t < T; t++) {
        for (let i = 0; i < H; i++) a[t * H + i] *= qkvu[t * 4 * H + 3 * H + i];
      }
      this.#linear(a, T, kw.out, kw.outBias, D, H, o);
      for (let i = 0; i < T * D; i++) x[i] += o[i];
      // SGLU channel mixer.
      this.#norm(x, T, D, w.channelNorm, a);
      if (this.#arena) {
        // Both matrices and the gate by row blocks: one wake-up of the threads.
        this.#arena.glu(a, T, kw.l1, kw.l1Bias, kw.l2, kw.l2Bias, G, D, this.#g1, this.#g2);
      } else {
        this.#linear(a, T, kw.l1, kw.l1Bias, G, D, this.#g1);
        this.#linear(a, T, kw.l2, kw.l2Bias, G, D, this.#g2);
        for (let i = 0; i < T * G; i++) this.#g1[i] *= this.#g2[i];
      }
      this.#linear(this.#g1, T, kw.l3, kw.l3Bias, D, G, o);
      for (let i = 0; i < T * D; i++) x[i] += o[i];
    }
  }

  /** Final norm and output head for rows [from, from+n) into out at outOff. */
  #head(from: number, n: number, out: Float32Array, outOff: number): void {
    const { embedDim: D, vocabSize: V } = this.config;
    const a = this.#a;
    this.#norm(this.#x.subarray(from * D, (from + n) * D), n, D, this.#w.finalNorm, a);
    if (!this.#arena) {
      linear(a, n, this.#headW as Float32Array, null, V, D, out, V, outOff);
      return;
    }
    // The wasm kernel writes into the arena; rows go out in groups that fit its scratch.
    const per = this.#headScratch.length / V;
    for (let r = 0; r < n; r += per) {
      const m = Math.min(per, n - r);
      this.#arena.linear(
        a.subarray(r * D, (r + m) * D),
        m,
        this.#headW,
        null,
        V,
        D,
        this.#headScratch,
      );
      out.set(this.#headScratch.subarray(0, m * V), outOff + r * V);
    }
  }
}

function copyInto(dst: Float32Array, src: Float32Array): Float32Array {
  dst.set(src);
  return dst;
}

/** A copy of a stored matrix in the arena (same dtype). */
function copyMatrix(a: WasmArena, m: StoredMatrix): StoredMatrix {
  const n = m.rows * m.cols;
  switch (m.dtype) {
    case "f32": {
      const data = a.allocF32(n);
      data.set(m.data);
      return { ...m, data };
    }
    case "bf16":
    case "f16": {
      const data = a.allocU16(n);
      data.set(m.data);
      return { ...m, data };
    }
    case "int8": {
      const data = a.allocI8(n);
      data.set(m.data);
      return { ...m, data, scales: copyInto(a.allocF32(m.rows), m.scales) };
    }
  }
}
