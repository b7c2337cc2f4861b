/**
 * The `Backend` interface: what the engine, the server and the library need from a compute
 * backend. The CPU reference (`src/cpu/`) and the WebGPU backend (`src/gpu/`) both implement it.
 * @module
 */

import type { ModelConfig } from "../model/config.ts";
import type { ModelState } from "../model/state.ts";
import type { RngState } from "./rng.ts";
import type { ResolvedSamplingParams } from "./sampler.ts";

/** Which implementation runs the model. */
export type BackendKind = "cpu" | "webgpu";

/** Which logits a forward pass returns: every position, the last one, or none. */
export type LogitsMode = "all" | "last" | "none";

/** A sequence state resident on a backend (a slot); only the backend that made it may use it. */
export interface BackendState {
  /** Tokens consumed so far. */
  readonly position: number;
}

/** What `decodeSampled` returns in place of a token sampled from broken (non-finite) logits. */
export const BROKEN_LOGITS_TOKEN = -1;

/** One sequence of a multi-step decode that samples on the device. */
export interface SampledRow {
  /** The sequence's resident state. */
  state: BackendState;
  /** Its pending token (fed first). */
  token: number;
  /** Most tokens to sample in this call (the row stops after that many). */
  budget: number;
  /** Sampling parameters (same semantics as the CPU `Sampler`). */
  sampling: ResolvedSamplingParams;
  /** The random stream; advanced by the draws made. */
  rng: RngState;
  /** Stop the row when it samples the end-of-sequence token. */
  stopAtEos: boolean;
  /** Penalties in use: the device counts this row's tokens (see `setTokenHistory`). */
  penalties: boolean;
  /**
   * Read the row's state back in the same submission as its tokens (for a row that will end in
   * this call): the backend then sets `captured` to the state as it stands after the call.
   */
  capture?: boolean;
  /** Output: the state after the call, when `capture` was asked and the backend could. */
  captured?: ModelState;
  /**
   * With `ahead`: a free state that the device fills with this row's state as it stands before
   * the continued steps run (where a stop string found in them rewinds to).
   */
  aheadSnapshot?: BackendState;
}

/** One sequence's tokens for a batched prefill (`prefillMany`). */
export interface PrefillItem {
  /** The sequence's resident state (advanced in place). */
  state: BackendState;
  /** Tokens to consume. */
  tokens: Int32Array;
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

  /**
   * Prefill chunk the backend runs best (tokens per call; the engine aligns its chunks to it).
   * Absent: the engine's default.
   */
  readonly preferredPrefillChunk?: number;
  /**
   * Feed several sequences' tokens in one call, no logits (the same numbers as one `prefill` per
   * item; only the number of host round trips differs).
   */
  prefillMany?(items: readonly PrefillItem[]): Promise<void>;
  /**
   * Null when the backend can take work now; else a promise that settles when it can (a GPU worker
   * being restarted) or rejects when it cannot.
   */
  whenReady?(): Promise<void> | null;
  /**
   * Feed several sequences' tokens through the decode path (one token per step, the sequences
   * batched), no logits, no readback: the same numbers as `replay` per sequence.
   */
  replayMany?(items: readonly PrefillItem[]): Promise<void>;
  /**
   * Whether a state handle still holds its values (false once its worker was restarted); absent:
   * always, until released.
   */
  holds?(state: BackendState): boolean;
  /** Copy several resident states to the host in one round trip. */
  readStates?(states: readonly BackendState[]): Promise<ModelState[]>;

  /** Most steps one `decodeSampled` call runs (absent: the backend samples on the host only). */
  readonly maxSampledSteps?: number;
  /**
   * Decode up to `steps` tokens per row, sampling on the device so the host reads back once.
   * Each row feeds its pending token, samples the next, and so on; it stops early at its budget
   * or (when asked) at end-of-sequence, and its state then holds exactly what it consumed: every
   * returned token but the last (the new pending one). Positions advance accordingly. A row whose
   * logits were broken (a NaN, or no finite maximum) ends with `BROKEN_LOGITS_TOKEN` instead of a
   * sampled token, and its state is then not to be trusted. A call may also end for every row
   * before `steps` (`interruptRound`; a host-sampling backend ends it at the step where a row
   * ends, so that row's reply goes out at once): callers take the tokens that came.
   */
  decodeSampled?(rows: readonly SampledRow[], steps: number, ahead?: number): Promise<Int32Array[]>;
  /**
   * Whether `decodeSampled` honors `ahead` (> 0): once the call's steps are done on the device,
   * the backend submits `ahead` more steps for the same rows before the call returns (the device
   * works on while the host reads the tokens back and the caller takes them). The caller's next
   * `decodeSampled` must then have `steps` = `ahead` and the same rows in the same order, or some
   * of them; it gets the continued steps' tokens. A row left out is discarded: its position does
   * not count the continued steps, and its state, which holds them unless the device had stopped
   * the row, is the caller's to restore (`SampledRow.aheadSnapshot`). Until then no other call
   * may use these rows' states. Absent: `ahead` is ignored (the next call runs its steps).
   */
  readonly decodesAhead?: boolean;
  /**
   * Ask the `decodeSampled` call in flight to return after its current step (a request arrived
   * that could join the batch). Where a round is one device submission there is nothing to cut:
   * absent. Each row's tokens so far come back; what a row computes never depends on it.
   */
  interruptRound?(): void;
  /** Give a resident state's penalty bookkeeping its history (prompt and generated tokens). */
  setTokenHistory?(
    state: BackendState,
    seen: Iterable<number>,
    generated: Iterable<[number, number]>,
  ): Promise<void>;
  /** Feed tokens one decode step at a time (the exact recurrent path; used to rewind after a stop). */
  replay?(state: BackendState, tokens: Int32Array): Promise<void>;
}
