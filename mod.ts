/**
 * TNL Edge: TransNormerLLM inference for Deno, on WebGPU (our own WGSL kernels) or the CPU.
 *
 * ```ts
 * import { loadModel } from "./mod.ts";
 *
 * const model = await loadModel(); // the embedded tnl-shakespeare-6m; or a directory, URL, repo id
 * for await (const chunk of model.generate("ROMEO:", { maxTokens: 50, temperature: 0.8 })) {
 *   console.log(chunk.text);
 * }
 *
 * // Lower level: the recurrent state is the whole memory of a sequence.
 * const state = model.newState();
 * const logits = await model.forward(model.tokenizer.encode("ROMEO:"), state, { logits: "last" });
 * ```
 * @module
 */

export {
  type BackendChoice,
  DEFAULT_MODEL_DIR,
  type GenerateOptions,
  loadModel,
  type LoadModelOptions,
  type TextChunk,
  type TnlModel,
} from "./src/load.ts";
export { loadTokenizer, StreamDecoder, Tokenizer } from "./src/tokenizer/mod.ts";
export { type Activation, loadConfig, type ModelConfig, parseConfig } from "./src/model/config.ts";
export { cloneState, createState, type ModelState, stateBytes } from "./src/model/state.ts";
export type { SessionSnapshot } from "./src/model/snapshot.ts";
export { consoleProgress, type DownloadProgress, resolveModelSource } from "./src/model/hub.ts";
export type { Backend, BackendKind, BackendState, LogitsMode } from "./src/engine/backend.ts";
export {
  Engine,
  type EngineOptions,
  type EngineStats,
  type FinishReason,
  type GenerateEvent,
  type GenerateRequest,
} from "./src/engine/engine.ts";
export { Session } from "./src/engine/session.ts";
export { Sampler, type SamplingParams, TokenHistory } from "./src/engine/sampler.ts";
export { newRngState, type RngState } from "./src/engine/rng.ts";
export { StopMatcher } from "./src/engine/stop.ts";
export { CpuBackend } from "./src/cpu/backend.ts";
export { WebGpuBackend, type WebGpuBackendOptions } from "./src/gpu/backend.ts";
export { acquireDevice, type GpuInfo, hasWebGpu } from "./src/gpu/device.ts";
export {
  ConfigError,
  InputError,
  TnlError,
  type TnlErrorCode,
  TokenizerError,
  WeightsError,
} from "./src/errors.ts";
