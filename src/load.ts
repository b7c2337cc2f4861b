/**
 * The composition root of the library: resolve a model source, read its config, tokenizer and
 * weights, pick a backend, and offer `forward` and streaming `generate` on top.
 * @module
 */

import { CpuBackend } from "./cpu/backend.ts";
import type { Backend, LogitsMode } from "./engine/backend.ts";
import { Engine, type EngineOptions } from "./engine/engine.ts";
import { InputError, TnlError } from "./errors.ts";
import { probeAdapter } from "./gpu/device.ts";
import { WebGpuBackend, type WebGpuBackendOptions } from "./gpu/backend.ts";
import { WorkerBackend } from "./worker/backend.ts";
import { loadConfig, type ModelConfig } from "./model/config.ts";
import { FingerprintingSource } from "./model/fingerprint.ts";
import { type DownloadProgress, resolveModelSource } from "./model/hub.ts";
import { createState, type ModelState } from "./model/state.ts";
import { openWeights } from "./model/weights/open.ts";
import { parseQuantization, type WeightQuantization } from "./model/quantize.ts";
import { Tokenizer } from "./tokenizer/tokenizer.ts";
import { fromFileUrl, SEPARATOR as SEP } from "./deps.ts";
import {
  type GenerateOptions,
  ModelSession,
  type SessionOptions,
  type TextChunk,
  textChunks,
} from "./sessions/model_session.ts";

/** Which backend runs the model. */
export type BackendChoice = "auto" | "cpu" | "webgpu";

/** Options of `loadModel`. */
export interface LoadModelOptions {
  /**
   * "auto" (default) picks WebGPU on a hardware adapter and the CPU otherwise (a software adapter
   * such as llvmpipe, lavapipe or SwiftShader is far slower than the CPU backend); "webgpu" uses
   * any adapter.
   */
  backend?: BackendChoice;
  /** Told which backend was chosen and why (for a start line). */
  onBackendChoice?: (choice: { backend: "cpu" | "webgpu"; reason: string }) => void;
  /** WebGPU options (batch, slots, limits). */
  webgpu?: WebGpuBackendOptions;
  /**
   * Run the backend in a worker thread, so that neither GPU readbacks nor CPU prefills block the
   * caller's event loop. Default: true for WebGPU (unless `webgpu.context` is given), false for the
   * CPU (edge hosts often have no workers; the server turns it on).
   */
  worker?: boolean;
  /**
   * Matrix weights as stored ("none", default) or int8 with one scale per output row ("int8": half
   * the bytes of bf16 on the GPU; the CPU reference runs the same int8 model in f32). Part of the
   * model fingerprint, so states of one never resume on the other.
   */
  quantize?: WeightQuantization;
  /** Engine options (queue, batch, prefill chunk). */
  engine?: EngineOptions;
  /** Download progress (model given as a URL or a Hugging Face repo id). */
  onProgress?: (p: DownloadProgress) => void;
  /** Loading progress: tensors uploaded or widened. */
  onLoad?: (p: { tensor: string; done: number; total: number }) => void;
  /** Cache directory for downloads. */
  cacheDir?: string;
  /** Hugging Face token (default $HF_TOKEN). */
  token?: string;
}

/** A loaded model. */
export interface TnlModel {
  /** Validated configuration. */
  readonly config: ModelConfig;
  /** The tokenizer. */
  readonly tokenizer: Tokenizer;
  /** The backend running the model. */
  readonly backend: Backend;
  /** Local directory of the model. */
  readonly dir: string;
  /** SHA-256 over the config and the weights (see `FingerprintingSource`). */
  readonly fingerprint: string;
  /** A zero state at position 0. */
  newState(): ModelState;
  /**
   * Run `tokens` from `state`, advancing it in place; returns logits ([tokens.length, vocab] for
   * "all", [vocab] for "last").
   */
  forward(
    tokens: ArrayLike<number>,
    state: ModelState,
    options?: { logits?: LogitsMode },
  ): Promise<Float32Array>;
  /** The engine (created on first use). */
  engine(): Engine;
  /** Stream generated text for a prompt (in a new session, not kept). */
  generate(prompt: string, options?: GenerateOptions): AsyncIterable<TextChunk>;
  /**
   * A resumable session: new, or resumed from the bytes a session's `export()` returned. Resuming
   * takes three lines:
   *
   * @example
   * ```ts
   * import { loadModel } from "./load.ts";
   *
   * const model = await loadModel();
   * const s = await model.session();
   * for await (const c of s.generate("ROMEO:", { maxTokens: 20 })) console.log(c.text);
   * const s2 = await model.session(await s.export()); // here or in another process
   * for await (const c of s2.generate(" And", { maxTokens: 20 })) console.log(c.text);
   * await model.dispose();
   * ```
   */
  session(from?: Uint8Array, options?: SessionOptions): Promise<ModelSession>;
  /** Free the backend. */
  dispose(): Promise<void>;
}

/**
 * The default model shipped with the module: a local directory path when the module is on a local
 * disk (any characters, any OS), else the https URL of the directory next to the module (imported
 * over https or from a package), which `loadModel` downloads with `fetch` into its cache.
 */
export const DEFAULT_MODEL_DIR: string = modelDirOf(
  new URL("../models/tnl-shakespeare-6m/", import.meta.url),
);

/** A model directory as `loadModel` takes it: a path for `file:` URLs, the URL otherwise. */
export function modelDirOf(url: URL): string {
  if (url.protocol !== "file:") return url.href;
  const path = fromFileUrl(url);
  return /[\\/]$/.test(path) ? path : path + SEP;
}

