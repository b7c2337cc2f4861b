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
} from "./src/sessions/mod.ts";
export {
  loadTokenizer,
  type ModelProto,
  type NormalizerSpec,
  type PieceType,
  type SentencePieceEntry,
  StreamDecoder,
  Tokenizer,
  type TokenizerEncodeOptions,
  type TrainerSpec,
} from "./src/tokenizer/mod.ts";
export {
  type Activation,
  cloneState,
  consoleProgress,
  type ConsoleProgressOptions,
  createState,
  dequantizeInt8,
  type DownloadProgress,
  type Int8Matrix,
  loadConfig,
  type ModelConfig,
  type ModelState,
  type NormType,
  parseConfig,
  type PlainSampling,
  quantizeInt8,
  resolveModelSource,
  type ResolveOptions,
  type SessionSnapshot,
  stateBytes,
  WEIGHT_QUANTIZATIONS,
  type WeightQuantization,
} from "./src/model/mod.ts";
export {
  type Backend,
  type BackendKind,
  type BackendState,
  Engine,
  type EngineOptions,
  type EngineStats,
  type FinishReason,
  type GenerateEvent,
  type GenerateRequest,
  type LogitsMode,
  newRngState,
  type PrefillItem,
  type ResolvedSamplingParams,
  type RngState,
  type RoundInfo,
  type SampledRow,
  type SampledToken,
  SAMPLING_FIELDS,
  type SamplingField,
  type SamplingParams,
  Session,
  type TokenHistory,
  type TokenHistoryState,
  type TokenLogprob,
} from "./src/engine/mod.ts";
export {
  type DeviceOptions,
  type GemmTile,
  type GpuContext,
  type GpuInfo,
  type GpuLimitName,
  type GpuModelOptions,
  type GpuPrefillOptions,
  hasWebGpu,
  type WebGpuBackendOptions,
} from "./src/gpu/mod.ts";
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
export type { Logger, LogLevel } from "./src/http/mod.ts";
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
