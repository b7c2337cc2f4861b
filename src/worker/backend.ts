/**
 * A backend behind a Deno `Worker`: this thread keeps the slot bookkeeping and forwards every call
 * to `entry.ts`, which runs the WebGPU backend (it owns the device) or the CPU backend. In Deno 2.9.6 a readback (`mapAsync`)
 * blocks its thread until the GPU queue is empty; here that thread is the worker's, so the thread
 * that serves HTTP, SSE and session I/O never waits on the GPU; with the CPU backend, a long prefill
 * runs beside it instead of in it.
 *
 * When the worker dies or its device is lost, every call in flight fails with `device_lost` (the
 * engine fails the running requests with it), the worker is started again with the same model,
 * and the engine waits for it (`whenReady()`); the states it held are gone.
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
import type { ModelState } from "../model/state.ts";
import {
  fromWire,
  type SharedState,
  type WorkerLoaded,
  type WorkerLoadSpec,
  type WorkerMessage,
} from "./protocol.ts";

/** Upload buffers kept between `writeState` calls. */
const MAX_SPARE_STAGING = 2;

/** A state slot held by the worker, seen from this thread. */
class WorkerState implements BackendState {
  position = 0;
  released = false;
  constructor(readonly id: number, readonly owner: WorkerBackend, readonly epoch: number) {}
}

/** Loading progress reported by the worker. */
export type WorkerProgress = (p: { tensor: string; done: number; total: number }) => void;

/** A backend (WebGPU or CPU) running in a worker thread. */
export class WorkerBackend implements Backend {
  /** The backend the worker runs. */
  readonly kind: "webgpu" | "cpu";
  /** Model configuration. */
  readonly config: ModelConfig;
  /** Adapter description. */
  readonly device: string;
  /** Most sequences per decode call. */
  readonly maxBatch: number;
  /** Most steps per `decodeSampled` call (absent: host sampling). */
  readonly maxSampledSteps?: number;
  /** Prefill tokens per submission. */
  readonly preferredPrefillChunk?: number;
  /** Several decode steps per row with sampling in the worker (the device loop, or host sampling). */
  readonly decodeSampled?: (
    rows: readonly SampledRow[],
    steps: number,
    ahead?: number,
  ) => Promise<Int32Array[]>;
  /** Whether `decodeSampled` continues calls on the device (`Backend.decodesAhead`). */
  readonly decodesAhead?: boolean;
  /** Feed several sequences through the decode path (WebGPU only). */
  readonly replayMany?: (items: readonly PrefillItem[]) => Promise<void>;
  /** Give a slot's penalty bookkeeping its history (WebGPU only). */
  readonly setTokenHistory?: (
    state: BackendState,
    seen: Iterable<number>,
    generated: Iterable<[number, number]>,
  ) => Promise<void>;
  /** Feed tokens one decode step at a time (WebGPU only). */
  readonly replay?: (state: BackendState, tokens: Int32Array) => Promise<void>;
  /** End the worker's host-sampling round after its current step (the CPU backend only). */
  readonly interruptRound?: () => void;
  /** SHA-256 over the config and the weights, as the worker loaded them. */
  readonly fingerprint: string;
  /** Times the worker was started again after dying. */
  restarts = 0;

  readonly #spec: WorkerLoadSpec;
  readonly #maxSlots: number;
  /** The shared flag of `interruptRound` (CPU worker), cleared before each round. */
  readonly #interrupt: Int32Array | null = null;
  #worker: Worker;
  #epoch = 0;
  #nextId = 1;
  #live = 0;
  readonly #pending = new Map<
    number,
    { resolve: (v: unknown) => void; reject: (e: unknown) => void }
  >();
  #restarting: Promise<void> | null = null;
  #disposed = false;

