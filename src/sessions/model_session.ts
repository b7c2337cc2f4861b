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
 * const small = await s.export({ encoding: "q8+deflate" }); // lossy and a fraction of that
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
  DEFAULT_STATE_ENCODING,
  type EncodeOptions,
  encodeSession,
  type StateEncoding,
  type StateSecret,
} from "../state/mod.ts";
import { encodingParts } from "../state/encodings.ts";
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

/** Options of `ModelSession.export`. */
export interface ExportOptions {
  /**
   * How the layers are stored: `"f32"` (default) or `"f32+deflate"` resume bit-exactly; `"bf16"`,
   * `"q8"` and their `+deflate` forms are smaller and lossy (the state then says so in `lossy`).
   */
  encoding?: StateEncoding;
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
  readonly #lossy: StateEncoding | null;

  private constructor(
    host: ModelSessionHost,
    session: Session,
    codec: EncodeOptions & DecodeOptions,
    lossy: StateEncoding | null,
  ) {
    this.#host = host;
    this.#session = session;
    this.#codec = codec;
    this.#lossy = lossy;
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
    if (from === undefined) return new ModelSession(host, host.engine.newSession(), codec, null);
    const snap = await decodeSession(from, codec);
    return new ModelSession(host, Session.fromSnapshot(host.model.config, snap), codec, snap.lossy);
  }

  /**
   * Null when the session resumes bit-exactly what an uninterrupted run would do; else the lossy
   * encoding (`"q8+deflate"`, ...) of a state it was resumed from, which its exports keep saying.
   */
  get lossy(): StateEncoding | null {
    return this.#lossy;
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

  /**
   * The session's state as portable msgpack bytes (signed when a secret was given), in
   * `opts.encoding` (default exact `"f32"`; an unknown name is a `TnlError` "invalid_input").
   */
  async export(opts: ExportOptions = {}): Promise<Uint8Array> {
    const s = this.#session;
    const encoding = opts.encoding ?? DEFAULT_STATE_ENCODING;
    encodingParts(encoding);
    s.generation++;
    return await encodeSession({ ...s.toSnapshot(), lossy: this.#lossy }, {
      ...this.#codec,
      encoding,
    });
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
