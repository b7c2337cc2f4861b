/**
 * The library's session: a conversation that generates, exports its state as bytes, and resumes
 * from them (in this process or another with the same model), in three lines.
 *
 * @example Generate, export, resume
 * ```ts
 * import { loadModel } from "../load.ts";
 *
 * const model = await loadModel();
 * const s = await model.session();
 * for await (const c of s.generate("ROMEO:", { maxTokens: 20, seed: 1 })) console.log(c.text);
 * const bytes = await s.export(); // msgpack, 918 KB for the default model whatever the length
 * const s2 = await model.session(bytes);
 * for await (const c of s2.generate("", { maxTokens: 20 })) console.log(c.text); // goes on
 * await model.dispose();
 * ```
 * @module
 */

import type { Engine, FinishReason, GenerateEvent } from "../engine/engine.ts";
import type { SamplingParams } from "../engine/sampler.ts";
import { Session } from "../engine/session.ts";
import { InputError } from "../errors.ts";
import {
  type DecodeOptions,
  decodeSession,
  type EncodeOptions,
  encodeSession,
  type StateSecret,
} from "../state/mod.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import type { SessionModel } from "./manager.ts";
import type { PrefixCache } from "./prefix_cache.ts";
import { completionPrompt, isEmptySession } from "./prompt.ts";
import { generateOnSession } from "./run.ts";
import { sessionSampling } from "./sampling.ts";

/** Options of `generate`. */
export interface GenerateOptions extends SamplingParams {
  /** Most tokens to generate (default 128). */
  maxTokens?: number;
  /** Stop strings. */
  stop?: string[];
  /** Cancel. */
  signal?: AbortSignal;
}

/** A piece of streamed text. */
export interface TextChunk {
  /** New text. */
  text: string;
  /** Token ids generated for it. */
  tokens: number[];
  /** Set on the last chunk. */
  finishReason?: FinishReason;
}

/** Options of `TnlModel.session`. */
export interface SessionOptions {
  /** HMAC-SHA256 secret: exported states are signed, and only states signed with it resume. */
  secret?: StateSecret;
}

/** What a `ModelSession` runs on. */
export interface ModelSessionHost {
  /** The model (shape and fingerprints). */
  model: SessionModel & { readonly tokenizer: Tokenizer };
  /** Its engine. */
  engine: Engine;
  /** A prefix cache for new sessions, if any. */
  prefixCache?: PrefixCache | null;
}

/**
 * A resumable conversation with the model (see the module doc). Each `generate` appends its prompt
 * to the conversation and continues it; sampling fields left out keep the last request's (the seed
 * excepted: without one the random stream goes on). One `generate` at a time.
 */
export class ModelSession {
  readonly #host: ModelSessionHost;
  readonly #session: Session;
  readonly #codec: EncodeOptions & DecodeOptions;

  private constructor(
    host: ModelSessionHost,
    session: Session,
    codec: EncodeOptions & DecodeOptions,
  ) {
    this.#host = host;
    this.#session = session;
    this.#codec = codec;
  }

  /**
   * A new session, or one resumed from bytes `export()` returned (with any model of the same
   * fingerprint). Bytes that are malformed, tampered with or for another model throw `StateError`.
   */
  static async open(
    host: ModelSessionHost,
    from?: Uint8Array,
    opts: SessionOptions = {},
  ): Promise<ModelSession> {
    const codec = {
      config: host.model.config,
      modelFingerprint: host.model.fingerprint,
      tokenizerFingerprint: host.model.tokenizer.fingerprint,
      secret: opts.secret,
    };
    const session = from === undefined
      ? host.engine.newSession()
      : Session.fromSnapshot(host.model.config, await decodeSession(from, codec));
    return new ModelSession(host, session, codec);
  }

  /** The session id (kept across export and resume). */
  get id(): string {
    return this.#session.id;
  }

  /** Tokens the state has consumed. */
  get position(): number {
    return this.#session.position;
  }

  /**
   * Stream the continuation of `prompt` (text appended to the conversation; "" continues it as it
   * is, or starts it from BOS when it is empty).
   */
  async *generate(prompt: string, opts: GenerateOptions = {}): AsyncIterable<TextChunk> {
    const { maxTokens = 128, stop, signal, ...sampling } = opts;
    const s = this.#session;
    const { engine, model, prefixCache } = this.#host;
    const ids = completionPrompt({ model, maxPromptTokens: 0 }, s, prompt);
    if (ids.length === 0 && s.pending < 0) throw new InputError("prompt", "must not be empty");
    const run = await generateOnSession(engine, {
      session: s,
      prompt: ids,
      sampling: sessionSampling(s, isEmptySession(s), sampling),
      maxTokens,
      stop,
      signal,
      // Characters and stop matches cut by maxTokens complete in the next generate.
      holdPartial: true,
    }, { prefixCache });
    yield* textChunks(run.events);
  }

  /** The session's state as portable msgpack bytes (signed when a secret was given). */
  async export(): Promise<Uint8Array> {
    const s = this.#session;
    s.generation++;
    return await encodeSession(s.toSnapshot(), this.#codec);
  }
}

/** Engine events as text chunks: the last one has the finish reason; an error is thrown. */
export async function* textChunks(events: AsyncIterable<GenerateEvent>): AsyncGenerator<TextChunk> {
  for await (const ev of events) {
    if (ev.type === "token") {
      if (ev.text || ev.tokens.length) yield { text: ev.text, tokens: ev.tokens };
    } else {
      if (ev.finishReason === "error") throw ev.error;
      yield { text: ev.text, tokens: [], finishReason: ev.finishReason };
    }
  }
}
