/**
 * The `Backend` interface: what the engine, the server and the library need from a compute
 * backend. The CPU reference (`src/cpu/`) and the WebGPU backend (`src/gpu/`) both implement it.
 * @module
 */

import type { ModelConfig } from "../model/config.ts";
import type { ModelState } from "../model/state.ts";

/** Which implementation runs the model. */
export type BackendKind = "cpu" | "webgpu";

/** Which logits a forward pass returns: every position, the last one, or none. */
export type LogitsMode = "all" | "last" | "none";

/** A sequence state resident on a backend (a slot); only the backend that made it may use it. */
export interface BackendState {
  /** Tokens consumed so far. */
  readonly position: number;
}

/** A compute backend for one loaded model. */
export interface Backend {
  /** Implementation kind. */
  readonly kind: BackendKind;
  /** The model's configuration. */
  readonly config: ModelConfig;
  /** Human-readable device (adapter description, or the CPU). */
  readonly device: string;
  /** Most sequences one `decode` call accepts. */
  readonly maxBatch: number;

  /** Run `tokens` of one sequence through the model from a host state, advancing it in place. */
  forward(state: ModelState, tokens: Int32Array, logits: LogitsMode): Promise<Float32Array>;

  /** A zero state (position 0) resident on the backend. */
  allocState(): BackendState;
  /** Give a resident state back. */
  releaseState(state: BackendState): void;
  /** Overwrite a resident state with a host state. */
  writeState(state: BackendState, host: ModelState): Promise<void>;
  /** Copy a resident state to the host. */
  readState(state: BackendState): Promise<ModelState>;
  /** Copy one resident state into another. */
  copyState(dst: BackendState, src: BackendState): Promise<void>;
  /** Feed tokens of one sequence (prefill or a chunk of it); returns logits as asked. */
  prefill(state: BackendState, tokens: Int32Array, logits: LogitsMode): Promise<Float32Array>;
  /** One token for each of several sequences; returns [states.length, vocab] logits. */
  decode(states: readonly BackendState[], tokens: Int32Array): Promise<Float32Array>;

  /** Free everything the backend holds. */
  dispose(): Promise<void>;
}
