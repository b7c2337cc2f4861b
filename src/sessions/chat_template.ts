/**
 * The chat template: how `/v1/chat/completions` turns messages into a prompt for a base model.
 *
 * The default renders each message as `"{role}: {content}\n\n"` and ends with the generation
 * prompt `"assistant:"`, without a space: the SentencePiece tokenizer writes a word's leading space
 * into the word's own piece (`"▁I"`), so a prompt ending in `": "` ends with a lone `"▁"` piece and
 * the model, seeing a space already written, continues mid-word (greedy `"Que, my lord"` against
 * `"\nI am a man"` without it); the reply then starts with its own space or newline. Generation stops at `"\n\nuser:"`, `"\n\nsystem:"` or
 * `"\n\nassistant:"` (the model starting another turn). A model directory can override it with a
 * `chat_template.json`:
 *
 * ```json
 * {
 *   "message": "{role}: {content}\n\n",
 *   "generation_prompt": "assistant:",
 *   "stop": ["\n\nuser:"],
 *   "roles": { "user": "USER", "assistant": "ASSISTANT" },
 *   "prefix": ""
 * }
 * ```
 *
 * `message` must contain `{content}` and may contain `{role}` (replaced in one pass, so message text
 * that happens to contain `{role}` stays as it is); `roles` maps request roles to the labels written
 * (others are written as given); `prefix` starts a new conversation; every field is optional.
 * @module
 */

import { TnlError } from "../errors.ts";
import { validateStopSequences } from "../engine/stop.ts";

/** A chat template (see the module doc). */
export interface ChatTemplate {
  /** Per message; `{role}` and `{content}` are replaced. */
  message: string;
  /** Appended after the messages: the start of the assistant's turn. */
  generationPrompt: string;
  /** Stop strings added to every chat request. */
  stop: string[];
  /** Role labels (`user` → `USER`); roles not listed are written as given. */
  roles: Record<string, string>;
  /** Text that starts a new conversation. */
  prefix: string;
}

/** A message as the template sees it (content already flattened to text). */
export interface ChatMessageText {
  /** Role: `system`, `user`, `assistant`, or any other label. */
  role: string;
  /** Text content. */
  content: string;
}

/** The default template for base models. */
export const DEFAULT_CHAT_TEMPLATE: Readonly<ChatTemplate> = Object.freeze({
  message: "{role}: {content}\n\n",
  generationPrompt: "assistant:",
  stop: ["\n\nuser:", "\n\nsystem:", "\n\nassistant:"],
  roles: {},
  prefix: "",
});

/** The file a model directory may hold to override the template. */
export const CHAT_TEMPLATE_FILE = "chat_template.json";

function invalid(source: string, field: string, detail: string): TnlError {
  return new TnlError("config_invalid", `${source}: field "${field}": ${detail}`);
}

/**
 * Check a parsed `chat_template.json` value; fields left out take the default's value. Throws
 * `TnlError` ("config_invalid") naming the field.
 */
export function parseChatTemplate(value: unknown, source = CHAT_TEMPLATE_FILE): ChatTemplate {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new TnlError("config_invalid", `${source}: expected a JSON object`);
  }
  const o = value as Record<string, unknown>;
  const str = (key: string, fallback: string): string => {
    const v = o[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== "string") throw invalid(source, key, `expected a string, got ${typeof v}`);
    return v;
  };
  const message = str("message", DEFAULT_CHAT_TEMPLATE.message);
  if (!message.includes("{content}")) {
    throw invalid(source, "message", "must contain {content}");
  }
  const generationPrompt = str("generation_prompt", DEFAULT_CHAT_TEMPLATE.generationPrompt);
  const prefix = str("prefix", DEFAULT_CHAT_TEMPLATE.prefix);
  let stop = [...DEFAULT_CHAT_TEMPLATE.stop];
  if (o.stop !== undefined && o.stop !== null) {
    if (!Array.isArray(o.stop)) throw invalid(source, "stop", "expected an array of strings");
    try {
      stop = validateStopSequences(o.stop);
    } catch (e) {
      throw invalid(source, "stop", (e as Error).message);
    }
  }
  const roles: Record<string, string> = {};
  if (o.roles !== undefined && o.roles !== null) {
    if (typeof o.roles !== "object" || Array.isArray(o.roles)) {
      throw invalid(source, "roles", "expected an object mapping roles to labels");
    }
    for (const [k, v] of Object.entries(o.roles as Record<string, unknown>)) {
      if (typeof v !== "string") throw invalid(source, `roles.${k}`, "expected a string");
      roles[k] = v;
    }
  }
  return { message, generationPrompt, stop, roles, prefix };
}

/**
 * The template of a model directory: its `chat_template.json` when there is one, else the default.
 * Throws `TnlError` ("config_invalid") for a file that is not valid JSON or not a valid template.
 */
export async function loadChatTemplate(modelDir: string): Promise<ChatTemplate> {
  const path = modelDir.endsWith("/")
    ? modelDir + CHAT_TEMPLATE_FILE
    : `${modelDir}/${CHAT_TEMPLATE_FILE}`;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return structuredClone(DEFAULT_CHAT_TEMPLATE);
    throw new TnlError("config_invalid", `${path}: cannot be read: ${(e as Error).message}`, {
      cause: e,
    });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new TnlError("config_invalid", `${path}: not valid JSON: ${(e as Error).message}`);
  }
  return parseChatTemplate(value, path);
}

/** One message rendered with the template. */
export function renderMessage(t: ChatTemplate, m: ChatMessageText): string {
  const role = Object.hasOwn(t.roles, m.role) ? t.roles[m.role] : m.role;
  return t.message.replace(/\{(role|content)\}/g, (_, k) => (k === "role" ? role : m.content));
}

/** The prompt of a new conversation: prefix, every message, then the generation prompt. */
export function renderChat(t: ChatTemplate, messages: readonly ChatMessageText[]): string {
  return t.prefix + messages.map((m) => renderMessage(t, m)).join("") + t.generationPrompt;
}

/** The text the template writes after a message's content (`"\n\n"` for the default). */
export function messageEnd(t: ChatTemplate): string {
  return t.message.slice(t.message.lastIndexOf("{content}") + "{content}".length);
}

/**
 * The prompt that continues a conversation held in a session whose text so far ends with `tail`
 * (the last assistant reply, possibly followed by the stop string that ended it): the end of the
 * assistant's message, the new messages, and the generation prompt — less the longest part of its
 * start that `tail` already ends with (a matched stop string such as `"\n\nuser:"` is already in the
 * session's state and is not written twice).
 */
export function renderContinuation(
  t: ChatTemplate,
  messages: readonly ChatMessageText[],
  tail: string,
): string {
  const full = messageEnd(t) + messages.map((m) => renderMessage(t, m)).join("") +
    t.generationPrompt;
  for (let k = Math.min(tail.length, full.length); k > 0; k--) {
    if (tail.endsWith(full.slice(0, k))) return full.slice(k);
  }
  return full;
}
