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
 * // A resumable session: export its state as bytes, resume it here or in another process.
 * const s = await model.session();
 * for await (const c of s.generate("JULIET:", { maxTokens: 20 })) console.log(c.text);
 * const s2 = await model.session(await s.export());
 * for await (const c of s2.generate("", { maxTokens: 20 })) console.log(c.text);
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
  loadModel,
  type LoadModelOptions,
  type TnlModel,
} from "./src/load.ts";
export {
  type ExportOptions,
  type GenerateOptions,
  ModelSession,
  type SessionOptions,
  type TextChunk,
} from "./src/sessions/model_session.ts";
export { loadTokenizer, StreamDecoder, Tokenizer } from "./src/tokenizer/mod.ts";
export { type Activation, loadConfig, type ModelConfig, parseConfig } from "./src/model/config.ts";
export { cloneState, createState, type ModelState, stateBytes } from "./src/model/state.ts";
export {
  dequantizeInt8,
  type Int8Matrix,
  quantizeInt8,
  WEIGHT_QUANTIZATIONS,
  type WeightQuantization,
} from "./src/model/quantize.ts";
export type { SessionSnapshot } from "./src/model/snapshot.ts";
export { consoleProgress, type DownloadProgress, resolveModelSource } from "./src/model/hub.ts";
export type {
  Backend,
  BackendKind,
  BackendState,
  LogitsMode,
  PrefillItem,
} from "./src/engine/backend.ts";
export {
  Engine,
  type EngineOptions,
  type EngineStats,
  type FinishReason,
  type GenerateEvent,
  type GenerateRequest,
  type RoundInfo,
} from "./src/engine/engine.ts";
export { Session } from "./src/engine/session.ts";
export type { SamplingParams } from "./src/engine/sampler.ts";
/** The table of sampling fields (engine and request names, ranges, defaults, CLI flags, GPU words). */
export { SAMPLING_FIELDS, type SamplingField } from "./src/engine/sampling_fields.ts";
export { newRngState, type RngState } from "./src/engine/rng.ts";
export { type GpuInfo, hasWebGpu } from "./src/gpu/device.ts";
export {
  ConfigError,
  InputError,
  TnlError,
  type TnlErrorCode,
  TokenizerError,
  WeightsError,
} from "./src/errors.ts";
export type { AppOptions } from "./routes/mod.ts";
export { type ServerHandle, type ServerOptions, startServer } from "./routes/server.ts";
export {
  type DecodedSession,
  type DecodeOptions,
  decodeSession,
  DEFAULT_STATE_ENCODING,
  type EncodeOptions,
  encodeSession,
  type IdsOptions,
  isExactEncoding,
  isStateEncoding,
  openStore,
  type OpenStoreOptions,
  type PutOptions,
  type SessionLeases,
  type SessionStore,
  STATE_ENCODINGS,
  STATE_MEDIA_TYPE,
  type StateEncoding,
  StateError,
  type StateErrorCode,
  type StateSecret,
  StoreConflictError,
  type StoredSession,
  StoreError,
} from "./src/state/mod.ts";
export {
  continueSession,
  type ContinueSessionOptions,
  createEdgeHandler,
  EdgeClientError,
  type EdgeFormat,
  type EdgeGenerateRequest,
  type EdgeGenerateResponse,
  type EdgeHandler,
  type EdgeOptions,
  edgeOptionsFromEnv,
  type SessionChunk,
} from "./src/edge/mod.ts";
// Types that the exports above mention.
export type { ConsoleProgressOptions, ResolveOptions } from "./src/model/hub.ts";
export type { NormType } from "./src/model/config.ts";
export type { PlainSampling } from "./src/model/snapshot.ts";
export type { GpuLimitName } from "./src/gpu/device.ts";
export type { TokenizerEncodeOptions } from "./src/tokenizer/tokenizer.ts";
export type { Logger, LogLevel } from "./src/http/logger.ts";
export type { SampledRow } from "./src/engine/backend.ts";
export type {
  ResolvedSamplingParams,
  SampledToken,
  TokenHistory,
  TokenHistoryState,
  TokenLogprob,
} from "./src/engine/sampler.ts";
export type { WebGpuBackendOptions } from "./src/gpu/backend.ts";
export type { DeviceOptions, GpuContext } from "./src/gpu/device.ts";
export type { GpuModelOptions } from "./src/gpu/model.ts";
export type {
  ModelProto,
  NormalizerSpec,
  PieceType,
  SentencePieceEntry,
  TrainerSpec,
} from "./src/tokenizer/model_proto.ts";
