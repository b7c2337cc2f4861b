/**
 * The engine room: the `Backend` interface every backend implements, the `Engine` that schedules
 * requests over one backend in rounds (admit, prefill to a token budget, a device decode loop of K
 * steps, settle), live `Session`s, the `Sampler` and its table of fields, the RNG.
 *
 * @example Generate from a prompt with an engine over the CPU backend
 * ```ts
 * import { Engine } from "./mod.ts";
 * import { CpuBackend } from "../cpu/mod.ts";
 * import { loadConfig } from "../model/config.ts";
 * import { openWeights } from "../model/weights/open.ts";
 * import { Tokenizer } from "../tokenizer/mod.ts";
 *
 * const dir = "models/tnl-shakespeare-6m/";
 * const config = await loadConfig(dir + "config.json");
 * const weights = await openWeights(dir);
 * const backend = await CpuBackend.load(weights, config, dir);
 * weights.close();
 * const engine = new Engine(backend, await Tokenizer.load(dir + "tokenizer.model"));
 * const session = engine.newSession();
 * for await (const e of engine.generate({ session, prompt: engine.tokenizer.encode("ROMEO:"), maxTokens: 8 })) {
 *   if (e.type === "token") console.log(e.text);
 * }
 * await engine.close();
 * ```
 * @module
 */

export type {
  Backend,
  BackendKind,
  BackendState,
  LogitsMode,
  PrefillItem,
  SampledRow,
} from "./backend.ts";
export { BROKEN_LOGITS_TOKEN } from "./backend.ts";
export {
  Engine,
  type EngineOptions,
  type EngineStats,
  type FinishReason,
  type GenerateEvent,
  type GenerateRequest,
  type RoundInfo,
} from "./engine.ts";
export { HostSampling, logitsBroken } from "./host_sampling.ts";
export { Session } from "./session.ts";
export {
  type ResolvedSamplingParams,
  type SampledToken,
  Sampler,
  type SamplingParams,
  type TokenHistory,
  type TokenHistoryState,
  type TokenLogprob,
  validateSamplingParams,
} from "./sampler.ts";
export { SAMPLING_FIELDS, type SamplingField } from "./sampling_fields.ts";
export { newRngState, type RngState } from "./rng.ts";
