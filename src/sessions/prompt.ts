/**
 * Prompt assembly for sessions: completion prompts (text or token ids) and chat prompts (messages
 * through the chat template, continuing a session's conversation when there is one), under the
 * prompt-token limit. The routes, the edge handler and the library all build prompts here; errors
 * are `InputError` / `TnlError("context_length_exceeded")`, which the HTTP layer answers with 400s.
 * @module
 */

import type { Session } from "../engine/session.ts";
import { validateStopSequences } from "../engine/stop.ts";
import { InputError, TnlError } from "../errors.ts";
import type { ModelConfig } from "../model/config.ts";
import {
  type ChatMessageText,
  type ChatTemplate,
  DEFAULT_CHAT_TEMPLATE,
  renderChat,
  renderContinuation,
  renderMessage,
} from "./chat_template.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";

/** What prompts are built with: the model's tokenizer and vocabulary, the limit, the template. */
export interface PromptContext {
  /** The model (its tokenizer and vocabulary size). */
  model: { readonly tokenizer: Tokenizer; readonly config: Pick<ModelConfig, "vocabSize"> };
  /** Largest prompt in tokens (0 = none). */
  maxPromptTokens: number;
  /** The chat template (default: `DEFAULT_CHAT_TEMPLATE`). */
  chatTemplate?: ChatTemplate;
}

/** Tokens of a session's history decoded to find where a conversation's text ends. */
const TAIL_TOKENS = 48;

/**
 * Default largest prompt in tokens (`--max-prompt-tokens`): as many as `max_tokens` may generate.
 * The state does not grow with the context, so the limit is about time: a prefill this long takes
 * seconds on the CPU backend, and a 1 MB text (about 300k tokens) would take minutes.
 */
export const DEFAULT_MAX_PROMPT_TOKENS = 32_768;

/** `context_length_exceeded` (a 400) for a prompt of `count` tokens over `limit`. */
function promptTooLong(field: string, count: number, limit: number, atLeast: boolean): TnlError {
  return new TnlError(
    "context_length_exceeded",
    `${field}: ${atLeast ? "at least " : ""}${count} tokens, more than this server's limit of ` +
      `${limit} prompt tokens (--max-prompt-tokens)`,
    { param: field },
  );
}

/** `context_length_exceeded` naming `field` when a prompt of `count` tokens is over `limit` (0: no limit). */
export function checkPromptLength(count: number, limit: number, field = "prompt"): void {
  if (limit > 0 && count > limit) throw promptTooLong(field, count, limit, false);
}

/** UTF-16 units of text one token can cover at most, per tokenizer (0: no bound is known). */
const unitsPerToken = new WeakMap<Tokenizer, number>();

function maxUnitsPerToken(tok: Tokenizer): number {
  let n = unitsPerToken.get(tok);
  if (n !== undefined) return n;
  const norm = tok.model.normalizerSpec;
  if (norm.removeExtraWhitespaces) n = 0; // runs of spaces collapse: no bound from the length
  else {
    let longest = 1;
    for (const p of tok.model.pieces) longest = Math.max(longest, p.piece.length);
    // Identity: one text unit per piece unit ("▁" stands for one space). Other normalizations may
    // compose a few units into one (NFKC: Hangul jamo 3 → 1), so allow 4.
    const identity = norm.precompiledCharsmap.length === 0;
    n = longest * (identity ? 1 : 4);
  }
  unitsPerToken.set(tok, n);
  return n;
}

/**
 * Encode prompt text under a limit of `limit` tokens (0: none): a text too long to fit whatever it
 * says is refused before it is encoded (a token covers at most the longest piece's length), so a
 * huge body costs no tokenizer time; otherwise the exact count is checked. Errors name `field`.
 */
