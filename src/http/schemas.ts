/**
 * Request schemas of the OpenAI-compatible routes. Every known field is type-checked and a wrong
 * type or value is a 400 naming the field (`param`). OpenAI fields this server does not implement
 * (`tools`, `tool_choice`, `functions`, `function_call`, `parallel_tool_calls`, `response_format`,
 * ...: see `UNSUPPORTED_FIELDS`) are a 400 naming the field unless their value asks for nothing
 * (`tools: []`, `tool_choice: "none"`, `response_format: { type: "text" }`); other unknown fields
 * are ignored (clients send extras), and so are `user`, `metadata` and `service_tier`.
 *
 * `n` (up to `MAX_N`) and, on `/v1/completions`, a prompt array ask for several choices, each
 * generated in its own new session (at most `MAX_CHOICES` in all); with a `session` (one
 * conversation to continue) a request has exactly one choice.
 *
 * Sampling fields: `temperature`, `top_p`, `presence_penalty`, `frequency_penalty`, `logit_bias`,
 * `seed` (OpenAI) and the vLLM-style `top_k` (-1 or 0 = off), `min_p`, `repetition_penalty`, all
 * read by `parseSampling` from the table `SAMPLING_FIELDS` (`src/engine/sampling_fields.ts`).
 * @module
 */

import type { SamplingParams } from "../engine/sampler.ts";
import { MAX_TOP_LOGPROBS, validateSamplingParams } from "../engine/sampler.ts";
import { SAMPLING_FIELDS } from "../engine/sampling_fields.ts";
import { validateStopSequences } from "../engine/stop.ts";
import { InputError } from "../errors.ts";
import { isValidSessionId } from "../model/snapshot.ts";
import type { ChatMessageText } from "../sessions/chat_template.ts";
import { badRequest, type HttpError, requestFieldName } from "./errors.ts";
import type { StateEncoding } from "../state/encodings.ts";
import { checkStateEncoding } from "./state_encoding.ts";

/** Most top log-probabilities per token on `/v1/completions` (OpenAI's limit). */
export const MAX_COMPLETION_LOGPROBS = 5;
/** Most choices per prompt (`n`). */
export const MAX_N = 16;
/** Most choices per request (prompts × `n`). */
export const MAX_CHOICES = 64;

/**
 * OpenAI request fields this server does not implement, each with the values that ask for nothing
 * (accepted) and why it is refused otherwise.
 */
export const UNSUPPORTED_FIELDS: Readonly<
  Record<string, { noop: (v: unknown) => boolean; what: string }>
> = {
  tools: { noop: (v) => Array.isArray(v) && v.length === 0, what: "tool calls are" },
  tool_choice: { noop: (v) => v === "none", what: "tool calls are" },
  parallel_tool_calls: { noop: (v) => typeof v === "boolean", what: "tool calls are" },
  functions: { noop: (v) => Array.isArray(v) && v.length === 0, what: "function calls are" },
  function_call: { noop: (v) => v === "none", what: "function calls are" },
  response_format: {
    noop: (v) => typeof v === "object" && v !== null && (v as Body).type === "text",
    what: "structured output (response_format other than text) is",
  },
  audio: { noop: () => false, what: "audio output is" },
  modalities: {
    noop: (v) => Array.isArray(v) && v.length === 1 && v[0] === "text",
    what: "modalities other than text are",
  },
  prediction: { noop: () => false, what: "predicted outputs are" },
  web_search_options: { noop: () => false, what: "web search is" },
  reasoning_effort: { noop: () => false, what: "reasoning effort is" },
  verbosity: { noop: () => false, what: "verbosity is" },
};

/** A 400 naming the first field of `UNSUPPORTED_FIELDS` the body sets to something. */
export function rejectUnsupported(b: Body): void {
  for (const [k, f] of Object.entries(UNSUPPORTED_FIELDS)) {
    if (present(b, k) && !f.noop(b[k])) {
      throw badRequest(k, `${k}: ${f.what} not supported by this server`);
    }
  }
}

