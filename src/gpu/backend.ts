/**
 * The WebGPU backend behind the `Backend` interface: resident states are slots of the GPU state
 * pool; prefill and decode run the WGSL kernels; results come back through staging buffers, small
 * ones through an `OffscreenCanvas` (no map timer: `readback.ts`), the rest mapped.
 * Work is encoded and submitted synchronously per operation, so concurrent callers never see each
 * other's inputs; a device loss fails every call with a clear error.
 * @module
 */

import type {
  Backend,
  BackendState,
  LogitsMode,
  PrefillItem,
  SampledRow,
} from "../engine/backend.ts";
import { InputError, TnlError } from "../errors.ts";
import type { ModelConfig } from "../model/config.ts";
import { type ModelState, stateOverBytes } from "../model/state.ts";
import type { TensorSource } from "../model/weights/source.ts";
import { newRngState } from "../engine/rng.ts";
import { validateSamplingParams } from "../engine/sampler.ts";
import { acquireDevice, type DeviceOptions, type GpuContext } from "./device.ts";
import {
  MAX_LOGIT_BIAS,
  ROW,
  ROW_FLAGS,
  ROW_WORDS,
  SAMPLING_WORD_FIELDS,
  SAMPLING_WORDS,
} from "./layout.ts";
import { encodeOps, lightningBlock, type Op } from "./ops/mod.ts";
import { seqsPerWorkgroup } from "./matvec_tiling.ts";
import { GpuModel, type GpuModelOptions } from "./model.ts";
import { GpuPrefill, type GpuPrefillOptions } from "./prefill.ts";
import { StagingPool } from "./staging.ts";
import { CanvasReadback } from "./readback.ts";
import { FiniteCheck } from "./finite_check.ts";

/** Decode steps encoded per queue submission inside one `decodeSampled` call. */
const STEPS_PER_SUBMIT = 4;

/**
 * The engine's prefill chunk on the GPU (`preferredPrefillChunk`): part of the numerics (which
 * tokens take the decode path) and the prefix cache's granularity, so it stays at 2,048 while the
 * prefill's capacity grows.
 */
const ENGINE_PREFILL_CHUNK = 2048;

/** A state slot on the GPU. */
class GpuState implements BackendState {
  position = 0;
  released = false;
  constructor(readonly slot: number, readonly owner: WebGpuBackend) {}
}

/** What a sampled decode call wrote besides its rows (rewritten when a call continues it). */
interface CallInputs {
  /** Sampling parameters, `SAMPLING_WORDS` per row. */
  sampling: ArrayBuffer;
  /** Logit-bias entries, when a row has some. */
  bias: Uint32Array<ArrayBuffer> | null;
}

/** A submitted sampled decode call, until its staging buffer is read. */
interface SampledCall {
  /** Its rows' states, in row order. */
  states: GpuState[];
  /** Steps submitted. */
  steps: number;
  /** Sampling parameters and biases of its rows. */
  inputs: CallInputs;
  /** Where the ring, the rows and the captured states are copied. */
  staging: GPUBuffer;
  /** Bytes to read from `staging`. */
  total: number;
  /** Bytes of the ring (the rows follow). */
  ringBytes: number;
  /** Where the captured states start. */
  stateAt: number;
  /** States copied after the steps. */
  captured: GpuState[];
}

/** Whether `part` lists elements of `whole` in the same order. */
function isSubsequence<T>(part: readonly T[], whole: readonly T[]): boolean {
  let i = 0;
  for (const x of whole) if (i < part.length && part[i] === x) i++;
  return i === part.length;
}

/** Options of the WebGPU backend. */
export interface WebGpuBackendOptions extends GpuModelOptions, DeviceOptions, GpuPrefillOptions {
  /** An existing device context to use instead of acquiring one. */
  context?: GpuContext;
  /**
   * Most tokens per prefill submission, the prefill buffers' size (default 4096, reduced to fit
   * the binding limit).
   */
  prefillChunk?: number;
  /**
   * How results come back: "auto" (default) reads small ones (at most 256 KiB: sampled tokens,
   * one row of logits) through an `OffscreenCanvas` where the runtime passes its round-trip check,
   * which spares Deno's 10 ms map timer, and maps the rest; "map" maps every readback.
   */
  readback?: "auto" | "map";
}

/** The WebGPU implementation of `Backend`. */
export class WebGpuBackend implements Backend {
  /** Always "webgpu". */
  readonly kind = "webgpu" as const;
  /** Model configuration. */
  readonly config: ModelConfig;
  /** Adapter description. */
  readonly device: string;
  /** Most sequences per decode call. */
  readonly maxBatch: number;
  /** The model on the GPU. */
  readonly model: GpuModel;
  readonly #free: number[];
  #disposed = false;
  /** Readback buffers, reused. */
  readonly #stagingPool: StagingPool;
  /** The GPU's non-finite check of states read back. */
  readonly #finite: FiniteCheck;