export function encodePrompt(
  tok: Tokenizer,
  text: string,
  limit: number,
  field = "prompt",
): Int32Array {
  const per = limit > 0 ? maxUnitsPerToken(tok) : 0;
  if (per > 0 && text.length > limit * per) {
    throw promptTooLong(field, Math.ceil(text.length / per), limit, true);
  }
  let ids: Int32Array;
  try {
    ids = tok.encode(text);
  } catch (e) {
    if (e instanceof InputError) throw new InputError(field, e.message);
    throw e;
  }
  checkPromptLength(ids.length, limit, field);
  return ids;
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
  ctx: PromptContext,
  session: Session,
  prompt: string | number[],
): Int32Array {
  const tok = ctx.model.tokenizer;
  let ids: Int32Array;
  if (typeof prompt === "string") ids = encodePrompt(tok, prompt, ctx.maxPromptTokens);
  else {
    checkPromptLength(prompt.length, ctx.maxPromptTokens);
    const V = ctx.model.config.vocabSize;
    prompt.forEach((t, i) => {
      if (t < 0 || t >= V) {
        throw new InputError("prompt", `token ${t} at index ${i} is outside [0, ${V})`);
      }
    });
    ids = Int32Array.from(prompt);
  }
  if (ids.length === 0 && isEmptySession(session)) {
    if (tok.bosId < 0) throw new InputError("prompt", "must not be empty");
    ids = Int32Array.of(tok.bosId);
  }
  return ids;
}

/** The prompt text of a completion prompt (for `echo`). */
export function promptText(ctx: PromptContext, prompt: string | number[]): string {
  return typeof prompt === "string" ? prompt : ctx.model.tokenizer.decode(prompt);
}

/** The text a session's history ends with (its last few tokens decoded). */
export function sessionTail(ctx: PromptContext, s: Session): string {
  const toks = s.tokens;
  return ctx.model.tokenizer.decode(toks.subarray(Math.max(0, toks.length - TAIL_TOKENS)));
}

/**
 * Token ids of a chat prompt. A new (empty) session gets the whole conversation rendered; a session
 * holding a conversation gets only the new messages, after the end of the assistant's last reply
 * (see `renderContinuation`); no messages on such a session continue the reply as it is.
 */
export function chatPrompt(
  ctx: PromptContext,
  session: Session,
  messages: readonly ChatMessageText[],
  template: ChatTemplate = ctx.chatTemplate ?? DEFAULT_CHAT_TEMPLATE,
): Int32Array {
  let text: string;
  if (isEmptySession(session)) text = renderChat(template, messages);
  else if (messages.length === 0) return new Int32Array(0);
  else text = renderContinuation(template, messages, sessionTail(ctx, session));
  return encodePrompt(ctx.model.tokenizer, text, ctx.maxPromptTokens, "messages");
}

/**
 * How many leading tokens of `ids` (a new conversation's chat prompt) the earlier turns cover: the
 * messages before the last one, rendered and encoded alone, compared token by token (text encoded
 * whole may merge pieces across the turn boundary, so only the common tokens count). 0 with fewer
 * than two messages. Other conversations that share these turns (a system prompt, few-shot turns)
 * share this prefix of the prompt.
 */
export function earlierTurnsLength(
  ctx: PromptContext,
  messages: readonly ChatMessageText[],
  ids: Int32Array,
  template: ChatTemplate = ctx.chatTemplate ?? DEFAULT_CHAT_TEMPLATE,
): number {
  if (messages.length < 2) return 0;
  const text = template.prefix +
    messages.slice(0, -1).map((m) => renderMessage(template, m)).join("");
  const earlier = ctx.model.tokenizer.encode(text);
  let n = 0;
  while (n < earlier.length && n < ids.length && earlier[n] === ids[n]) n++;
  return n;
}

/** Token ids to prefill a new session with chat messages (no generation prompt). */
export function chatPrefill(ctx: PromptContext, messages: readonly ChatMessageText[]): Int32Array {
  const t = ctx.chatTemplate ?? DEFAULT_CHAT_TEMPLATE;
  const text = t.prefix + messages.map((m) => renderMessage(t, m)).join("");
  return encodePrompt(ctx.model.tokenizer, text, ctx.maxPromptTokens, "messages");
}

/** The stop strings of a chat request: the template's and the request's. */
export function chatStops(ctx: PromptContext, stop: string[]): string[] {
  const t = ctx.chatTemplate ?? DEFAULT_CHAT_TEMPLATE;
  try {
    return validateStopSequences([...t.stop, ...stop]);
  } catch (e) {
    if (e instanceof InputError) throw new InputError("stop", e.message);
    throw e;
  }
}