/** Default `max_tokens` of `/v1/completions` (as OpenAI). */
export const DEFAULT_COMPLETION_MAX_TOKENS = 16;

/** What the request schemas need to know about the server. */
export interface SchemaLimits {
  /** Vocabulary size (token ids and logit bias keys are checked against it). */
  vocabSize: number;
  /** Largest `max_tokens` accepted. */
  maxTokensLimit: number;
  /** Default `max_tokens` of chat requests (the model has no context limit to default to). */
  defaultChatMaxTokens: number;
}

/** Generation options common to every generating route. */
export interface GenerationParams {
  /** The `model` field, when given. */
  model?: string;
  /** Tokens to generate. */
  maxTokens: number;
  /** Sampling fields that were given (absent ones may be inherited from a session). */
  sampling: SamplingParams;
  /** Stop strings. */
  stop: string[];
  /** Stream as server-sent events. */
  stream: boolean;
  /** Send a last chunk with the usage when streaming. */
  includeUsage: boolean;
  /** Top log-probabilities per token; undefined: no log-probabilities. */
  logprobs?: number;
  /** Session to continue. */
  session?: string;
  /** Keep the session in the store (OpenAI's `store`; default true). */
  store: boolean;
  /** How the kept state is encoded (`state_encoding`; absent: the server's default). */
  stateEncoding?: StateEncoding;
  /** Choices per prompt (OpenAI's `n`; default 1; 1 with a session). */
  n: number;
}

/** A parsed `/v1/completions` (or `/v1/sessions/:id/completions`) request. */
export interface CompletionParams extends GenerationParams {
  /** Prompt text, or token ids (the first of `prompts`). */
  prompt: string | number[];
  /** Every prompt of the request (several from a prompt array), each answered with `n` choices. */
  prompts: (string | number[])[];
  /** Echo the prompt before the completion. */
  echo: boolean;
}

/** A parsed `/v1/chat/completions` request. */
export interface ChatParams extends GenerationParams {
  /** Messages with their content flattened to text. */
  messages: ChatMessageText[];
}

/** A parsed `POST /v1/sessions` request. */
export interface SessionCreateParams {
  /** Client-chosen id. */
  id?: string;
  /** Prompt to prefill, text or token ids. */
  prompt?: string | number[];
  /** Chat messages to prefill (rendered with the chat template, without the generation prompt). */
  messages?: ChatMessageText[];
  /** How the state is encoded (`state_encoding`; absent: the server's default). */
  stateEncoding?: StateEncoding;
}

type Body = Record<string, unknown>;

/** A 400 unless a request has exactly one choice (one prompt, `n` 1): a session continues one. */
export function checkSingleChoice(p: { n: number; prompts?: unknown[] }): void {
  if (p.n > 1) {
    throw badRequest(
      "n",
      `n: a session continues one conversation, so n must be 1 with a session (got ${p.n}); ` +
        "leave out session to get n choices in n new sessions",
    );
  }
  if (p.prompts && p.prompts.length > 1) {
    throw badRequest("prompt", "prompt: a session continues one conversation: give one prompt");
  }
}

function typeName(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "array";
  return typeof v;
}

function wrongType(field: string, expected: string, v: unknown): HttpError {
  return badRequest(field, `${field}: expected ${expected}, got ${typeName(v)}`);
}

function present(b: Body, k: string): boolean {
  return b[k] !== undefined && b[k] !== null;
}

/** An optional string field. */
export function optString(b: Body, k: string): string | undefined {
  if (!present(b, k)) return undefined;
  if (typeof b[k] !== "string") throw wrongType(k, "a string", b[k]);
  return b[k] as string;
}

/** The optional `state_encoding` field (a 400 listing the valid names when unknown). */
export function optStateEncoding(b: Body): StateEncoding | undefined {
  return present(b, "state_encoding")
    ? checkStateEncoding(b.state_encoding, "state_encoding")
    : undefined;
}

/** An optional boolean field. */
export function optBool(b: Body, k: string): boolean | undefined {
  if (!present(b, k)) return undefined;
  if (typeof b[k] !== "boolean") throw wrongType(k, "a boolean", b[k]);
  return b[k] as boolean;
}

