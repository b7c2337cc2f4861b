/**
 * The sessions room: everything about a resumable conversation that is not HTTP. The routes, the
 * edge handler and the library all use it.
 *
 * - `SessionManager`: open, create, lease, save, checkpoint, import, export, list and delete
 *   sessions in a store, guarded by a busy set and store leases.
 * - Prompt assembly: completion and chat prompts under the prompt-token limit, the chat template.
 * - `PrefixCache` and `generateOnSession`: a new session starts from the longest cached prefix of
 *   its prompt.
 *
 * Errors are `TnlError` codes (`session_not_found`, `conflict`, `state_replayed`,
 * `precondition_failed`, `context_length_exceeded`, ...); the HTTP layer maps them to statuses.
 *
 * @example Start a request from the prefix cache
 * ```ts
 * import { loadModel } from "../load.ts";
 * import { generateOnSession, PrefixCache } from "./mod.ts";
 *
 * const model = await loadModel();
 * const engine = model.engine();
 * const cache = new PrefixCache({
 *   modelFingerprint: model.fingerprint,
 *   backend: model.backend.kind,
 *   chunk: engine.prefillChunk,
 * });
 * const prompt = model.tokenizer.encode("ROMEO: ".repeat(200));
 * for (let i = 0; i < 2; i++) {
 *   const run = await generateOnSession(
 *     engine,
 *     { session: engine.newSession(), prompt, maxTokens: 4, sampling: { temperature: 0 } },
 *     { prefixCache: cache },
 *   );
 *   for await (const ev of run.events) if (ev.type === "done") console.log(run.cachedTokens);
 * }
 * await model.dispose();
 * ```
 * @module
 */

export {
  type ChatMessageText,
  type ChatTemplate,
  DEFAULT_CHAT_TEMPLATE,
  loadChatTemplate,
  parseChatTemplate,
} from "./chat_template.ts";
export { etagOf, matchesEtag } from "./etag.ts";
export {
  DEFAULT_LEASE_MS,
  defaultCacheSize,
  type LeaseOptions,
  type SavedState,
  type SessionInfo,
  type SessionLease,
  type SessionList,
  SessionManager,
  type SessionManagerOptions,
  type SessionModel,
  type StoredEncoding,
} from "./manager.ts";
export {
  DEFAULT_PREFIX_CACHE_BYTES,
  PrefixCache,
  type PrefixCacheIdentity,
  type PrefixCacheOptions,
  type PrefixCacheStats,
  type PrefixHit,
  type PrefixPlan,
} from "./prefix_cache.ts";
export {
  chatPrefill,
  chatPrompt,
  chatStops,
  checkPromptLength,
  completionPrompt,
  DEFAULT_MAX_PROMPT_TOKENS,
  earlierTurnsLength,
  encodePrompt,
  isEmptySession,
  type PromptContext,
  promptText,
  sessionTail,
} from "./prompt.ts";
export {
  type ExportOptions,
  type GenerateOptions,
  ModelSession,
  type ModelSessionHost,
  type SessionOptions,
  type TextChunk,
  textChunks,
} from "./model_session.ts";
export { generateOnSession, type SessionGenerateOptions, type SessionGeneration } from "./run.ts";
export { sessionSampling } from "./sampling.ts";