  private constructor(
    worker: Worker,
    spec: WorkerLoadSpec,
    config: ModelConfig,
    info: WorkerLoaded,
  ) {
    this.#worker = worker;
    this.#spec = spec;
    this.kind = info.kind;
    this.config = config;
    this.device = info.device;
    this.maxBatch = info.maxBatch;
    this.maxSampledSteps = info.maxSampledSteps;
    if (info.decodesAhead) this.decodesAhead = true;
    this.preferredPrefillChunk = info.preferredPrefillChunk;
    this.fingerprint = info.fingerprint;
    this.#maxSlots = info.maxSlots;
    const has = new Set(info.capabilities);
    if (has.has("decodeSampled")) {
      this.decodeSampled = (r, k, ahead) => this.#decodeSampled(r, k, ahead ?? 0);
    }
    if (has.has("decodeSampled") && info.kind === "cpu" && spec.interrupt) {
      // Host sampling steps one at a time in the worker: a round can end at any step.
      const flag = new Int32Array(spec.interrupt);
      this.#interrupt = flag;
      this.interruptRound = () => Atomics.store(flag, 0, 1);
    }
    if (has.has("replayMany")) this.replayMany = (items) => this.#replayMany(items);
    if (has.has("setTokenHistory")) {
      this.setTokenHistory = (st, seen, gen) => this.#setTokenHistory(st, seen, gen);
    }
    if (has.has("replay")) this.replay = (st, t) => this.#replay(st, t);
    this.#attach(worker);
  }

  /**
   * Start a worker and load the model of `spec.dir` onto its device.
   * @example
   * ```ts ignore
   * const backend = await WorkerBackend.load({ dir: "./models/m/", quantize: "none", options: {} }, config);
   * ```
   */
  static async load(
    spec: WorkerLoadSpec,
    config: ModelConfig,
    onProgress?: WorkerProgress,
  ): Promise<WorkerBackend> {
    spec = { ...spec, interrupt: spec.interrupt ?? new SharedArrayBuffer(4) };
    const { worker, info } = await WorkerBackend.#start(spec, onProgress);
    return new WorkerBackend(worker, spec, config, info);
  }