/** An optional finite number field. */
export function optNumber(b: Body, k: string): number | undefined {
  if (!present(b, k)) return undefined;
  const v = b[k];
  if (typeof v !== "number" || !Number.isFinite(v)) throw wrongType(k, "a finite number", v);
  return v;
}

/** An optional integer field within [min, max]. */
export function optInt(b: Body, k: string, min: number, max: number): number | undefined {
  if (!present(b, k)) return undefined;
  const v = b[k];
  if (typeof v !== "number" || !Number.isSafeInteger(v)) throw wrongType(k, "an integer", v);
  if (v < min || v > max) throw badRequest(k, `${k}: must be in [${min}, ${max}], got ${v}`);
  return v;
}

function parseMaxTokens(b: Body, keys: string[], min: number, fallback: number, limit: number) {
  for (const k of keys) {
    if (present(b, k)) return optInt(b, k, min, limit)!;
  }
  return Math.min(fallback, limit);
}

/** A prompt: a string, token ids, or a one-element array of either. */
export function parsePrompt(v: unknown, field = "prompt"): string | number[] {
  if (typeof v === "string") return v;
  if (!Array.isArray(v)) throw wrongType(field, "a string or an array of token ids", v);
  if (v.length === 0) throw badRequest(field, `${field}: must not be an empty array`);
  if (v.every((x) => typeof x === "number")) {
    for (let i = 0; i < v.length; i++) {
      if (!Number.isSafeInteger(v[i])) {
        throw badRequest(field, `${field}: token ${v[i]} at index ${i} is not an integer`);
      }
    }
    return v as number[];
  }
  if (v.length !== 1) {
    throw badRequest(field, `${field}: only one prompt per request is supported, got ${v.length}`);
  }
  const inner = v[0];
  if (typeof inner === "string") return inner;
  if (Array.isArray(inner) && inner.length > 0) return parsePrompt(inner, field);
  throw wrongType(field, "a string, an array of token ids, or a one-element array of either", v);
}

/**
 * The prompts of a completions request: a string, token ids, or an array of strings and token-id
 * arrays (one choice set each, in order).
 */
export function parsePrompts(v: unknown, field = "prompt"): (string | number[])[] {
  if (typeof v === "string") return [v];
  if (!Array.isArray(v)) {
    throw wrongType(field, "a string, token ids, or an array of strings or token-id arrays", v);
  }
  if (v.length === 0) throw badRequest(field, `${field}: must not be an empty array`);
  if (v.every((x) => typeof x === "number")) return [parsePrompt(v, field)];
  return v.map((x, i) => {
    const f = `${field}[${i}]`;
    if (typeof x === "string") return x;
    if (Array.isArray(x) && x.length > 0 && x.every((t) => typeof t === "number")) {
      return parsePrompt(x, f);
    }
    throw wrongType(f, "a string or a non-empty array of token ids", x);
  });
}

function parseStop(b: Body): string[] {
  if (!present(b, "stop")) return [];
  const v = b.stop;
  const list = typeof v === "string" ? [v] : v;
  if (!Array.isArray(list)) throw wrongType("stop", "a string or an array of strings", v);
  try {
    return validateStopSequences(list);
  } catch (e) {
    if (e instanceof InputError) throw badRequest("stop", e.message);
    throw e;
  }
}

/**
 * The sampling fields of a request (`SAMPLING_FIELDS`, by their wire names), type-checked and
 * range-checked against the vocabulary.
 */
