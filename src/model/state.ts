/**
 * The recurrent state of one sequence on the host: per layer one f32 tensor [heads, dk, dv].
 * @module
 */

import { type ModelConfig, stateLayerSize } from "./config.ts";

/** A sequence's whole memory: the tokens consumed so far and one f32 state per layer. */
export interface ModelState {
  /** Tokens consumed (the absolute position of the next token). */
  position: number;
  /** Per layer, [heads, dk, dv] row-major (dk = 2·headDim in LRPE layers). */
  readonly layers: Float32Array<ArrayBuffer>[];
  /**
   * Set by a backend that already checked every value when it read the state back (on the GPU or
   * in its worker: the serving thread and the codec need not scan 13 MB again); absent when not
   * checked. Whoever changes the values in place deletes it.
   */
  finite?: boolean;
}

/** A zero state at position 0 for `config`. */
export function createState(config: ModelConfig): ModelState {
  return {
    position: 0,
    layers: Array.from(
      { length: config.numLayers },
      (_, l) => new Float32Array(stateLayerSize(config, l)),
    ),
  };
}

/**
 * A state at `position` whose layers are views of `bytes`, which holds them back to back in layer
 * order (`stateBytes(config)` bytes): one buffer per state, so it transfers as one.
 */
export function stateOverBytes(
  config: ModelConfig,
  position: number,
  bytes: ArrayBuffer,
): ModelState {
  if (bytes.byteLength !== stateBytes(config)) {
    throw new RangeError(`a state needs ${stateBytes(config)} bytes, got ${bytes.byteLength}`);
  }
  let off = 0;
  const layers = Array.from({ length: config.numLayers }, (_, l) => {
    const n = stateLayerSize(config, l);
    const view = new Float32Array(bytes, off, n);
    off += n * 4;
    return view;
  });
  return { position, layers };
}

/** A deep copy of `state`. */
export function cloneState(state: ModelState): ModelState {
  return { position: state.position, layers: state.layers.map((l) => l.slice()) };
}

/** Copy `src` into `dst` (same config). */
export function copyStateInto(dst: ModelState, src: ModelState): void {
  dst.position = src.position;
  for (let l = 0; l < src.layers.length; l++) dst.layers[l].set(src.layers[l]);
}

/** Bytes of f32 state per sequence. */
export function stateBytes(config: ModelConfig): number {
  let n = 0;
  for (let l = 0; l < config.numLayers; l++) n += stateLayerSize(config, l);
  return n * 4;
}

/** Index of the first NaN or ±Infinity in `a` (tested on the bits), or -1. */
export function firstNonFinite(a: Float32Array): number {
  const bits = new Uint32Array(a.buffer, a.byteOffset, a.length);
  for (let i = 0; i < bits.length; i++) if ((bits[i] & 0x7f800000) === 0x7f800000) return i;
  return -1;
}

/** Whether every value of a state is finite. */
export function stateIsFinite(state: ModelState): boolean {
  return state.layers.every((l) => firstNonFinite(l) < 0);
}

/** The buffers under a list of typed arrays, each once (to transfer them in a `postMessage`). */
export function buffersOf(arrays: readonly ArrayBufferView[]): ArrayBuffer[] {
  return [...new Set(arrays.map((a) => a.buffer as ArrayBuffer))];
}
