/**
 * The CPU backend: the reference model behind the `Backend` interface. States live on the host;
 * resident states are plain `ModelState`s.
 * @module
 */

import type { Backend, BackendState, LogitsMode, PrefillItem } from "../engine/backend.ts";
import type { ModelConfig } from "../model/config.ts";
import { cloneState, copyStateInto, type ModelState } from "../model/state.ts";
import type { TensorSource } from "../model/weights/source.ts";
import { CpuModel, type CpuModelOptions, cpuThreads } from "./model.ts";
import { loadCpuWeights } from "./weights.ts";
import type { WeightQuantization } from "../model/quantize.ts";
import { InputError } from "../errors.ts";

/** Run `fn` and return its result as a promise (a throw becomes a rejection). */
function settle<T>(fn: () => T): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (e) {
    return Promise.reject(e);
  }
}

/** A state resident on the CPU backend. */
class CpuState implements BackendState {
  constructor(readonly host: ModelState, readonly owner: CpuBackend) {}
  get position(): number {
    return this.host.position;
  }
}

/** The CPU implementation of `Backend`. */
export class CpuBackend implements Backend {
  /** Always "cpu". */
  readonly kind = "cpu" as const;
  /** The model configuration. */
  readonly config: ModelConfig;
  /** Device description. */
  readonly device: string;
  /** Most sequences per decode call. */
  readonly maxBatch: number;
  /** The reference model. */
  readonly model: CpuModel;

  /** Wrap a built CPU model. */
  constructor(model: CpuModel, maxBatch = 256) {
    this.model = model;
    this.config = model.config;
    this.maxBatch = maxBatch;
    this.device = `cpu (${navigator.hardwareConcurrency} cores, ${
      model.kernels === "wasm"
        ? `WebAssembly SIMD, ${model.threads} thread${model.threads > 1 ? "s" : ""}`
        : "f64 reference"
    })`;
  }

  /** Load weights from a tensor source and build the backend. */
  static async load(
    source: TensorSource,
    config: ModelConfig,
    label: string,
    options: CpuModelOptions & { maxBatch?: number; quantize?: WeightQuantization } = {},
  ): Promise<CpuBackend> {
    const weights = await loadCpuWeights(source, config, label, {
      quantize: options.quantize,
      arenaScratchBytes: options.kernels === "js" ? null : CpuModel.scratchBytes(config, options),
      sharedArena: cpuThreads(options) > 1,
    });
    const model = new CpuModel(config, weights, options);
    await model.startThreads(options);
    return new CpuBackend(model, options.maxBatch);
  }

  #own(s: BackendState): CpuState {
    if (!(s instanceof CpuState) || s.owner !== this) {
      throw new InputError("state", "this state belongs to another backend");
    }
    return s;
  }

  /** Run tokens from a host state (advanced in place). */
  forward(state: ModelState, tokens: Int32Array, logits: LogitsMode): Promise<Float32Array> {
    return settle(() => this.model.forward(state, tokens, logits));
  }

  /** A zero state (in the kernels' arena while `arenaStates` allows: decoded in place). */
  allocState(): BackendState {
    return new CpuState(this.model.allocState(), this);
  }

  /** Give an arena state's memory to the next allocation (a heap state is left to the GC). */
  releaseState(state: BackendState): void {
    this.model.releaseState(this.#own(state).host);
  }

  /** Copy a host state in (after checking its shapes). */
  writeState(state: BackendState, host: ModelState): Promise<void> {
    return settle(() => {
      const s = this.#own(state);
      if (host.layers.length !== s.host.layers.length) {
        throw new InputError(
          "state",
          `has ${host.layers.length} layers, expected ${s.host.layers.length}`,
        );
      }
      for (let l = 0; l < host.layers.length; l++) {
        if (host.layers[l].length !== s.host.layers[l].length) {
          throw new InputError(
            "state",
            `layer ${l} has ${host.layers[l].length} values, expected ${s.host.layers[l].length}`,
          );
        }
      }
      copyStateInto(s.host, host);
    });
  }

  /** A host copy of a resident state. */
  readState(state: BackendState): Promise<ModelState> {
    return settle(() => cloneState(this.#own(state).host));
  }

  /** Copy src into dst. */
  copyState(dst: BackendState, src: BackendState): Promise<void> {
    return settle(() => copyStateInto(this.#own(dst).host, this.#own(src).host));
  }

  /** Prefill a resident state. */
  prefill(state: BackendState, tokens: Int32Array, logits: LogitsMode): Promise<Float32Array> {
    return settle(() => this.model.forward(this.#own(state).host, tokens, logits));
  }

  /**
   * Prefill several resident states, no logits: the same numbers as one `prefill` per item, with
   * the rows of short prompts sharing one pass over the weights (`CpuModel.forwardMany`).
   */
  prefillMany(items: readonly PrefillItem[]): Promise<void> {
    return settle(() =>
      this.model.forwardMany(
        items.map((it) => ({ state: this.#own(it.state).host, tokens: it.tokens })),
      )
    );
  }

  /** Batched decode of resident states. */
  decode(states: readonly BackendState[], tokens: Int32Array): Promise<Float32Array> {
    return settle(() => {
      if (states.length > this.maxBatch) {
        throw new InputError("states", `batch of ${states.length} exceeds ${this.maxBatch}`);
      }
      return this.model.decode(states.map((s) => this.#own(s).host), tokens);
    });
  }

  /** Stop the kernel threads, if any. */
  dispose(): Promise<void> {
    this.model.dispose();
    return Promise.resolve();
  }
}
