/**
 * The application context shared by every route: the model (or the promise of it while it loads),
 * the engine, the session store and manager, the options, the logger, the metrics and the
 * per-process set of busy session ids.
 * @module
 */

import type { Engine } from "../engine/engine.ts";
import type { TnlModel } from "../load.ts";
import type { SessionStore } from "../state/store.ts";
import {
  type ChatTemplate,
  DEFAULT_LEASE_MS,
  DEFAULT_MAX_PROMPT_TOKENS,
  DEFAULT_PREFIX_CACHE_BYTES,
  loadChatTemplate,
  PrefixCache,
  SessionManager,
} from "../sessions/mod.ts";
import { CodecPool } from "../state/codec_pool.ts";
import {
  DEFAULT_STATE_ENCODING,
  isStateEncoding,
  STATE_ENCODINGS,
  type StateEncoding,
} from "../state/encodings.ts";
import { DEFAULT_MAX_BODY_BYTES } from "./body.ts";
import { notFound, unavailable } from "./errors.ts";
import { jsonLogger, type Logger } from "./logger.ts";
import { HttpMetrics } from "./metrics.ts";
import type { SchemaLimits } from "./schemas.ts";

/** Server options the routes use. */
export interface AppOptions {
  /** HMAC-SHA256 secret for exported and stored states (unsigned when absent). */
  stateSecret?: string;
  /** Request body limit in bytes (default 64 MiB). */
  maxBodyBytes?: number;
  /**
   * Give up on a generation after this many ms (0 = never; default 600 000). What was generated
   * is returned with finish_reason "length"; nothing generated yet is a 503.
   */
  requestTimeoutMs?: number;
  /** Largest `max_tokens` accepted (default 32 768). */
  maxTokensLimit?: number;
  /** Largest prompt in tokens (default 32 768; 0 = none); longer ones are a 400. */
  maxPromptTokens?: number;
  /**
   * Bearer token of the operator routes (`GET /v1/sessions`); absent or empty: those routes are
   * off (404), since a session id is the capability to continue its conversation.
   */
  adminToken?: string;
  /** `max_tokens` of a chat request that gives none (default 512). */
  defaultChatMaxTokens?: number;
  /** CORS: true (any origin), an origin, or false (default: off). */
  cors?: boolean | string;
  /** Live sessions kept in the in-process cache (default: 16 on the CPU, else 1 GiB of states). */
  sessionCacheSize?: number;
  /** How often a non-streaming request checks whether its client went away, in ms (default 100). */
  disconnectPollMs?: number;
  /**
   * Store a kept session during a generation each time at least this many tokens were generated
   * since the last store (at the end of that decode round), and at its end as always, so another
   * instance can resume from there if this one dies. 0 = only at the end.
   * Default: 64 on stores shared between processes (with leases: Redis, Deno KV), else 0.
   */
  checkpointTokens?: number;
  /** Session lease time to live in ms on shared stores (default 10 000; renewed while in use). */
  leaseMs?: number;
  /**
   * Workers that encode and hash session states off the serving thread (default 0: in the serving
   * thread; `startServer` starts some).
   */
  codecWorkers?: number;
  /**
   * Bytes of prefix states kept in memory (default 256 MiB; 0 turns the prefix cache off): a new
   * session's prompt starts from the longest cached prefix (see `src/sessions/prefix_cache.ts`).
   */
  prefixCacheBytes?: number;
  /**
   * How saved session states are encoded unless a request asks otherwise (`state_encoding`):
   * default `"f32"` (exact); `"f32+deflate"` is exact too, the others lossy (see
   * `docs/state_format.md`). An unknown name throws a `TypeError` listing the valid ones.
   */
  stateEncoding?: StateEncoding;
}

/** Everything that exists once the model has loaded. */
export interface Serving {
  /** The model. */
  model: TnlModel;
  /** Its engine. */
  engine: Engine;
  /** The served model id (the model directory's basename). */
  modelId: string;
  /** The chat template. */
  chatTemplate: ChatTemplate;
  /** Sessions. */
  sessions: SessionManager;
  /** Largest prompt in tokens (0 = none). */
  maxPromptTokens: number;
  /** The prefix-state cache, or null when off. */
  prefixCache: PrefixCache | null;
}

/** What `createAppContext` takes. */
export interface AppContextInit {
  /** The model, or a promise of it (the server answers 503 until it resolves). */
  model: TnlModel | Promise<TnlModel>;
  /** The session store. */
  store: SessionStore;
  /** Options. */
  options?: AppOptions;
  /** Logger (default JSON lines on stderr). */
  logger?: Logger;
  /**
   * Share prefix states between instances through this store (its own key space: not the session
   * store itself); absent: per-process memory only.
   */
  prefixStore?: SessionStore;
}

/** The served model id: the basename of the model directory (`tnl-shakespeare-6m`). */
export function modelIdOf(model: TnlModel): string {
  const parts = model.dir.replace(/[\\/]+$/, "").split(/[\\/]/);
  return parts[parts.length - 1] || "model";
}