/**
 * Load a model from a directory, an https URL of a directory, or a Hugging Face repo id.
 *
 * @example Stream text from the model shipped with the module
 * ```ts
 * import { loadModel } from "./load.ts";
 *
 * const model = await loadModel(); // the default model; `{ backend: "webgpu" }` for a GPU
 * for await (const chunk of model.generate("ROMEO:", { maxTokens: 32 })) {
 *   await Deno.stdout.write(new TextEncoder().encode(chunk.text));
 * }
 * await model.dispose();
 * ```
 */
export async function loadModel(
  source: string = DEFAULT_MODEL_DIR,
  options: LoadModelOptions = {},
): Promise<TnlModel> {
  const dir = await resolveModelSource(source, {
    onProgress: options.onProgress,
    cacheDir: options.cacheDir,
    token: options.token,
  });
  const base = dir.endsWith("/") ? dir : dir + "/";
  const config = await loadConfig(base + "config.json");
  const tokenizer = await Tokenizer.load(base + "tokenizer.model");
  if (tokenizer.vocabSize > config.vocabSize) {
    throw new InputError(
      "tokenizer",
      `has ${tokenizer.vocabSize} pieces but the model only ${config.vocabSize}`,
    );
  }
  let done = 0;
  const weights = new FingerprintingSource(
    await openWeights(base),
    (tensor) => options.onLoad?.({ tensor, done: ++done, total: weights.tensors.size }),
  );
  const quantize = parseQuantization(options.quantize);
  let picked: { backend: Backend; fingerprint?: string };
  try {
    picked = await pickBackend(options.backend ?? "auto", config, weights, base, {
      ...options,
      quantize,
    });
  } finally {
    weights.close();
  }
  return makeModel(
    config,
    tokenizer,
    picked.backend,
    base,
    picked.fingerprint ?? weights.fingerprint(config, quantize),
    options.engine,
  );
}

/** The WebGPU backend, in a worker thread unless asked otherwise (it then reads the weights). */
async function loadWebGpu(
  config: ModelConfig,
  source: FingerprintingSource,
  dir: string,
  options: LoadModelOptions,
): Promise<{ backend: Backend; fingerprint?: string }> {
  const quantize = options.quantize ?? "none";
  const gpu = options.webgpu ?? {};
  if (options.worker === false || gpu.context || gpu.onTensor) {
    return { backend: await WebGpuBackend.load(source, config, dir, { ...gpu, quantize }) };
  }
  const { maxBatch, maxSlots, ring, maxBindingBytes, prefillChunk, readback } = gpu;
  const backend = await WorkerBackend.load(
    {
      dir,
      quantize,
      options: { maxBatch, maxSlots, ring, maxBindingBytes, prefillChunk, readback },
    },
    config,
    options.onLoad,
  );
  return { backend, fingerprint: backend.fingerprint };
}

async function pickBackend(
  choice: BackendChoice,
  config: ModelConfig,
  source: FingerprintingSource,
  label: string,
  options: LoadModelOptions,
): Promise<{ backend: Backend; fingerprint?: string }> {
  const quantize = options.quantize;
  const chose = (backend: "cpu" | "webgpu", reason: string) =>
    options.onBackendChoice?.({ backend, reason });
  const cpu = async (): Promise<{ backend: Backend; fingerprint?: string }> => {
    if (!options.worker) {
      return { backend: await CpuBackend.load(source, config, label, { quantize }) };
    }
    const backend = await WorkerBackend.load(
      { kind: "cpu", dir: label, quantize: quantize ?? "none", options: {} },
      config,
      options.onLoad,
    );
    return { backend, fingerprint: backend.fingerprint };
  };
  if (choice === "cpu") {
    chose("cpu", "backend cpu requested");
    return await cpu();
  }
  if (choice === "auto") {
    const probe = await probeAdapter();
    if (!probe.hardware) {
      chose("cpu", `backend auto: ${probe.reason}`);
      return await cpu();
    }
    chose("webgpu", `backend auto: ${probe.reason}`);
  } else chose("webgpu", "backend webgpu requested");
  try {
    return await loadWebGpu(config, source, label, options);
  } catch (e) {
    if (choice === "auto" && e instanceof TnlError && e.code === "backend_unavailable") {
      chose("cpu", `backend auto: WebGPU failed (${e.message})`);
      return await cpu();
    }
    throw e;
  }
}

function makeModel(
  config: ModelConfig,
  tokenizer: Tokenizer,
  backend: Backend,
  dir: string,
  fingerprint: string,
  engineOptions?: EngineOptions,
): TnlModel {
  let engine: Engine | null = null;
  const getEngine = () => (engine ??= new Engine(backend, tokenizer, engineOptions));
  const model: TnlModel = {
    config,
    tokenizer,
    backend,
    dir,
    fingerprint,
    newState: () => createState(config),
    forward: (tokens, state, opts) => {
      const ids = Int32Array.from(tokens as ArrayLike<number>);
      delete state.finite; // its values change: a backend's earlier check no longer holds
      return backend.forward(state, ids, opts?.logits ?? "last");
    },
    engine: getEngine,
    async *generate(prompt: string, opts: GenerateOptions = {}): AsyncIterable<TextChunk> {
      const ids = tokenizer.encode(prompt);
      if (ids.length === 0) throw new InputError("prompt", "must not be empty");
      const { maxTokens = 128, stop, signal, ...sampling } = opts;
      const e = getEngine();
      const session = e.newSession();
      yield* textChunks(e.generate({ session, prompt: ids, sampling, maxTokens, stop, signal }));
    },
    session(from?: Uint8Array, options?: SessionOptions): Promise<ModelSession> {
      return ModelSession.open({ model, engine: getEngine() }, from, options);
    },
    async dispose() {
      await engine?.close(true);
      await backend.dispose();
    },
  };
  return model;
}
