/**
 * Prompts of the generating routes: completion prompts (text or token ids) and chat prompts
 * (messages through the chat template, continuing a session's conversation when there is one),
 * plus the checks every generating route shares (the `model` field, schema limits).
 * @module
 */

import type { Session } from "../engine/session.ts";
import { validateStopSequences } from "../engine/stop.ts";
import { InputError } from "../errors.ts";
import {
  type ChatMessageText,
  type ChatTemplate,
  renderChat,
  renderContinuation,
  renderMessage,
} from "./chat_template.ts";
import type { AppContext, Serving } from "./context.ts";
import { badRequest, notFound } from "./errors.ts";
import type { SchemaLimits } from "./schemas.ts";

/** Tokens of a session's history decoded to find where a conversation's text ends. */
const TAIL_TOKENS = 48;

/** The schema limits of this server and model. */
export function schemaLimits(ctx: AppContext, serving: Serving): SchemaLimits {
  return {
    vocabSize: serving.model.config.vocabSize,
    maxTokensLimit: ctx.options.maxTokensLimit,
    defaultChatMaxTokens: ctx.options.defaultChatMaxTokens,
  };
}

/** A 404 (`model_not_found`) unless `model` is absent or the served model's id. */
export function checkModel(model: string | undefined, serving: Serving): void {
  if (model !== undefined && model !== serving.modelId) {
    throw notFound(
      `The model '${model}' does not exist; this server serves '${serving.modelId}'`,
      "model",
      "model_not_found",
    );
  }
}

/** Whether a session holds nothing yet. */
export function isEmptySession(s: Session): boolean {
  return s.length === 0 && s.pending < 0;
}

/**
 * Token ids of a completion prompt. Text is encoded without BOS; an empty text on an empty
 * session becomes the BOS token (so `prompt: ""` generates from the start), or a 400 when the
 * tokenizer has none. Token ids are checked against the vocabulary by the engine.
 */
export function completionPrompt(
  serving: Serving,
  session: Session,
  prompt: string | number[],
): Int32Array {
  const tok = serving.model.tokenizer;
  let ids: Int32Array;
  if (typeof prompt === "string") {
    try {
      ids = tok.encode(prompt);
    } catch (e) {
      if (e instanceof InputError) throw badRequest("prompt", `prompt: ${e.message}`);
      throw e;
    }
  } else {
    const V = serving.model.config.vocabSize;
    prompt.forEach((t, i) => {
      if (t < 0 || t >= V) {
        throw badRequest("prompt", `prompt: token ${t} at index ${i} is outside [0, ${V})`);
      }
    });
    ids = Int32Array.from(prompt);
  }
  if (ids.length === 0 && isEmptySession(session)) {
    if (tok.bosId < 0) throw badRequest("prompt", "prompt: must not be empty");
    ids = Int32Array.of(tok.bosId);
  }
  return ids;
}

/** The prompt text of a completion prompt (for `echo`). */
export function promptText(serving: Serving, prompt: string | number[]): string {
  return typeof prompt === "string" ? prompt : serving.model.tokenizer.decode(prompt);
}

/** The text a session's history ends with (its last few tokens decoded). */
export function sessionTail(serving: Serving, s: Session): string {
  const toks = s.tokens;
  return serving.model.tokenizer.decode(toks.subarray(Math.max(0, toks.length - TAIL_TOKENS)));
}

/**
 * Token ids of a chat prompt. A new (empty) session gets the whole conversation rendered; a session
 * holding a conversation gets only the new messages, after the end of the assistant's last reply
 * (see `renderContinuation`); no messages on such a session continue the reply as it is.
 */
export function chatPrompt(
  serving: Serving,
  session: Session,
  messages: readonly ChatMessageText[],
  template: ChatTemplate = serving.chatTemplate,
): Int32Array {
  let text: string;
  if (isEmptySession(session)) text = renderChat(template, messages);
  else if (messages.length === 0) return new Int32Array(0);
  else text = renderContinuation(template, messages, sessionTail(serving, session));
  return serving.model.tokenizer.encode(text);
}

/** Token ids to prefill a new session with chat messages (no generation prompt). */
export function chatPrefill(serving: Serving, messages: readonly ChatMessageText[]): Int32Array {
  const t = serving.chatTemplate;
  const text = t.prefix + messages.map((m) => renderMessage(t, m)).join("");
  return serving.model.tokenizer.encode(text);
}

/** The stop strings of a chat request: the template's and the request's. */
export function chatStops(serving: Serving, stop: string[]): string[] {
  try {
    return validateStopSequences([...serving.chatTemplate.stop, ...stop]);
  } catch (e) {
    if (e instanceof InputError) throw badRequest("stop", `stop: ${e.message}`);
    throw e;
  }
}
