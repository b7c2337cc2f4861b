/**
 * Messages between the `WorkerBackend` (the thread that serves HTTP) and the worker that runs the
 * backend (`entry.ts`: the WebGPU device, or the CPU kernels). Requests carry an id; each answer names it. Errors cross as
 * plain data and are rebuilt as the project's typed errors, so callers see the same `TnlError`
 * codes (and `InputError` fields) as with an in-thread backend.
 * @module
 */

import { InputError, TnlError, type TnlErrorCode } from "../errors.ts";
import type { WeightQuantization } from "../model/quantize.ts";

/** What the worker needs to load a model (everything is plain data). */
export interface WorkerLoadSpec {
  /** Which backend the worker runs (default "webgpu"). */
  kind?: "webgpu" | "cpu";
  /** Local model directory (ends with "/"): config.json and the weights. */
  dir: string;
  /** Weight quantization. */
  quantize: WeightQuantization;
  /**
   * A 4-byte flag in shared memory: the serving thread sets it to end a host-sampling round
   * (`HostSampling.decodeSampled`) after its current step, and clears it before each round.
   */
  interrupt?: SharedArrayBuffer;
  /** WebGPU options that are plain data (batch, slots, ring, limits, readback). */
  options: {
    maxBatch?: number;
    maxSlots?: number;
    ring?: number;
    maxBindingBytes?: number;
    prefillChunk?: number;
    readback?: "auto" | "map";
  };
}

/** What the worker reports once the model is loaded. */
export interface WorkerLoaded {
  /** Backend kind. */
  kind: "webgpu" | "cpu";
  /** Adapter description. */
  device: string;
  /** The optional `Backend` methods the worker's backend has. */
  capabilities: string[];
  /** SHA-256 over the config and the weights as loaded. */
  fingerprint: string;
  /** Most sequences per decode call. */
  maxBatch: number;
  /** Resident state slots. */
  maxSlots: number;
  /** Most steps per `decodeSampled` call (absent: host sampling only). */
  maxSampledSteps?: number;
  /** Whether `decodeSampled` continues calls on the device (`Backend.decodesAhead`). */
  decodesAhead?: boolean;
  /** Prefill tokens per submission (absent: the engine's default). */
  preferredPrefillChunk?: number;
}

/** A host state sent to the worker in shared memory: its layers one after another, as f32. */
export interface SharedState {
  /** Tokens consumed. */
  position: number;
  /** The layers' values, concatenated. */
  shared: SharedArrayBuffer;
  /** Values per layer. */
  lengths: number[];
}

/** The layers of a `SharedState` as views into its shared memory (nothing copied). */
export function sharedLayers(s: SharedState): Float32Array<ArrayBuffer>[] {
  let at = 0;
  return s.lengths.map((n) => {
    // A view of shared memory, read like any f32 array by the backends' copies.
    const l = new Float32Array(s.shared, at * 4, n) as unknown as Float32Array<ArrayBuffer>;
    at += n;
    return l;
  });
}

/** A request to the worker. */
export interface WorkerRequest {
  /** Request id (answers carry it). */
  id: number;
  /** Operation name (a method of the backend, or `load`, `alloc`, `release`, `crash`). */
  op: string;
  /** Arguments. */
  args: unknown[];
}

/** A message from the worker. */
export type WorkerMessage =
  | { kind: "result"; id: number; value: unknown }
  | { kind: "error"; id: number; error: WireError }
  | { kind: "progress"; tensor: string; done: number; total: number }
  | { kind: "lost"; error: WireError };

/** An error as plain data. */
export interface WireError {
  /** Error class name. */
  name: string;
  /** `TnlError` code, when it is one. */
  code?: TnlErrorCode;
  /** `InputError` field, when it is one. */
  field?: string;
  /** Message. */
  message: string;
}

/** An error as plain data for `postMessage`. */
export function toWire(e: unknown): WireError {
  if (e instanceof InputError) {
    return { name: e.name, code: e.code, field: e.field, message: e.message };
  }
  if (e instanceof TnlError) return { name: e.name, code: e.code, message: e.message };
  if (e instanceof Error) return { name: e.name, message: e.message };
  return { name: "Error", message: String(e) };
}

/** The typed error back from its plain data. */
export function fromWire(w: WireError): Error {
  let e: Error;
  if (w.field !== undefined) e = new InputError(w.field, "");
  else if (w.code) e = new TnlError(w.code, "");
  else e = new Error("");
  e.message = w.message;
  if (!(e instanceof TnlError)) e.name = w.name;
  return e;
}