export function parseSampling(b: Body, vocabSize: number): SamplingParams {
  const s: Record<string, unknown> = {};
  for (const f of SAMPLING_FIELDS) {
    if (!present(b, f.wire)) continue;
    const v = b[f.wire];
    if (f.type === "number") {
      s[f.key] = optNumber(b, f.wire);
    } else if (f.type === "integer") {
      const k = optInt(b, f.wire, f.wireMin ?? 0, Number.MAX_SAFE_INTEGER)!;
      s[f.key] = k < 0 ? 0 : k;
    } else if (f.type === "bias") {
      if (typeof v !== "object" || Array.isArray(v)) {
        throw wrongType(f.wire, "an object mapping token ids to biases", v);
      }
      s[f.key] = v;
    } else {
      if (typeof v !== "number" || !Number.isSafeInteger(v)) {
        throw wrongType(f.wire, "an integer", v);
      }
      if (v < 0) throw badRequest(f.wire, `${f.wire}: must be a non-negative integer, got ${v}`);
      s[f.key] = v;
    }
  }
  checkSampling(s, vocabSize);
  return s as SamplingParams;
}

/** Range-check sampling parameters; a failure is a 400 naming the request field. */
export function checkSampling(s: SamplingParams, vocabSize: number): void {
  try {
    validateSamplingParams(s, vocabSize);
  } catch (e) {
    if (e instanceof InputError) {
      const field = requestFieldName(e.field);
      const msg = e.message.startsWith(e.field + ":")
        ? field + e.message.slice(e.field.length)
        : e.message;
      throw badRequest(field, msg);
    }
    throw e;
  }
}

function parseCommon(b: Body, limits: SchemaLimits, maxTokens: number): GenerationParams {
  const model = optString(b, "model");
  rejectUnsupported(b);
  const n = optInt(b, "n", 1, MAX_N) ?? 1;
  const stream = optBool(b, "stream") ?? false;
  let includeUsage = false;
  if (present(b, "stream_options")) {
    const so = b.stream_options;
    if (typeof so !== "object" || Array.isArray(so)) {
      throw wrongType("stream_options", "an object", so);
    }
    const iu = (so as Body).include_usage;
    if (iu !== undefined && iu !== null && typeof iu !== "boolean") {
      throw wrongType("stream_options.include_usage", "a boolean", iu);
    }
    includeUsage = iu === true;
  }
  const sampling = parseSampling(b, limits.vocabSize);
  const stop = parseStop(b);
  const session = checkSessionId(optString(b, "session"), "session");
  const store = optBool(b, "store") ?? true;
  const stateEncoding = optStateEncoding(b);
  if (session !== undefined) checkSingleChoice({ n });
  return {
    model,
    maxTokens,
    sampling,
    stop,
    stream,
    includeUsage,
    session,
    store,
    stateEncoding,
    n,
  };
}

/** Parse a completions request body. */
export function parseCompletionRequest(b: Body, limits: SchemaLimits): CompletionParams {
  if (b.prompt === undefined || b.prompt === null) {
    throw badRequest("prompt", "prompt: is required");
  }
  const prompts = parsePrompts(b.prompt);
  const maxTokens = parseMaxTokens(
    b,
    ["max_tokens"],
    0,
    DEFAULT_COMPLETION_MAX_TOKENS,
    limits.maxTokensLimit,
  );
  const common = parseCommon(b, limits, maxTokens);
  common.logprobs = optInt(b, "logprobs", 0, MAX_COMPLETION_LOGPROBS);
  const echo = optBool(b, "echo") ?? false;
  if (present(b, "suffix") && b.suffix !== "") {
    if (typeof b.suffix !== "string") throw wrongType("suffix", "a string", b.suffix);
    throw badRequest("suffix", "suffix: insertion (suffix) is not supported");
  }
  if (present(b, "best_of") && b.best_of !== 1 && b.best_of !== common.n) {
    throw badRequest("best_of", "best_of: only best_of = 1 (or = n) is supported");
  }
  if (common.session !== undefined) checkSingleChoice({ n: common.n, prompts });
  if (prompts.length * common.n > MAX_CHOICES) {
    throw badRequest(
      "n",
      `n: ${prompts.length} prompts × n ${common.n} = ${
        prompts.length * common.n
      } choices, at most ${MAX_CHOICES}`,
    );
  }
  return { ...common, prompt: prompts[0], prompts, echo };
}

/** Chat roles accepted in `messages` (OpenAI's, less the tool-calling ones, which are not served). */
export const CHAT_ROLES: readonly string[] = ["system", "developer", "user", "assistant"];