  /** A worker with the model loaded (or the load's error, the worker stopped). */
  static #start(
    spec: WorkerLoadSpec,
    onProgress?: WorkerProgress,
  ): Promise<{ worker: Worker; info: WorkerLoaded }> {
    const worker = new Worker(new URL("./entry.ts", import.meta.url), { type: "module" });
    return new Promise((resolve, reject) => {
      const fail = (e: unknown) => {
        worker.terminate();
        reject(e);
      };
      worker.onmessage = (ev: MessageEvent<WorkerMessage>) => {
        const m = ev.data;
        if (m.kind === "progress") onProgress?.(m);
        else if (m.kind === "result") resolve({ worker, info: m.value as WorkerLoaded });
        else if (m.kind === "error") fail(fromWire(m.error));
      };
      worker.onerror = (ev) => {
        ev.preventDefault();
        fail(new TnlError("backend_unavailable", `the GPU worker failed to start: ${ev.message}`));
      };
      worker.postMessage({ id: 0, op: "load", args: [spec] });
    });
  }

  #attach(worker: Worker): void {
    worker.onmessage = (ev: MessageEvent<WorkerMessage>) => {
      const m = ev.data;
      if (m.kind === "result" || m.kind === "error") {
        const p = this.#pending.get(m.id);
        if (!p) return;
        this.#pending.delete(m.id);
        if (m.kind === "result") p.resolve(m.value);
        else p.reject(fromWire(m.error));
      } else if (m.kind === "lost") {
        this.#died(fromWire(m.error));
      }
    };
    worker.onerror = (ev) => {
      ev.preventDefault();
      this.#died(new TnlError("device_lost", `the GPU worker died: ${ev.message}`));
    };
  }

  /** The worker is gone: fail what is in flight, start a new one. */
  #died(error: Error): void {
    if (this.#restarting || this.#disposed) return;
    const lost = error instanceof TnlError && error.code === "device_lost"
      ? error
      : new TnlError("device_lost", error.message);
    for (const p of this.#pending.values()) p.reject(lost);
    this.#pending.clear();
    this.#worker.terminate();
    this.#epoch++;
    this.#live = 0;
    this.restarts++;
    this.#restarting = WorkerBackend.#start(this.#spec).then(
      ({ worker }) => {
        this.#worker = worker;
        this.#attach(worker);
        this.#restarting = null;
      },
      (e) => {
        this.#restarting = null;
        this.#disposed = true;
        throw e;
      },
    );
    // A failed restart is reported by the next `ready()`; nothing else awaits it here.
    this.#restarting.catch(() => {});
  }

  /** Null when the worker can take calls now; else a promise settled once it is restarted. */
  whenReady(): Promise<void> | null {
    if (this.#restarting) return this.#restarting.then(() => this.#check());
    this.#check();
    return null;
  }

  #check(): void {
    if (this.#disposed) {
      throw new TnlError("backend_unavailable", "the WebGPU backend was disposed");
    }
    if (this.#restarting) {
      throw new TnlError("backend_unavailable", "the GPU worker is restarting after a failure");
    }
  }

  #call<T>(op: string, args: unknown[], transfer: Transferable[] = []): Promise<T> {
    try {
      this.#check();
    } catch (e) {
      return Promise.reject(e);
    }
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.#worker.postMessage({ id, op, args }, transfer);
    });
  }

  #own(s: BackendState): WorkerState {
    if (!(s instanceof WorkerState) || s.owner !== this) {
      throw new InputError("state", "this state belongs to another backend");
    }
    if (s.released) throw new InputError("state", "this state was released");
    if (s.epoch !== this.#epoch) {
      throw new TnlError("device_lost", "this state was lost with the GPU worker");
    }
    return s;
  }

  /** Run tokens from a host state (copied to the worker and back, advanced in place). */
  async forward(state: ModelState, tokens: Int32Array, logits: LogitsMode): Promise<Float32Array> {
    const r = await this.#call<{ logits: Float32Array; state: ModelState }>("forward", [
      state,
      tokens,
      logits,
    ]);
    state.position = r.state.position;
    r.state.layers.forEach((l, i) => state.layers[i].set(l));
    return r.logits;
  }

  /** A zero state in a free slot of the worker's pool. */
  allocState(): BackendState {
    this.#check();
    if (this.#live >= this.#maxSlots) {
      throw new TnlError("overloaded", `all ${this.#maxSlots} GPU state slots are in use`);
    }
    const s = new WorkerState(this.#nextId++, this, this.#epoch);
    this.#live++;
    // Ordered before any later call on this state; a failure surfaces on that call.
    this.#call("alloc", [s.id]).catch(() => {});
    return s;
  }

  /** Return a slot to the pool. */
  releaseState(state: BackendState): void {
    if (!(state instanceof WorkerState) || state.owner !== this || state.released) {
      this.#own(state);
      return;
    }
    state.released = true;
    if (state.epoch !== this.#epoch) return; // it died with the old worker
    this.#live--;
    this.#call("release", [state.id]).catch(() => {});
  }

  /**
   * Overwrite a slot with a host state (copied). The state goes through a reused
   * `SharedArrayBuffer`: one plain copy on this thread, where posting the arrays (a structured
   * clone, 13 MB at 385M) cost this thread several times as much per admission.
   */
  async writeState(state: BackendState, host: ModelState): Promise<void> {
    const s = this.#own(state);
    const lengths = host.layers.map((l) => l.length);
    const floats = lengths.reduce((a, n) => a + n, 0);
    const shared = this.#spareStaging.find((b) => b.byteLength === floats * 4) ??
      new SharedArrayBuffer(floats * 4);
    this.#spareStaging = this.#spareStaging.filter((b) => b !== shared);
    const flat = new Float32Array(shared);
    let at = 0;
    for (const l of host.layers) {
      flat.set(l, at);
      at += l.length;
    }
    const upload: SharedState = { position: host.position, shared, lengths };
    try {
      await this.#call("writeState", [s.id, upload]);
    } finally {
      if (this.#spareStaging.length < MAX_SPARE_STAGING) this.#spareStaging.push(shared);
    }
    s.position = host.position;
  }

  /** Upload buffers kept for the next `writeState` (the state size is fixed per model). */
  #spareStaging: SharedArrayBuffer[] = [];

  /** Whether a slot still holds its values (it dies with a restarted worker). */
  holds(state: BackendState): boolean {
    return state instanceof WorkerState && state.owner === this && !state.released &&
      state.epoch === this.#epoch && !this.#restarting;
  }

  /** Copy a slot to the host. */
  async readState(state: BackendState): Promise<ModelState> {
    return (await this.readStates([state]))[0];
  }

  /** Copy several slots to the host in one readback. */
  readStates(states: readonly BackendState[]): Promise<ModelState[]> {
    try {
      return this.#call("readStates", [states.map((s) => this.#own(s).id)]);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Copy one slot into another. */
  async copyState(dst: BackendState, src: BackendState): Promise<void> {
    const d = this.#own(dst), s = this.#own(src);
    await this.#call("copyState", [d.id, s.id]);
    d.position = s.position;
  }

  /** Feed tokens of one sequence. */
  async prefill(
    state: BackendState,
    tokens: Int32Array,
    logits: LogitsMode,
  ): Promise<Float32Array> {
    const s = this.#own(state);
    const out = await this.#call<Float32Array>("prefill", [s.id, tokens, logits]);
    s.position += tokens.length;
    return out;
  }

  /** Feed several sequences in one round trip. */
  async prefillMany(items: readonly PrefillItem[]): Promise<void> {
    const own = items.map((it) => this.#own(it.state));
    await this.#call("prefillMany", [items.map((it, i) => ({ id: own[i].id, tokens: it.tokens }))]);
    items.forEach((it, i) => (own[i].position += it.tokens.length));
  }

  async #replayMany(items: readonly PrefillItem[]): Promise<void> {
    const own = items.map((it) => this.#own(it.state));
    await this.#call("replayMany", [items.map((it, i) => ({ id: own[i].id, tokens: it.tokens }))]);
    items.forEach((it, i) => (own[i].position += it.tokens.length));
  }

  /** One token for each of several sequences. */
  async decode(states: readonly BackendState[], tokens: Int32Array): Promise<Float32Array> {
    const own = states.map((s) => this.#own(s));
    const out = await this.#call<Float32Array>("decode", [own.map((s) => s.id), tokens]);
    for (const s of own) s.position++;
    return out;
  }

  async #decodeSampled(
    rows: readonly SampledRow[],
    steps: number,
    ahead: number,
  ): Promise<Int32Array[]> {
    const own = rows.map((r) => this.#own(r.state));
    const snaps = rows.map((r) => (r.aheadSnapshot ? this.#own(r.aheadSnapshot) : null));
    const plain = rows.map((r, i) => ({
      ...r,
      state: undefined,
      id: own[i].id,
      aheadSnapshot: undefined,
      aheadSnapshotId: snaps[i]?.id,
    }));
    if (this.#interrupt) Atomics.store(this.#interrupt, 0, 0);
    const out = await this.#call<
      { tokens: Int32Array[]; rng: number[]; captured: (ModelState | null)[] }
    >("decodeSampled", [plain, steps, ahead]);
    rows.forEach((r, i) => {
      own[i].position += out.tokens[i].length;
      r.rng.counter = out.rng[i];
      if (out.captured[i]) r.captured = out.captured[i]!;
      if (snaps[i] && ahead > 0) snaps[i]!.position = own[i].position;
    });
    return out.tokens;
  }

  async #setTokenHistory(
    state: BackendState,
    seen: Iterable<number>,
    generated: Iterable<[number, number]>,
  ): Promise<void> {
    const s = this.#own(state);
    await this.#call("setTokenHistory", [s.id, [...seen], [...generated]]);
  }

  async #replay(state: BackendState, tokens: Int32Array): Promise<void> {
    const s = this.#own(state);
    await this.#call("replay", [s.id, tokens]);
    s.position += tokens.length;
  }

  /** Make the worker die as a device loss would (for tests of the restart path). */
  simulateCrash(): void {
    this.#worker.postMessage({ id: 0, op: "crash", args: [] });
  }

  /** Free the GPU memory and stop the worker. */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    try {
      if (this.#restarting) await this.#restarting.catch(() => {});
      if (!this.#disposed) await this.#call("dispose", []).catch(() => {});
    } finally {
      this.#disposed = true;
      this.#worker.terminate();
    }
  }
}