  /** The prefill machinery. */
  readonly prefiller: GpuPrefill;
  /** How small results come back: "canvas" (`CanvasReadback`) or "map" (every read mapped). */
  readonly readback: "canvas" | "map";

  private constructor(
    model: GpuModel,
    prefiller: GpuPrefill,
    finite: FiniteCheck,
    reader: CanvasReadback | null,
  ) {
    this.#finite = finite;
    this.model = model;
    this.prefiller = prefiller;
    this.config = model.config;
    this.device = model.ctx.info.description;
    this.maxBatch = model.maxBatch;
    this.#free = Array.from({ length: model.maxSlots }, (_, i) => model.maxSlots - 1 - i);
    this.#stagingPool = new StagingPool(model.ctx.device, reader);
    this.readback = reader ? "canvas" : "map";
  }

  /** Acquire a device (unless given), upload the weights and build the backend. */
  static async load(
    source: TensorSource,
    config: ModelConfig,
    label: string,
    options: WebGpuBackendOptions = {},
  ): Promise<WebGpuBackend> {
    if (![undefined, "auto", "map"].includes(options.readback)) {
      throw new InputError("readback", `"auto" or "map", not ${JSON.stringify(options.readback)}`);
    }
    const ctx = options.context ?? await acquireDevice(options);
    const model = await GpuModel.create(ctx, config, source, label, options);
    // Build the prefill and the common decode plans now (the first request does not pay for it),
    // and surface any validation error here rather than as wrong numbers later.
    ctx.device.pushErrorScope("validation");
    let prefiller: GpuPrefill | null = null;
    let finite: FiniteCheck | null = null;
    let reader: CanvasReadback | null = null;
    let failure: unknown = null;
    try {
      prefiller = await GpuPrefill.create(model, options.prefillChunk, options);
      // Every decode tile variant and the sampler: no request pays for a shader compile.
      const tiles = new Set<number>();
      for (let b = 1; b <= model.maxBatch; b++) tiles.add(seqsPerWorkgroup(b));
      await Promise.all([...tiles].map((t) => model.decodePlan(t)));
      await model.samplePlan();
      finite = await FiniteCheck.create(model, model.maxSlots);
      if (options.readback !== "map") reader = await CanvasReadback.create(ctx.device);
    } catch (e) {
      failure = e;
    }
    const err = await ctx.device.popErrorScope();
    if (err || failure || !prefiller || !finite) {
      prefiller?.destroy();
      model.destroy();
      if (failure) throw failure;
      throw new TnlError("backend_unavailable", `WebGPU setup failed validation: ${err?.message}`);
    }
    const backend = new WebGpuBackend(model, prefiller, finite, reader);
    await backend.#warmUp();
    return backend;
  }