/** The shared state of the app; see the module doc. */
export class AppContext {
  /** Options with defaults filled in. */
  readonly options:
    & Required<Omit<AppOptions, "stateSecret" | "adminToken" | "sessionCacheSize">>
    & {
      stateSecret?: string;
      adminToken?: string;
      /** Absent: the session manager's default for the model. */
      sessionCacheSize?: number;
    };
  /** The logger. */
  readonly logger: Logger;
  /** HTTP metrics. */
  readonly metrics: HttpMetrics = new HttpMetrics();
  /** Where session states are encoded and hashed. */
  readonly codec: CodecPool;
  /** Ids of the sessions a request of this process holds. */
  readonly busy: Set<string> = new Set();
  /** The session store. */
  readonly store: SessionStore;
  /** The model as given (maybe a promise). */
  readonly model: TnlModel | Promise<TnlModel>;
  /** Resolves when the model has loaded and everything around it is ready. */
  readonly ready: Promise<Serving>;
  #serving: Serving | null = null;
  #error: unknown = null;
  readonly #shutdown = new AbortController();
  readonly #prefixStore: SessionStore | null;

  /** A context; starts building the serving state as soon as the model is there. */
  constructor(init: AppContextInit) {
    const o = init.options ?? {};
    this.options = {
      stateSecret: o.stateSecret || undefined,
      adminToken: o.adminToken || undefined,
      maxBodyBytes: o.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES,
      requestTimeoutMs: o.requestTimeoutMs ?? 600_000,
      maxTokensLimit: o.maxTokensLimit ?? 32_768,
      maxPromptTokens: o.maxPromptTokens ?? DEFAULT_MAX_PROMPT_TOKENS,
      defaultChatMaxTokens: o.defaultChatMaxTokens ?? 512,
      cors: o.cors ?? false,
      sessionCacheSize: o.sessionCacheSize,
      disconnectPollMs: o.disconnectPollMs ?? 100,
      checkpointTokens: o.checkpointTokens ?? (init.store.leases ? 64 : 0),
      leaseMs: o.leaseMs ?? DEFAULT_LEASE_MS,
      codecWorkers: o.codecWorkers ?? 0,
      prefixCacheBytes: o.prefixCacheBytes ?? DEFAULT_PREFIX_CACHE_BYTES,
      stateEncoding: o.stateEncoding ?? DEFAULT_STATE_ENCODING,
    };
    if (!isStateEncoding(this.options.stateEncoding)) {
      throw new TypeError(
        `stateEncoding: ${JSON.stringify(this.options.stateEncoding)} is not one of ${
          STATE_ENCODINGS.join(", ")
        }`,
      );
    }
    this.codec = new CodecPool(this.options.codecWorkers);
    const mp = this.options.maxPromptTokens;
    if (!Number.isSafeInteger(mp) || mp < 0) {
      throw new TypeError(`maxPromptTokens: expected an integer ≥ 0, got ${mp}`);
    }
    this.logger = init.logger ?? jsonLogger();
    this.store = init.store;
    this.model = init.model;
    const pb = this.options.prefixCacheBytes;
    if (!Number.isSafeInteger(pb) || pb < 0) {
      throw new TypeError(`prefixCacheBytes: expected an integer ≥ 0, got ${pb}`);
    }
    this.#prefixStore = init.prefixStore ?? null;
    this.ready = this.#build(init.model);
    this.ready.catch((e) => {
      this.#error = e;
      this.logger.log("error", "model failed to load", { error: String(e) });
    });
  }

  async #build(m: TnlModel | Promise<TnlModel>): Promise<Serving> {
    const model = await m;
    const engine = model.engine();
    const chatTemplate = await loadChatTemplate(model.dir);
    const modelId = modelIdOf(model);
    const sessions = new SessionManager({
      model,
      engine,
      store: this.store,
      modelId,
      secret: this.options.stateSecret,
      cacheSize: this.options.sessionCacheSize,
      busy: this.busy,
      leaseMs: this.options.leaseMs,
      codec: this.codec,
      encoding: this.options.stateEncoding,
    });
    const codec = {
      config: model.config,
      modelFingerprint: model.fingerprint,
      tokenizerFingerprint: model.tokenizer.fingerprint,
      secret: this.options.stateSecret,
    };
    const prefixCache = this.options.prefixCacheBytes > 0
      ? new PrefixCache({
        modelFingerprint: model.fingerprint,
        backend: model.backend.kind,
        chunk: engine.prefillChunk,
        maxBytes: this.options.prefixCacheBytes,
        shared: this.#prefixStore ? { store: this.#prefixStore, codec } : undefined,
      })
      : null;
    this.#serving = {
      model,
      engine,
      modelId,
      chatTemplate,
      sessions,
      maxPromptTokens: this.options.maxPromptTokens,
      prefixCache,
    };
    return this.#serving;
  }

  /** The serving state, or null while loading (or after a failed load). */
  get serving(): Serving | null {
    return this.#serving;
  }

  /** The load failure, if the model could not be loaded. */
  get loadError(): unknown {
    return this.#error;
  }

  /** The serving state, or a 503 (with Retry-After) while loading or after a failed load. */
  require(): Serving {
    if (this.#serving) return this.#serving;
    if (this.#error) throw unavailable("the model failed to load", "model_unavailable");
    throw unavailable("the model is loading", "model_loading");
  }

  /** Aborted when the server gives up waiting for running requests at shutdown. */
  get shutdownSignal(): AbortSignal {
    return this.#shutdown.signal;
  }

  /** Cancel every running generation (the end of the shutdown grace period). */
  cancelAll(): void {
    this.#shutdown.abort(new DOMException("server shutting down", "AbortError"));
  }
}

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
