/**
 * One generation behind an OpenAI-shaped response: runs the engine on a held session and answers
 * with a `text_completion` / `chat.completion` JSON body or an SSE stream of chunks, saving the
 * session when the response completes.
 *
 * Cancellation: the engine request gets an AbortSignal fired by the client going away (the SSE
 * stream is cancelled, or `request.signal` reads aborted), by the request timeout, or by the end of
 * the shutdown grace period. The engine then stops at a step boundary and frees the slot.
 *
 * | how it ended                        | response                         | session saved |
 * |-------------------------------------|----------------------------------|---------------|
 * | stop string, EOS, `max_tokens`      | 200, finish_reason stop / length | yes           |
 * | timeout or shutdown, some output    | 200, finish_reason length        | yes           |
 * | timeout or shutdown, no output      | 503 + Retry-After (or SSE error) | no            |
 * | client gone                         | nobody listens (logged as 499)   | no            |
 * | engine error                        | 500 / 503, or an SSE error event | no            |
 * @module
 */

import type { FinishReason, GenerateEvent } from "../engine/engine.ts";
import type { Session } from "../engine/session.ts";
import type { StateEncoding } from "../state/encodings.ts";
import type { SampledToken, SamplingParams } from "../engine/sampler.ts";
import {
  generateOnSession,
  type SessionGeneration,
  type SessionLease,
  sessionSampling,
} from "../sessions/mod.ts";
import { PieceType } from "../tokenizer/mod.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import type { AppContext, Serving } from "./context.ts";
import type { HttpMetrics } from "./metrics.ts";
import { errorBody, HttpError, RETRY_AFTER_SECONDS, toHttpError } from "./errors.ts";
import type { RequestRecord } from "./middleware.ts";
import type { GenerationParams } from "./schemas.ts";
import { SSE_DONE, SseWriter } from "./sse.ts";

/** Which response shape. */
export type ResponseKind = "completion" | "chat";

/** One choice of a response: a held session and the prompt appended to it. */
export interface ChoiceInput {
  /** The session (held; released here). */
  lease: SessionLease;
  /** Prompt token ids appended to the session. */
  prompt: Int32Array;
  /** Text echoed before the completion (completions `echo`). */
  echo?: string;
  /**
   * Which of the `n` choices of its prompt this is (default 0): it samples with `seed + copy` when
   * the request has a seed, and only copy 0 counts the prompt's tokens in the usage (as OpenAI).
   */
  copy?: number;
  /** Leading prompt tokens other requests likely share (a chat's earlier turns; prefix cache). */
  shareAt?: number;
}

/** Everything one generation needs: its first choice, and any further ones in `more`. */
export interface GenerationCall extends ChoiceInput {
  /** Response shape. */
  kind: ResponseKind;
  /** The app. */
  ctx: AppContext;
  /** The loaded model and friends. */
  serving: Serving;
  /** Parsed request options. */
  params: GenerationParams;
  /** Keep partial characters and stop matches in the session when stopping by length. */
  holdPartial: boolean;
  /** The HTTP request (for disconnect detection). */
  request: Request;
  /** Facts for the log line. */
  record: RequestRecord;
  /**
   * Further choices (`n` > 1, prompt arrays), each with its own new session, generated together
   * (the engine batches them) and answered with `index` 1, 2, ... in this order. With several
   * choices each choice carries its own `session` and the response's top-level `session` is null;
   * one failing choice fails the response (the others are stopped and nothing is saved).
   */
  more?: ChoiceInput[];
}

/** OpenAI usage. */
export interface Usage {
  /** Prompt tokens. */
  prompt_tokens: number;
  /** Generated tokens. */
  completion_tokens: number;
  /** Their sum. */
  total_tokens: number;
  /** Prompt tokens whose state came from the prefix cache (`cached_tokens`). */
  prompt_tokens_details: { cached_tokens: number };
}

/** The text and UTF-8 bytes of a token, as log-probabilities show it. */
export interface TokenText {
  /** The token's text (`\xNN` for a non-ASCII byte-fallback piece, "" for control pieces). */
  text: string;
  /** Its UTF-8 bytes (the raw byte for a byte-fallback piece). */
  bytes: number[];
}

const tokenTexts = new WeakMap<Tokenizer, TokenText[]>();
const utf8 = new TextEncoder();

/**
 * The text of token `id` alone: pieces with `▁` as spaces; byte-fallback pieces as the character
 * for ASCII bytes and as `\xNN` for the others (a part of a multi-byte character).
 */