  /**
   * Run each decode tile variant once at its largest batch, and a short prefill, on scratch slots:
   * the first use of a batch shape costs the driver up to seconds (2.3 s for batch 64 at 385M on
   * the H200), which a request must not pay.
   */
  async #warmUp(): Promise<void> {
    const B = Math.min(this.maxBatch, this.model.maxSlots);
    const states = Array.from({ length: B }, () => this.allocState());
    try {
      await this.prefill(states[0], Int32Array.of(0, 1, 2), "none");
      const sizes = new Set<number>();
      for (let b = 1; b <= B; b++) sizes.add(b === B ? b : seqsPerWorkgroup(b));
      const sampling = validateSamplingParams({ temperature: 0.8 }, this.config.vocabSize);
      for (const n of [...sizes].filter((b) => b <= B)) {
        const rows = states.slice(0, n).map((state): SampledRow => ({
          state,
          token: 0,
          budget: 2,
          sampling,
          rng: newRngState(1),
          stopAtEos: false,
          penalties: false,
        }));
        await this.decodeSampled(rows, 2);
      }
    } finally {
      for (const s of states) this.releaseState(s);
    }
  }

  #check(): void {
    if (this.model.ctx.lost) throw this.model.ctx.lost;
    if (this.#disposed) {
      throw new TnlError("backend_unavailable", "the WebGPU backend was disposed");
    }
  }

  #own(s: BackendState): GpuState {
    if (!(s instanceof GpuState) || s.owner !== this) {
      throw new InputError("state", "this state belongs to another backend");
    }
    if (s.released) throw new InputError("state", "this state was released");
    return s;
  }

  /** Read a staging buffer and return a copy of its bytes, failing on device loss. */
  #read(staging: GPUBuffer, bytes: number): Promise<ArrayBuffer> {
    return this.#readWith(staging, bytes, (mapped) => mapped.slice(0));
  }

  /** Read a staging buffer through the pool (`StagingPool.read`), failing on device loss. */
  #readWith<T>(staging: GPUBuffer, bytes: number, use: (data: ArrayBuffer) => T): Promise<T> {
    const lost = this.model.ctx.lostPromise.then((e): never => {
      throw e;
    });
    return this.#stagingPool.read(staging, bytes, use, lost);
  }

  #staging(bytes: number): GPUBuffer {
    return this.#stagingPool.take(bytes);
  }

  #checkTokens(tokens: Int32Array): void {
    const V = this.config.vocabSize;
    for (let i = 0; i < tokens.length; i++) {
      const t = tokens[i];
      if (!(t >= 0 && t < V)) {
        throw new InputError(
          "tokens",
          `token ${t} at index ${i} is outside the vocabulary [0, ${V})`,
        );
      }
    }
  }

  /**
   * Decode `steps` tokens for each sequence (token s of sequence b at tokens[s·B + b]): per step the
   * rows are written and the step submitted (writeBuffer is ordered before the next submit).
   */
  async #steps(
    states: GpuState[],
    tokens: Int32Array,
    steps: number,
    logits: "each" | "last" | "none",
  ): Promise<Float32Array> {
    const B = states.length;
    const m = this.model;
    const dev = m.ctx.device;
    const V = this.config.vocabSize;
    const plan = await m.decodePlan(seqsPerWorkgroup(B));
    this.#check();
    const rowsData = new Uint32Array(B * ROW_WORDS);
    const outBytes = logits === "each" ? steps * B * V * 4 : logits === "last" ? B * V * 4 : 0;
    const staging = outBytes ? this.#staging(outBytes) : null;
    dev.queue.writeBuffer(m.ctl, 0, new Uint32Array([B]));
    for (let s = 0; s < steps; s++) {
      for (let b = 0; b < B; b++) {
        rowsData[b * ROW_WORDS + ROW.slot] = states[b].slot;
        rowsData[b * ROW_WORDS + ROW.pos] = states[b].position + s;
        rowsData[b * ROW_WORDS + ROW.token] = tokens[s * B + b];
      }
      dev.queue.writeBuffer(m.rows, 0, rowsData);
      const enc = dev.createCommandEncoder();
      const pass = enc.beginComputePass();
      encodeOps(pass, plan, B);
      pass.end();
      if (staging && (logits === "each" || s === steps - 1)) {
        enc.copyBufferToBuffer(
          m.logits,
          0,
          staging,
          logits === "each" ? s * B * V * 4 : 0,
          B * V * 4,
        );
      }
      dev.queue.submit([enc.finish()]);
    }
    for (const st of states) st.position += steps;
    if (!staging) return new Float32Array(0);
    return new Float32Array(await this.#read(staging, outBytes));
  }

  /** Run tokens from a host state: upload, prefill, download (convenience path). */
  async forward(state: ModelState, tokens: Int32Array, logits: LogitsMode): Promise<Float32Array> {
    this.#checkTokens(tokens);
    if (tokens.length === 0) throw new InputError("tokens", "must not be empty");
    const s = this.allocState();
    try {
      await this.writeState(s, state);
      const out = await this.prefill(s, tokens, logits);
      const after = await this.readState(s);
      state.position = after.position;
      for (let l = 0; l < after.layers.length; l++) state.layers[l].set(after.layers[l]);
      return out;
    } finally {
      this.releaseState(s);
    }
  }

  /** A zero state in a free slot. */
  allocState(): BackendState {
    this.#check();
    const slot = this.#free.pop();
    if (slot === undefined) {
      throw new TnlError("overloaded", `all ${this.model.maxSlots} GPU state slots are in use`);
    }
    const m = this.model;
    const enc = m.ctx.device.createCommandEncoder();
    for (let l = 0; l < m.states.length; l++) {
      enc.clearBuffer(m.states[l], slot * m.slotFloats[l] * 4, m.slotFloats[l] * 4);
    }
    m.ctx.device.queue.submit([enc.finish()]);
    return new GpuState(slot, this);
  }

  /** Return a slot to the pool. */
  releaseState(state: BackendState): void {
    const s = this.#own(state);
    s.released = true;
    this.#free.push(s.slot);
  }

  /** Overwrite a slot with a host state. */
  writeState(state: BackendState, host: ModelState): Promise<void> {
    try {
      this.#check();
      const s = this.#own(state);
      const m = this.model;
      if (host.layers.length !== m.states.length) {
        throw new InputError(
          "state",
          `has ${host.layers.length} layers, expected ${m.states.length}`,
        );
      }
      for (let l = 0; l < host.layers.length; l++) {
        if (host.layers[l].length !== m.slotFloats[l]) {
          throw new InputError(
            "state",
            `layer ${l} has ${host.layers[l].length} values, expected ${m.slotFloats[l]}`,
          );
        }
      }
      for (let l = 0; l < host.layers.length; l++) {
        m.ctx.device.queue.writeBuffer(m.states[l], s.slot * m.slotFloats[l] * 4, host.layers[l]);
      }
      s.position = host.position;
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Copy a slot to the host. */
  async readState(state: BackendState): Promise<ModelState> {
    return (await this.readStates([state]))[0];
  }

  /** Bytes of one slot's state (all layers). */
  get #stateBytes(): number {
    return this.model.slotFloats.reduce((a, b) => a + b, 0) * 4;
  }

  /** Staging bytes of `n` states with their finiteness flags (see `#copyStates`). */
  #statesBlockBytes(n: number): number {
    return n * (4 + this.#stateBytes);
  }

  /**
   * Encode the finiteness check of slots' states and copies of its flags (one u32 per slot) and of
   * the states (all layers, slot after slot) into a staging buffer at `at`. Submit `enc` before
   * encoding another copy (the check's slot list is written with `writeBuffer`).
   */
  #copyStates(enc: GPUCommandEncoder, slots: GpuState[], staging: GPUBuffer, at: number): void {
    if (slots.length === 0) return;
    const m = this.model;
    this.#finite.encode(enc, slots.map((s) => s.slot));
    enc.copyBufferToBuffer(this.#finite.flags, 0, staging, at, slots.length * 4);
    let off = at + slots.length * 4;
    for (const s of slots) {
      for (let l = 0; l < m.states.length; l++) {
        const n = m.slotFloats[l] * 4;
        enc.copyBufferToBuffer(m.states[l], s.slot * n, staging, off, n);
        off += n;
      }
    }
  }

  /**
   * Host states from the bytes `#copyStates` wrote at `at`, at the given positions: each copied
   * once out of the mapped range into a buffer of its own (its layers are views of it, so it
   * transfers as one), marked finite or not from the GPU's check (`ModelState.finite`).
   */
  #hostStates(bytes: ArrayBuffer, at: number, positions: number[]): ModelState[] {
    const per = this.#stateBytes;
    const flags = new Uint32Array(bytes, at, positions.length);
    const first = at + positions.length * 4;
    return positions.map((position, i) => ({
      ...stateOverBytes(this.config, position, bytes.slice(first + i * per, first + (i + 1) * per)),
      finite: flags[i] === 0,
    }));
  }

  /** How many states fit one staging buffer (half the device's buffer limit, at least one). */
  get #statesPerRead(): number {
    const limit = this.model.ctx.device.limits.maxBufferSize;
    const fit = Math.floor(Math.min(limit / 2, 1 << 30) / this.#statesBlockBytes(1));
    return Math.max(1, Math.min(this.#finite.capacity, fit));
  }

  /** Copy several slots to the host with one readback per staging buffer. */
  async readStates(states: readonly BackendState[]): Promise<ModelState[]> {
    this.#check();
    const own = states.map((s) => this.#own(s));
    const out: ModelState[] = [];
    const per = this.#statesPerRead;
    for (let i = 0; i < own.length; i += per) {
      const group = own.slice(i, i + per);
      const total = this.#statesBlockBytes(group.length);
      const staging = this.#staging(total);
      const enc = this.model.ctx.device.createCommandEncoder();
      this.#copyStates(enc, group, staging, 0);
      this.model.ctx.device.queue.submit([enc.finish()]);
      const positions = group.map((s) => s.position);
      out.push(
        ...await this.#readWith(staging, total, (m) => this.#hostStates(m, 0, positions)),
      );
    }
    return out;
  }

  /** Copy one slot into another on the GPU. */
  copyState(dst: BackendState, src: BackendState): Promise<void> {
    try {
      this.#check();
      const d = this.#own(dst), s = this.#own(src);
      const m = this.model;
      const enc = m.ctx.device.createCommandEncoder();
      this.#encodeCopyState(enc, s, d);
      m.ctx.device.queue.submit([enc.finish()]);
      d.position = s.position;
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Encode a copy of `src`'s state (every layer) into `dst`'s slot. */
  #encodeCopyState(enc: GPUCommandEncoder, src: GpuState, dst: GpuState): void {
    const m = this.model;
    // A buffer cannot be both source and destination of one copy: go through a scratch buffer.
    for (let l = 0; l < m.states.length; l++) {
      const n = m.slotFloats[l] * 4;
      enc.copyBufferToBuffer(m.states[l], src.slot * n, m.slotScratch, 0, n);
      enc.copyBufferToBuffer(m.slotScratch, 0, m.states[l], dst.slot * n, n);
    }
  }

  /** Feed tokens of one sequence. */
  async prefill(
    state: BackendState,
    tokens: Int32Array,
    logits: LogitsMode,
  ): Promise<Float32Array> {
    this.#check();
    const s = this.#own(state);
    if (tokens.length === 0) throw new InputError("tokens", "must not be empty");
    this.#checkTokens(tokens);
    const V = this.config.vocabSize;
    const cap = this.prefiller.capacity;
    const out = new Float32Array(logits === "all" ? tokens.length * V : logits === "last" ? V : 0);
    const read = (staging: GPUBuffer, bytes: number) => this.#read(staging, bytes);
    for (let c = 0; c < tokens.length; c += cap) {
      const chunk = tokens.subarray(c, Math.min(c + cap, tokens.length));
      const lastChunk = c + chunk.length === tokens.length;
      const mode: LogitsMode = logits === "all"
        ? "all"
        : logits === "last" && lastChunk
        ? "last"
        : "none";
      this.#check();
      const lg = await this.prefiller.run(
        s.slot,
        s.position,
        chunk,
        mode,
        read,
        (bytes) => this.#staging(bytes),
      );
      s.position += chunk.length;
      if (mode === "all") out.set(lg, c * V);
      else if (mode === "last") out.set(lg);
    }
    return out;
  }

  /**
   * The engine's prefill chunk (where its chunks end, and the prefix cache keeps states): 2,048
   * tokens, or the capacity when smaller. A round's consecutive chunks of one sequence reach
   * `prefillMany` together and go to the GPU in submissions of up to the capacity.
   */
  get preferredPrefillChunk(): number {
    return Math.min(ENGINE_PREFILL_CHUNK, this.prefiller.capacity);
  }

  /**
   * Feed several sequences (no logits), no readback. Consecutive items of one state whose join
   * is on a Lightning block boundary are fed as one prompt, in submissions of up to the capacity:
   * the same bits as fed apart (each block, and the state carried between submissions, are
   * computed alike), fewer and larger products.
   */
  async prefillMany(items: readonly PrefillItem[]): Promise<void> {
    this.#check();
    const own = items.map((it) => this.#own(it.state));
    for (const it of items) {
      if (it.tokens.length === 0) throw new InputError("tokens", "must not be empty");
      this.#checkTokens(it.tokens);
    }
    const blk = lightningBlock(this.config.headDim);
    for (let i = 0; i < items.length;) {
      let j = i + 1, n = items[i].tokens.length;
      while (j < items.length && own[j] === own[i] && (own[i].position + n) % blk === 0) {
        n += items[j++].tokens.length;
      }
      const tokens = j === i + 1 ? items[i].tokens : new Int32Array(n);
      if (j > i + 1) {
        let at = 0;
        for (let k = i; k < j; k++) {
          tokens.set(items[k].tokens, at);
          at += items[k].tokens.length;
        }
      }
      await this.prefill(own[i], tokens, "none");
      i = j;
    }
  }

  /** Feed tokens one decode step at a time (the recurrent path; used to rewind after a stop). */
  async replay(state: BackendState, tokens: Int32Array): Promise<void> {
    this.#check();
    const s = this.#own(state);
    this.#checkTokens(tokens);
    if (tokens.length) await this.#steps([s], tokens, tokens.length, "none");
  }

  /**
   * Feed several sequences their tokens one decode step at a time, batched: all sequences take the
   * steps they share together, then the longer ones go on in smaller batches. The same numbers as
   * `replay` per sequence (the decode kernels compute each sequence alone); no readback.
   */
  async replayMany(items: readonly PrefillItem[]): Promise<void> {
    this.#check();
    const own = items.map((it) => this.#own(it.state));
    if (new Set(own.map((s) => s.slot)).size !== own.length) {
      throw new InputError("states", "the same state appears twice");
    }
    for (const it of items) this.#checkTokens(it.tokens);
    let active = items.map((_, i) => i).filter((i) => items[i].tokens.length > 0);
    let done = 0;
    while (active.length) {
      const steps = Math.min(...active.map((j) => items[j].tokens.length)) - done;
      for (let i = 0; i < active.length; i += this.maxBatch) {
        const group = active.slice(i, i + this.maxBatch);
        const tokens = new Int32Array(steps * group.length);
        for (let s = 0; s < steps; s++) {
          group.forEach((j, b) => (tokens[s * group.length + b] = items[j].tokens[done + s]));
        }
        await this.#steps(group.map((j) => own[j]), tokens, steps, "none");
      }
      done += steps;
      active = active.filter((j) => items[j].tokens.length > done);
    }
  }

  /** Most steps per `decodeSampled` call (the output ring's capacity). */
  get maxSampledSteps(): number {
    return this.model.ring;
  }

  /** Upload a slot's token history for the penalties (seen ids; generated counts). */
  setTokenHistory(
    state: BackendState,
    seen: Iterable<number>,
    generated: Iterable<[number, number]>,
  ): Promise<void> {
    try {
      this.#check();
      const s = this.#own(state);
      const m = this.model;
      const V = this.config.vocabSize;
      const bits = new Uint32Array(m.seenWords);
      for (const t of seen) bits[t >>> 5] |= 1 << (t & 31);
      const counts = new Uint32Array(V);
      for (const [t, n] of generated) counts[t] = n;
      m.ctx.device.queue.writeBuffer(m.seen, s.slot * m.seenWords * 4, bits);
      m.ctx.device.queue.writeBuffer(m.counts, s.slot * V * 4, counts);
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** `decodeSampled` continues calls on the device (`Backend.decodesAhead`). */
  readonly decodesAhead = true;
  #sample: Op[] | null = null;
  #rollover: Op | null = null;
  /** The call continued on the device (`decodeSampled`'s `ahead`), not read back yet. */
  #ahead: SampledCall | null = null;

  /**
   * Several decode steps per row with sampling on the GPU; one readback at the end. With `ahead`
   * > 0, once this call's steps are done on the device, `ahead` more steps are submitted for the
   * same rows before this call's tokens are returned (they run while a mapped read waits for
   * Deno's timer and while the caller takes them): the next call with these rows (the same states
   * in the same order, or some of them: the others are discarded, see `Backend.decodesAhead`) and
   * `steps` = `ahead` takes them instead of submitting.
   */
  async decodeSampled(
    rows: readonly SampledRow[],
    steps: number,
    ahead = 0,
  ): Promise<Int32Array[]> {
    this.#check();
    const m = this.model;
    const B = rows.length;
    if (B === 0 || B > this.maxBatch) {
      throw new InputError("rows", `batch of ${B} (1..${this.maxBatch})`);
    }
    if (!(steps >= 1 && steps <= m.ring)) {
      throw new InputError("steps", `${steps} steps (1..${m.ring})`);
    }
    if (!(ahead === 0 || (Number.isInteger(ahead) && ahead >= 1 && ahead <= m.ring))) {
      throw new InputError("ahead", `${ahead} steps ahead (0..${m.ring})`);
    }
    const own = rows.map((r) => this.#own(r.state));
    if (new Set(own.map((s) => s.slot)).size !== B) {
      throw new InputError("rows", "the same state appears twice");
    }
    const snapshots = rows.flatMap((r, b): [GpuState, GpuState][] =>
      r.aheadSnapshot ? [[own[b], this.#own(r.aheadSnapshot)]] : []
    );
    if (snapshots.some(([, s]) => own.includes(s))) {
      throw new InputError("rows", "a row's ahead snapshot is a row of the call");
    }
    let call = this.#ahead;
    this.#ahead = null;
    const continued = call !== null && call.steps === steps && isSubsequence(own, call.states);
    if (call && !continued) {
      await this.#settleAbandoned(call);
      call = null;
    }
    if (!call) {
      this.#checkTokens(Int32Array.from(rows, (r) => r.token));
      for (const r of rows) {
        if (r.sampling.biasIds.length > MAX_LOGIT_BIAS) {
          throw new InputError("logit_bias", `at most ${MAX_LOGIT_BIAS} entries`);
        }
      }
      const plan = await m.decodePlan(seqsPerWorkgroup(B));
      this.#sample ??= await m.samplePlan();
      if (ahead) this.#rollover ??= await m.rolloverOp();
      this.#check();
      const inputs = this.#writeRows(rows, own, steps);
      const captured = own.filter((_, b) => rows[b].capture).slice(0, this.#statesPerRead);
      call = this.#submitSteps(own, steps, inputs, plan, null, captured, ahead > 0);
    } else if (ahead) {
      this.#rollover ??= await m.rolloverOp();
      this.#check();
    }
    // The read blocks this thread until the device is idle (a map then waits about 10 ms more in
    // Deno: ext/webgpu's map loop); the continuation is submitted right after, so the device works
    // on while the host takes these tokens.
    let hostStates: ModelState[] = [];
    const read = this.#readWith(call.staging, call.total, (mapped) => {
      hostStates = this.#hostStates(mapped, call.stateAt, call.captured.map(() => 0));
      return mapped.slice(0, call.stateAt);
    });
    if (ahead) {
      try {
        const plan = await m.decodePlan(seqsPerWorkgroup(call.states.length));
        // Rows left out of this call stay stopped in the next.
        const keep = Uint32Array.from(call.states, (s) => (own.includes(s) ? 1 : 0));
        m.ctx.device.queue.writeBuffer(m.rowsKeep, 0, keep);
        this.#ahead = this.#submitSteps(
          call.states,
          ahead,
          call.inputs,
          plan,
          this.#rollover,
          [],
          true,
          snapshots,
        );
      } catch (e) {
        await read.catch(() => {});
        throw e;
      }
    }
    const bytes = await read;
    const all = call.states.length;
    const ring = new Int32Array(bytes, 0, all * m.ring);
    const after = new Uint32Array(bytes, call.ringBytes, all * ROW_WORDS);
    const outCount = (i: number) => after[i * ROW_WORDS + ROW.outCount];
    // Rows left out are discarded: their positions do not count the continued steps.
    const index = own.map((s) => call.states.indexOf(s));
    index.forEach((i, b) => own[b].position += outCount(i));
    for (const [row, snap] of snapshots) snap.position = row.position;
    const tokens = rows.map((r, b) => {
      const i = index[b];
      r.rng.counter = after[i * ROW_WORDS + ROW.rngHi] * 4294967296 +
        after[i * ROW_WORDS + ROW.rngLo];
      return ring.slice(i * m.ring, i * m.ring + outCount(i));
    });
    call.captured.forEach((s, i) => {
      hostStates[i].position = s.position;
      rows[own.indexOf(s)].captured = hostStates[i];
    });
    return tokens;
  }

  /** Write the rows, sampling parameters and logit biases of a call; what it wrote. */
  #writeRows(rows: readonly SampledRow[], own: GpuState[], steps: number): CallInputs {
    const m = this.model;
    const dev = m.ctx.device;
    const B = rows.length;
    const rowData = new Uint32Array(B * ROW_WORDS);
    const sp = new ArrayBuffer(B * SAMPLING_WORDS * 4);
    const spf = new Float32Array(sp), spu = new Uint32Array(sp);
    const bias = rows.some((r) => r.sampling.biasIds.length)
      ? new Uint32Array(B * MAX_LOGIT_BIAS * 2)
      : null;
    const biasF = bias && new Float32Array(bias.buffer);
    rows.forEach((r, b) => {
      const o = b * ROW_WORDS;
      rowData[o + ROW.slot] = own[b].slot;
      rowData[o + ROW.pos] = own[b].position;
      rowData[o + ROW.token] = r.token;
      rowData[o + ROW.rngLo] = r.rng.counter >>> 0;
      rowData[o + ROW.rngHi] = Math.floor(r.rng.counter / 4294967296) >>> 0;
      rowData[o + ROW.seedLo] = r.rng.seed >>> 0;
      rowData[o + ROW.seedHi] = Math.floor(r.rng.seed / 4294967296) >>> 0;
      const left = Math.max(1, Math.min(r.budget, 0xffffffff));
      rowData[o + ROW.left] = left;
      rowData[o + ROW.budget] = Math.min(left, steps);
      rowData[o + ROW.flags] = (r.stopAtEos ? ROW_FLAGS.stopAtEos : 0) |
        (r.penalties ? ROW_FLAGS.penalties : 0);
      const p = r.sampling;
      const q = b * SAMPLING_WORDS;
      SAMPLING_WORD_FIELDS.forEach((f, i) => {
        const v = f.type === "bias"
          ? p.biasIds.length
          : (p as unknown as Record<string, number>)[f.key];
        if (f.gpu!.word === "u32") spu[q + i] = v;
        else spf[q + i] = v;
      });
      for (let i = 0; i < p.biasIds.length; i++) {
        bias![(b * MAX_LOGIT_BIAS + i) * 2] = p.biasIds[i];
        biasF![(b * MAX_LOGIT_BIAS + i) * 2 + 1] = p.biasValues[i];
      }
    });
    dev.queue.writeBuffer(m.ctl, 0, Uint32Array.of(B, steps));
    dev.queue.writeBuffer(m.rows, 0, rowData);
    dev.queue.writeBuffer(m.sampling, 0, sp);
    if (bias) dev.queue.writeBuffer(m.bias, 0, bias);
    return { sampling: sp, bias };
  }

  /**
   * Encode and submit `steps` sampled decode steps over the rows in `m.rows` (first `rollover`,
   * when the call continues the one before: its rows carried over from `rowsAtEnd`), then the
   * copies of the ring, the rows and the captured states into a staging buffer; with `keepRows`,
   * the rows also go to `rowsAtEnd` for a continuation.
   */
  #submitSteps(
    states: GpuState[],
    steps: number,
    inputs: CallInputs,
    plan: Op[],
    rollover: Op | null,
    captured: GpuState[],
    keepRows: boolean,
    snapshots: [GpuState, GpuState][] = [],
  ): SampledCall {
    const m = this.model;
    const dev = m.ctx.device;
    const B = states.length;
    if (rollover) {
      // Other calls may have used these buffers since (the sampling words too).
      dev.queue.writeBuffer(m.ctl, 0, Uint32Array.of(B, steps));
      dev.queue.writeBuffer(m.sampling, 0, inputs.sampling);
      if (inputs.bias) dev.queue.writeBuffer(m.bias, 0, inputs.bias);
    }
    // Submit every few steps so the GPU starts while the CPU is still encoding the rest (encoding a
    // step costs about as much CPU time as the GPU spends on it at batch 1).
    // The first step goes alone, so the GPU starts at once.
    let enc = dev.createCommandEncoder();
    // Rows' states as they stand before these steps, into their snapshots.
    for (const [row, snap] of snapshots) this.#encodeCopyState(enc, row, snap);
    for (let s0 = 0; s0 < steps; s0 = s0 === 0 ? 1 : s0 + STEPS_PER_SUBMIT) {
      if (s0 > 0) {
        dev.queue.submit([enc.finish()]);
        enc = dev.createCommandEncoder();
      }
      const pass = enc.beginComputePass();
      const last = { pipeline: null as GPUComputePipeline | null };
      if (s0 === 0 && rollover) encodeOps(pass, [rollover], B, last);
      const until = s0 === 0 ? 1 : Math.min(steps, s0 + STEPS_PER_SUBMIT);
      for (let s = s0; s < until; s++) {
        encodeOps(pass, plan, B, last);
        encodeOps(pass, this.#sample!, B, last);
      }
      pass.end();
    }
    const ringBytes = B * m.ring * 4, rowBytes = B * ROW_WORDS * 4;
    // Rows that asked for it have their states copied after the steps, in the same submission.
    const stateAt = ringBytes + rowBytes;
    const total = stateAt + this.#statesBlockBytes(captured.length);
    const staging = this.#staging(total);
    enc.copyBufferToBuffer(m.ringBuffer, 0, staging, 0, ringBytes);
    enc.copyBufferToBuffer(m.rows, 0, staging, ringBytes, rowBytes);
    if (keepRows) enc.copyBufferToBuffer(m.rows, 0, m.rowsAtEnd, 0, rowBytes);
    this.#copyStates(enc, captured, staging, stateAt);
    dev.queue.submit([enc.finish()]);
    return { states, steps, inputs, staging, total, ringBytes, stateAt, captured };
  }

  /**
   * A continued call the caller did not take (its next call had other rows or steps): wait for
   * it and discard it, like rows left out of a call that takes one (positions unchanged).
   */
  async #settleAbandoned(call: SampledCall): Promise<void> {
    await this.#read(call.staging, call.total);
  }

  /** One token for each of several sequences. */
  async decode(states: readonly BackendState[], tokens: Int32Array): Promise<Float32Array> {
    this.#check();
    const own = states.map((s) => this.#own(s));
    if (own.length === 0 || tokens.length !== own.length) {
      throw new InputError(
        "tokens",
        `expected one token per state (${own.length}), got ${tokens.length}`,
      );
    }
    if (own.length > this.maxBatch) {
      throw new InputError("states", `batch of ${own.length} exceeds ${this.maxBatch}`);
    }
    if (new Set(own.map((s) => s.slot)).size !== own.length) {
      throw new InputError("states", "the same state appears twice in one batch");
    }
    this.#checkTokens(tokens);
    return await this.#steps(own, tokens, 1, "last");
  }

  /** Release the GPU memory (the device stays usable by others). */
  dispose(): Promise<void> {
    if (!this.#disposed) {
      this.#disposed = true;
      this.#ahead?.staging.destroy();
      this.#ahead = null;
      this.prefiller.destroy();
      this.#stagingPool.destroy();
      this.model.destroy();
    }
    return Promise.resolve();
  }
}