/** Flatten a message's content (a string, or text parts) to text. */
function messageContent(v: unknown, field: string): string {
  if (v === undefined || v === null) {
    throw badRequest(field, `${field}: is required (a string or an array of text parts)`);
  }
  if (typeof v === "string") return v;
  if (!Array.isArray(v)) throw wrongType(field, "a string or an array of content parts", v);
  let out = "";
  for (let i = 0; i < v.length; i++) {
    const p = v[i];
    const f = `${field}[${i}]`;
    if (typeof p !== "object" || p === null || Array.isArray(p)) {
      throw wrongType(f, "a content part object", p);
    }
    const part = p as Body;
    if (part.type !== "text") {
      throw badRequest(
        `${f}.type`,
        `${f}.type: only "text" content parts are supported, got ${JSON.stringify(part.type)}`,
      );
    }
    if (typeof part.text !== "string") throw wrongType(`${f}.text`, "a string", part.text);
    out += part.text;
  }
  return out;
}

/** Parse chat messages. */
export function parseMessages(v: unknown, allowEmpty = false): ChatMessageText[] {
  if (!Array.isArray(v)) throw wrongType("messages", "an array of messages", v);
  if (v.length === 0 && !allowEmpty) throw badRequest("messages", "messages: must not be empty");
  return v.map((m, i) => {
    const f = `messages[${i}]`;
    if (typeof m !== "object" || m === null || Array.isArray(m)) {
      throw wrongType(f, "a message object", m);
    }
    const msg = m as Body;
    if (typeof msg.role !== "string" || msg.role === "") {
      throw wrongType(`${f}.role`, "a non-empty string", msg.role);
    }
    if (!CHAT_ROLES.includes(msg.role)) {
      throw badRequest(
        `${f}.role`,
        `${f}.role: ${JSON.stringify(msg.role.slice(0, 40))} is not one of ${
          CHAT_ROLES.join(", ")
        }`,
      );
    }
    return { role: msg.role, content: messageContent(msg.content, `${f}.content`) };
  });
}

/** Parse a chat completions request body. */
export function parseChatRequest(b: Body, limits: SchemaLimits): ChatParams {
  if (b.messages === undefined || b.messages === null) {
    throw badRequest("messages", "messages: is required");
  }
  const messages = parseMessages(b.messages, present(b, "session"));
  const maxTokens = parseMaxTokens(
    b,
    ["max_completion_tokens", "max_tokens"],
    1,
    limits.defaultChatMaxTokens,
    limits.maxTokensLimit,
  );
  const common = parseCommon(b, limits, maxTokens);
  const logprobs = optBool(b, "logprobs") ?? false;
  const top = optInt(b, "top_logprobs", 0, MAX_TOP_LOGPROBS);
  if (top !== undefined && !logprobs) {
    throw badRequest("top_logprobs", "top_logprobs: requires logprobs to be true");
  }
  if (logprobs) common.logprobs = top ?? 0;
  return { ...common, messages };
}

/**
 * `value` when absent or a session id (`SESSION_ID_PATTERN` of `src/model/snapshot.ts`), else a 400
 * naming `field`.
 */
export function checkSessionId(value: string | undefined, field: string): string | undefined {
  if (value !== undefined && !isValidSessionId(value)) {
    throw badRequest(field, `${field}: not a valid session id (1-128 of A-Z a-z 0-9 _ -)`);
  }
  return value;
}

/** Parse a `POST /v1/sessions` body (an empty body creates an empty session). */
export function parseSessionCreate(b: Body): SessionCreateParams {
  const id = checkSessionId(optString(b, "id"), "id");
  const out: SessionCreateParams = { id };
  const stateEncoding = optStateEncoding(b);
  if (stateEncoding !== undefined) out.stateEncoding = stateEncoding;
  if (present(b, "prompt")) out.prompt = parsePrompt(b.prompt);
  if (present(b, "messages")) {
    if (out.prompt !== undefined) {
      throw badRequest("messages", "messages: give either prompt or messages, not both");
    }
    out.messages = parseMessages(b.messages);
  }
  return out;
}