export function tokenText(tokenizer: Tokenizer, id: number): TokenText {
  let table = tokenTexts.get(tokenizer);
  if (!table) {
    table = [];
    tokenTexts.set(tokenizer, table);
  }
  let t = table[id];
  if (!t) {
    const p = tokenizer.model.pieces[id];
    if (!p || p.type === PieceType.CONTROL) t = { text: "", bytes: [] };
    else if (p.type === PieceType.BYTE) {
      const b = parseInt(p.piece.slice(3, 5), 16);
      const text = b < 0x80 ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, "0")}`;
      t = { text, bytes: [b] };
    } else {
      const text = p.type === PieceType.UNKNOWN ? "\u2047" : p.piece.replaceAll("\u2581", " ");
      t = { text, bytes: Array.from(utf8.encode(text)) };
    }
    table[id] = t;
  }
  return t;
}

/** A log-probability as JSON can carry it (-Infinity → -9999, as OpenAI does). */
export function finiteLogprob(v: number): number {
  return Number.isFinite(v) ? v : -9999;
}

/** A response id with a prefix (`cmpl-`, `chatcmpl-`). */
export function newResponseId(prefix: string): string {
  const b = new Uint8Array(18);
  crypto.getRandomValues(b);
  return prefix + b.toBase64({ alphabet: "base64url", omitPadding: true });
}

/** Legacy completions log-probabilities of some tokens. */
interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: number[];
  top_logprobs: Record<string, number>[];
  text_offset: number[];
}

/** Chat log-probability of one token. */
interface ChatLogprob {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: { token: string; logprob: number; bytes: number[] }[];
}

function completionLogprobs(
  tok: Tokenizer,
  lps: SampledToken[],
  offset: number,
): { lp: CompletionLogprobs; end: number } {
  const lp: CompletionLogprobs = {
    tokens: [],
    token_logprobs: [],
    top_logprobs: [],
    text_offset: [],
  };
  for (const s of lps) {
    const t = tokenText(tok, s.token).text;
    lp.tokens.push(t);
    lp.token_logprobs.push(finiteLogprob(s.logprob));
    const top: Record<string, number> = {};
    for (const a of s.top) {
      const k = tokenText(tok, a.token).text;
      if (!(k in top)) top[k] = finiteLogprob(a.logprob);
    }
    lp.top_logprobs.push(top);
    lp.text_offset.push(offset);
    offset += t.length;
  }
  return { lp, end: offset };
}

function chatLogprobs(tok: Tokenizer, lps: SampledToken[]): ChatLogprob[] {
  return lps.map((s) => {
    const t = tokenText(tok, s.token);
    return {
      token: t.text,
      logprob: finiteLogprob(s.logprob),
      bytes: t.bytes,
      top_logprobs: s.top.map((a) => {
        const at = tokenText(tok, a.token);
        return { token: at.text, logprob: finiteLogprob(a.logprob), bytes: at.bytes };
      }),
    };
  });
}

/** The OpenAI finish reason of an engine finish reason. */
export function openAiFinishReason(r: FinishReason): "stop" | "length" {
  return r === "stop" ? "stop" : "length";
}

/**
 * Sampling for a request on a session: fields the request gives, over (when continuing a session)
 * the session's last settings less its seed (a seed restarts the random stream; without one the
 * session's stream goes on). Choice copy `c` of a seeded request samples with `seed + c`.
 */
export function effectiveSampling(
  call: GenerationCall,
  choice: ChoiceInput = call,
): SamplingParams {
  const own = call.params.sampling;
  const given = own.seed !== undefined && choice.copy
    ? { ...own, seed: own.seed + choice.copy }
    : own;
  return sessionSampling(choice.lease.session, choice.lease.isNew, given);
}

/** Why the engine requests were stopped ("sibling": another choice of the response failed). */
type AbortCause = "client" | "timeout" | "shutdown" | "sibling";

/**
 * Open a new session for each of `specs` and build its choice with `make` (prompt, echo, copy);
 * they save their states in `encoding` (default: the server's). A failure releases the sessions
 * opened so far.
 */
export async function newChoices<T>(
  serving: Serving,
  specs: readonly T[],
  make: (session: Session, spec: T) => Omit<ChoiceInput, "lease">,
  encoding?: StateEncoding,
): Promise<ChoiceInput[]> {
  const out: ChoiceInput[] = [];
  try {
    for (const spec of specs) {
      const lease = await serving.sessions.create(undefined, { encoding });
      try {
        out.push({ ...make(lease.session, spec), lease });
      } catch (e) {
        await lease.release();
        throw e;
      }
    }
  } catch (e) {
    await Promise.all(out.map((c) => c.lease.release()));
    throw e;
  }
  return out;
}

/** A generation call before its sessions are held: everything but the choices. */
export type CallBase = Omit<GenerationCall, keyof ChoiceInput | "more">;

/**
 * Continue the stored session `id`: hold it (404 / 409), build the choice on it with `build` (the
 * prompt; a failure releases the session), generate and answer. The one path of every route that
 * continues a session.
 */
export async function respondOnSession(
  base: CallBase,
  id: string,
  build: (session: Session) => Omit<ChoiceInput, "lease">,
): Promise<Response> {
  const lease = await base.serving.sessions.open(id, { encoding: base.params.stateEncoding });
  let input: Omit<ChoiceInput, "lease">;
  try {
    input = build(lease.session);
  } catch (e) {
    await lease.release();
    throw e;
  }
  return await respondWithGeneration({ ...base, ...input, lease });
}

/**
 * One choice per spec, each in a new session (built by `build`), generated together and answered
 * as one response. The one path of every route that starts new sessions.
 */
export async function respondOnNewSessions<T>(
  base: CallBase,
  specs: readonly T[],
  build: (session: Session, spec: T) => Omit<ChoiceInput, "lease">,
): Promise<Response> {
  const choices = await newChoices(base.serving, specs, build, base.params.stateEncoding);
  return await respondWithGeneration({ ...base, ...choices[0], more: choices.slice(1) });
}

/** Run the generation and answer; see the module doc. */
export async function respondWithGeneration(call: GenerationCall): Promise<Response> {
  const { ctx, serving, params, record } = call;
  const inputs: ChoiceInput[] = [call, ...(call.more ?? [])];
  record.session = call.lease.session.id;
  const ac = new AbortController();
  let cause: AbortCause | null = null;
  const abort = (why: AbortCause) => {
    if (cause) return;
    cause = why;
    ac.abort();
  };
  const timeoutMs = ctx.options.requestTimeoutMs;
  const timer = timeoutMs > 0 ? setTimeout(() => abort("timeout"), timeoutMs) : undefined;
  const poll = setInterval(() => {
    if (call.request.signal.aborted) abort("client");
  }, ctx.options.disconnectPollMs);
  const onShutdown = () => abort("shutdown");
  ctx.shutdownSignal.addEventListener("abort", onShutdown);
  if (ctx.shutdownSignal.aborted) abort("shutdown");
  const cleanup = () => {
    clearTimeout(timer);
    clearInterval(poll);
    ctx.shutdownSignal.removeEventListener("abort", onShutdown);
  };

  const choices: ChoiceRun[] = [];
  try {
    for (const input of inputs) {
      const { lease } = input;
      const run: SessionGeneration = await generateOnSession(serving.engine, {
        session: lease.session,
        prompt: input.prompt,
        sampling: effectiveSampling(call, input),
        maxTokens: params.maxTokens,
        stop: params.stop,
        logprobs: params.logprobs,
        signal: ac.signal,
        holdPartial: call.holdPartial,
        checkpointEvery: params.store ? ctx.options.checkpointTokens : 0,
        onCheckpoint: params.store ? (snap) => lease.checkpoint(snap) : undefined,
        keepState: params.store,
      }, { prefixCache: serving.prefixCache, shareAt: input.shareAt });
      const timed = timedEvents(run.events, ctx.metrics, record.arrivedAt ?? performance.now());
      choices.push({ input, index: choices.length, events: timed, cached: run.cachedTokens });
    }
  } catch (e) {
    cleanup();
    // Released before the error response goes out (a retry may come at once); the engine requests
    // already made end at once with the signal.
    ac.abort();
    await Promise.all(inputs.map((i) => i.lease.release()));
    throw e;
  }
  const state: RunState = {
    call,
    choices,
    multi: choices.length > 1,
    id: newResponseId(call.kind === "chat" ? "chatcmpl-" : "cmpl-"),
    created: Math.floor(Date.now() / 1000),
    abortCause: () => cause,
    cleanup,
  };
  if (params.stream) return streamResponse(state, abort);
  return jsonResponse(state, abort);
}

/** One choice being generated. */
interface ChoiceRun {
  input: ChoiceInput;
  /** OpenAI's `index`. */
  index: number;
  events: AsyncIterable<GenerateEvent>;
  /** Prompt tokens from the prefix cache. */
  cached: number;
}

/** Pass the events on, recording time to first token and inter-token latency. */
async function* timedEvents(
  events: AsyncIterable<GenerateEvent>,
  metrics: HttpMetrics,
  arrivedAt: number,
): AsyncGenerator<GenerateEvent> {
  let last = -1;
  for await (const ev of events) {
    if (ev.type === "token" && ev.tokens.length) {
      const now = performance.now();
      if (last < 0) metrics.ttft.observe((now - arrivedAt) / 1000);
      else metrics.interToken.observe((now - last) / 1000);
      for (let i = 1; i < ev.tokens.length; i++) metrics.interToken.observe(0);
      last = now;
    }
    yield ev;
  }
}

interface RunState {
  call: GenerationCall;
  choices: ChoiceRun[];
  /** More than one choice: sessions are reported per choice. */
  multi: boolean;
  id: string;
  created: number;
  abortCause: () => AbortCause | null;
  cleanup: () => void;
}

type Done = Extract<GenerateEvent, { type: "done" }>;

/** The usage of finished choices; a prompt's tokens count once however many copies ran it. */
function usageOf(choices: readonly ChoiceRun[], dones: readonly Done[]): Usage {
  let p = 0, c = 0, cached = 0;
  dones.forEach((d, i) => {
    if (!choices[i].input.copy) {
      p += d.usage.promptTokens;
      cached += choices[i].cached;
    }
    c += d.usage.completionTokens;
  });
  return {
    prompt_tokens: p,
    completion_tokens: c,
    total_tokens: p + c,
    prompt_tokens_details: { cached_tokens: cached },
  };
}

/** Facts of finished choices for the log line. */
function recordUsage(s: RunState, dones: readonly (Done | null)[]): void {
  const { record } = s.call;
  record.promptTokens = 0;
  record.completionTokens = 0;
  dones.forEach((d, i) => {
    if (!d) return;
    if (!s.choices[i].input.copy) record.promptTokens! += d.usage.promptTokens;
    record.completionTokens! += d.usage.completionTokens;
    record.finish ??= d.finishReason;
  });
}

/**
 * After "done": save the choice's session (when asked to keep it) and release it. Returns the
 * session id to report (null when not kept), or throws when a continued session could not be saved.
 */
async function finishSession(s: RunState, lease: SessionLease) {
  const { ctx } = s.call;
  try {
    if (!s.call.params.store) return null;
    try {
      await lease.save();
      return lease.session.id;
    } catch (e) {
      if (!lease.isNew) throw e;
      // A new session that could not be stored: the completion still stands.
      ctx.logger.log("warn", "session not stored", {
        session: lease.session.id,
        error: String(e),
      });
      return null;
    }
  } finally {
    // Before the response completes: the next request may come to another instance at once.
    await lease.release();
  }
}

/** Whether a finished generation is answered as a failure (nothing saved). */
function failure(s: RunState, done: Done): HttpError | null {
  if (done.finishReason === "error") return toHttpError(done.error);
  const why = s.abortCause();
  if (done.finishReason === "cancelled" && why === "client") {
    return new HttpError(499, "the client closed the request", { code: "client_closed" });
  }
  if (
    (done.finishReason === "cancelled" || done.finishReason === "timeout") &&
    done.usage.completionTokens === 0 && s.call.params.maxTokens > 0
  ) {
    return new HttpError(
      503,
      why === "shutdown"
        ? "the server is shutting down"
        : "the request timed out before the model produced anything",
      { code: "timeout", headers: { "retry-after": String(RETRY_AFTER_SECONDS) } },
    );
  }
  return null;
}

/** What one choice produced, collected for a JSON answer. */
interface Collected {
  text: string;
  lps: SampledToken[];
  done: Done | null;
}

async function collect(ch: ChoiceRun): Promise<Collected> {
  const out: Collected = { text: "", lps: [], done: null };
  for await (const ev of ch.events) {
    if (ev.type === "token") {
      out.text += ev.text;
      if (ev.logprobs) out.lps.push(...ev.logprobs);
    } else out.done = ev;
  }
  return out;
}

async function jsonResponse(
  s: RunState,
  abort: (why: AbortCause) => void,
): Promise<Response> {
  const { call, choices } = s;
  const tok = call.serving.model.tokenizer;
  let results: Collected[];
  try {
    // A choice that fails stops the others (the whole response fails).
    results = await Promise.all(choices.map((ch) =>
      collect(ch).then((r) => {
        if (s.multi && (!r.done || failure(s, r.done))) abort("sibling");
        return r;
      })
    ));
  } finally {
    s.cleanup();
  }
  const releaseAll = () => Promise.all(choices.map((ch) => ch.input.lease.release()));
  if (results.some((r) => !r.done)) {
    await releaseAll();
    throw new HttpError(500, "the generation ended without a result");
  }
  const dones = results.map((r) => r.done!);
  // A choice stopped because another failed is not a failure of its own.
  const stopped = (d: Done) => s.abortCause() === "sibling" && d.finishReason === "cancelled";
  const fail = dones.map((d) => (stopped(d) ? null : failure(s, d))).find((f) => f) ?? null;
  recordUsage(s, dones);
  if (fail) {
    await releaseAll();
    throw fail;
  }
  const sessions = await Promise.all(choices.map((ch) => finishSession(s, ch.input.lease)));
  const usage = usageOf(choices, dones);
  const model = call.serving.modelId;
  const system_fingerprint = "fp_" + call.serving.model.fingerprint.slice(0, 12);
  const logprobsWanted = call.params.logprobs !== undefined;
  const out = choices.map((ch, i) => {
    const { text, lps } = results[i];
    const done = dones[i];
    const finish_reason = openAiFinishReason(done.finishReason);
    const perChoice: Record<string, unknown> = s.multi ? { session: sessions[i] } : {};
    if (call.kind === "completion") {
      const echo = ch.input.echo ?? "";
      return {
        index: ch.index,
        text: echo + text + done.text,
        logprobs: logprobsWanted ? completionLogprobs(tok, lps, echo.length).lp : null,
        finish_reason,
        ...perChoice,
      };
    }
    return {
      index: ch.index,
      message: { role: "assistant", content: text + done.text, refusal: null },
      logprobs: logprobsWanted ? { content: chatLogprobs(tok, lps), refusal: null } : null,
      finish_reason,
      ...perChoice,
    };
  });
  return Response.json({
    id: s.id,
    object: call.kind === "completion" ? "text_completion" : "chat.completion",
    created: s.created,
    model,
    system_fingerprint,
    choices: out,
    usage,
    session: s.multi ? null : sessions[0],
  });
}

function streamResponse(s: RunState, abort: (why: AbortCause) => void): Response {
  const { call, choices } = s;
  const tok = call.serving.model.tokenizer;
  const writer = new SseWriter(() => abort("client"));
  let endStream!: () => void;
  call.record.done = new Promise<void>((r) => (endStream = r));
  const model = call.serving.modelId;
  const system_fingerprint = "fp_" + call.serving.model.fingerprint.slice(0, 12);
  const chat = call.kind === "chat";
  const object = chat ? "chat.completion.chunk" : "text_completion";
  const logprobsWanted = call.params.logprobs !== undefined;
  const includeUsage = call.params.includeUsage;
  const store = call.params.store;
  const sessionIds = choices.map((ch) => (store ? ch.input.lease.session.id : null));
  const offsets = choices.map((ch) => ch.input.echo?.length ?? 0);

  const chunk = (
    i: number,
    text: string | null,
    lps: SampledToken[] | undefined,
    finish: string | null,
    first = false,
  ) => {
    let logprobs: unknown = null;
    if (logprobsWanted && lps && lps.length) {
      if (chat) logprobs = { content: chatLogprobs(tok, lps), refusal: null };
      else {
        const r = completionLogprobs(tok, lps, offsets[i]);
        offsets[i] = r.end;
        logprobs = r.lp;
      }
    }
    const choice: Record<string, unknown> = { index: choices[i].index };
    if (chat) {
      const delta: Record<string, unknown> = first ? { role: "assistant" } : {};
      if (text !== null) delta.content = text;
      choice.delta = delta;
    } else choice.text = text ?? "";
    choice.logprobs = logprobs;
    choice.finish_reason = finish;
    if (s.multi) choice.session = sessionIds[i];
    const body: Record<string, unknown> = {
      id: s.id,
      object,
      created: s.created,
      model,
      system_fingerprint,
      choices: [choice],
      session: s.multi ? null : sessionIds[i],
    };
    if (includeUsage) body.usage = null;
    writer.send(body);
  };

  let failed: HttpError | null = null;
  /** Each choice's end, failed or not (for the log line). */
  const ends: (Done | null)[] = choices.map(() => null);
  /** Stream one choice to its end; saves its session. Returns its result (null if it failed). */
  const run = async (i: number): Promise<Done | null> => {
    const { input, events } = choices[i];
    let done: Done | null = null;
    for await (const ev of events) {
      if (ev.type === "token") {
        if (failed) continue;
        if (ev.text !== "" || (logprobsWanted && ev.logprobs?.length)) {
          chunk(i, ev.text, ev.logprobs, null);
        }
      } else done = ends[i] = ev;
    }
    const fail = done
      ? failure(s, done)
      : new HttpError(500, "the generation ended without a result");
    if (fail || failed) {
      // A choice stopped because another failed is not a failure of its own.
      const own = fail && !(s.abortCause() === "sibling" && done?.finishReason === "cancelled");
      if (own) failed ??= fail;
      if (choices.length > 1) abort("sibling");
      await input.lease.release();
      return null;
    }
    try {
      sessionIds[i] = await finishSession(s, input.lease);
    } catch (e) {
      failed ??= toHttpError(e);
      if (choices.length > 1) abort("sibling");
      return null;
    }
    if (done!.text) chunk(i, done!.text, undefined, null);
    chunk(i, chat ? null : "", undefined, openAiFinishReason(done!.finishReason));
    return done;
  };

  const pump = async () => {
    let dones: (Done | null)[];
    try {
      for (let i = 0; i < choices.length; i++) {
        if (chat) chunk(i, "", undefined, null, true);
        else if (choices[i].input.echo) chunk(i, choices[i].input.echo!, undefined, null);
      }
      dones = await Promise.all(choices.map((_, i) => run(i)));
    } finally {
      s.cleanup();
    }
    recordUsage(s, ends);
    if (failed) {
      const f = failed as HttpError;
      if (f.status !== 499) endWithError(f);
      else writer.close();
      return;
    }
    if (includeUsage) {
      writer.send({
        id: s.id,
        object,
        created: s.created,
        model,
        system_fingerprint,
        choices: [],
        usage: usageOf(choices, dones as Done[]),
        session: s.multi ? null : sessionIds[0],
      });
    }
    writer.send(SSE_DONE);
    writer.close();
  };
  // A stream that fails after its 200 ends with an error event and `[DONE]` (clients waiting for
  // `[DONE]` stop), and its log line carries the error.
  const endWithError = (e: HttpError) => {
    call.record.error = { status: e.status, message: e.message };
    writer.send(errorBody(e, undefined));
    writer.send(SSE_DONE);
    writer.close();
  };
  pump().catch(async (e) => {
    await Promise.all(choices.map((ch) => ch.input.lease.release()));
    call.ctx.logger.log("error", "stream failed", { error: String(e), stack: (e as Error)?.stack });
    endWithError(toHttpError(e));
  }).finally(() => endStream());
  return writer.response();
}

/**
 * Feed `prompt` into a held session without generating (`max_tokens` 0), for `POST /v1/sessions`.
 * Cancelled by the request timeout or shutdown; the caller saves and releases the session.
 * Returns the prompt tokens consumed.
 */
export async function prefillSession(
  ctx: AppContext,
  serving: Serving,
  lease: SessionLease,
  prompt: Int32Array,
): Promise<number> {
  const ac = new AbortController();
  const t = ctx.options.requestTimeoutMs;
  const timer = t > 0 ? setTimeout(() => ac.abort(), t) : undefined;
  const onShutdown = () => ac.abort();
  ctx.shutdownSignal.addEventListener("abort", onShutdown);
  try {
    let done: Extract<GenerateEvent, { type: "done" }> | null = null;
    const run = await generateOnSession(
      serving.engine,
      { session: lease.session, prompt, maxTokens: 0, signal: ac.signal },
      { prefixCache: serving.prefixCache },
    );
    for await (const ev of run.events) {
      if (ev.type === "done") done = ev;
    }
    if (!done) throw new HttpError(500, "the prefill ended without a result");
    if (done.finishReason === "error") throw toHttpError(done.error);
    if (done.finishReason !== "length") {
      throw new HttpError(503, "the prefill was cancelled (timeout or shutdown)", {
        code: "timeout",
        headers: { "retry-after": String(RETRY_AFTER_SECONDS) },
      });
    }
    return done.usage.promptTokens;
  } finally {
    clearTimeout(timer);
    ctx.shutdownSignal.removeEventListener("abort", onShutdown);
  }
}
