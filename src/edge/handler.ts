/**
 * The edge handler: a `fetch`-style function `(Request) => Promise<Response>` that keeps no
 * session in memory between requests. Every request brings its session:
 *
 * - inline: `state` in the body (the signed msgpack state a previous response returned); the new
 *   state comes back in the response;
 * - stored: `session` (an id) in a shared store (`kv` on Deno Deploy, `redis://…` elsewhere),
 *   loaded, continued and written back with compare-and-set under a lease;
 * - neither: a new session (kept in the store when one is configured, else returned inline).
 *
 * What an isolate keeps is immutable: the model (loaded once per isolate, on the first request),
 * its engine and the store connection. `POST /v1/generate` (see `./protocol.ts` for the fields),
 * `GET /health`; anything else is a 404.
 *
 * Per-request cap: `maxTokensPerRequest` bounds the tokens one request generates, so a long
 * generation fits platforms that limit CPU time per request. When the cap (not the request's own
 * `max_tokens`) ends a request, the response says `continue: true` and `remaining_tokens`; the
 * client sends the returned session again with an empty prompt (`continueSession` does that loop).
 * Held-back text (a partial UTF-8 character, a partial stop match) stays in the session across
 * the cut, so the concatenated text equals one uncapped request's.
 *
 * Replays of inline states: with a store configured, the handler records per session id the
 * generation and SHA-256 of the last state it issued (a separate key space of the store), and
 * refuses (409) any other state of that id: the same state sent twice, an older one, or a fork
 * with the same generation. The record is written with compare-and-set under the session's lease,
 * so two concurrent requests with one state cannot both succeed. Without a store, an inline state
 * is self-contained and a replay cannot be detected (it resumes the conversation as it was then:
 * never a mix of two states); sign states (`stateSecret`) so clients cannot forge them.
 * @module
 */

import { WEIGHT_QUANTIZATIONS, type WeightQuantization } from "../model/quantize.ts";
import type { Engine, GenerateEvent } from "../engine/engine.ts";
import { Session } from "../engine/session.ts";
import { modelIdOf } from "../http/context.ts";
import { badRequest, errorResponse, HttpError, notFound, toHttpError } from "../http/errors.ts";
import { newRequestId } from "../http/middleware.ts";
import {
  completionPrompt,
  DEFAULT_MAX_PROMPT_TOKENS,
  generateOnSession,
  PrefixCache,
  type SessionLease,
  SessionManager,
  sessionSampling,
  type StoredEncoding,
} from "../sessions/mod.ts";
import { type BackendChoice, DEFAULT_MODEL_DIR, loadModel, type TnlModel } from "../load.ts";
import {
  type DecodedSession,
  decodeSession,
  defaultMaxStateBytes,
  encodeSession,
  sessionDigest,
} from "../state/codec.ts";
import {
  DEFAULT_STATE_ENCODING,
  isStateEncoding,
  lossyOrigin,
  STATE_ENCODINGS,
  type StateEncoding,
} from "../state/encodings.ts";
import { StoreConflictError } from "../state/errors.ts";
import { openStore, type OpenStoreOptions } from "../state/mod.ts";
import type { SessionStore } from "../state/store.ts";
import {
  type EdgeGenerateRequest,
  type EdgeGenerateResponse,
  edgeResponse,
  parseGenerateRequest,
  readEdgeBody,
  responseFormat,
} from "./protocol.ts";

/** A fetch handler. */
export type EdgeHandler = (req: Request) => Promise<Response>;

/** Options of `createEdgeHandler`. */
export interface EdgeOptions {
  /** Model source: a directory, an https URL of one, or a Hugging Face repo id (default: embedded). */
  model?: string;
  /** Backend (default: "cpu" when `navigator.gpu` is missing, else "auto"). */
  backend?: BackendChoice;
  /** Matrix weights as stored ("none", default) or int8 with per-row scales. */
  quantize?: WeightQuantization;
  /** A loaded model to serve instead of loading `model` (tests, embedding). */
  loaded?: TnlModel | Promise<TnlModel>;
  /** A store spec (`kv`, `kv:PATH`, `redis://…`, `fs:DIR`, `memory`) or an open store. */
  store?: string | SessionStore;
  /** Options for `openStore` when `store` is a spec (key prefix, TTL, timeouts). */
  storeOptions?: OpenStoreOptions;
  /**
   * Where inline-state replay records go (default: the `store` spec opened again with the prefix
   * `<prefix>-inline`; none when `store` is an open store and this is absent).
   */
  replayStore?: SessionStore;
  /** HMAC-SHA256 secret: states are signed, and only signed states are accepted. */
  stateSecret?: string;
  /**
   * How new states are encoded unless a request asks (`state_encoding`): default `"f32"`
   * (exact); `"f32+deflate"` is exact too, `"bf16"`, `"q8"` and their `+deflate` forms lossy.
   */
  stateEncoding?: StateEncoding;
  /** Most tokens one request generates (default 64; 0 = no cap). */
  maxTokensPerRequest?: number;
  /** Largest `max_tokens` accepted (default 32 768). */
  maxTokensLimit?: number;
  /** Largest prompt in tokens (default 32 768; 0 = none); longer ones are a 400. */
  maxPromptTokens?: number;
  /** Request body limit in bytes (default: the largest state in base64, plus 64 KiB). */
  maxBodyBytes?: number;
  /** Requests waiting for the engine before 429 (default 32). */
  maxQueue?: number;
  /** Checkpoints of stored sessions every N tokens within a request (default 0: at the end only). */
  checkpointTokens?: number;
  /** Lease TTL of stored sessions in ms (default 10 000). */
  leaseMs?: number;
  /**
   * Bytes of prefix states kept by this isolate (default 64 MiB; 0: off): a new session's prompt
   * starts from the longest cached prefix (see `src/sessions/prefix_cache.ts`).
   */
  prefixCacheBytes?: number;
}

/** Default byte budget of an edge isolate's prefix cache: 64 MiB. */
export const EDGE_PREFIX_CACHE_BYTES = 64 * 1024 * 1024;

/** Whether this runtime exposes WebGPU (`navigator.gpu`); edge platforms do not. */
export function hasNavigatorGpu(): boolean {
  return typeof navigator !== "undefined" &&
    (navigator as unknown as { gpu?: unknown }).gpu !== undefined;
}

/**
 * The backend the handler picks: the option, else "cpu" without `navigator.gpu` (`gpu`: whether it
 * exists, default: this runtime's answer), else "auto" (WebGPU when an adapter exists, else CPU).
 */
export function edgeBackend(
  choice?: BackendChoice,
  gpu: boolean = hasNavigatorGpu(),
): BackendChoice {
  if (choice) return choice;
  return gpu ? "auto" : "cpu";
}

/** Models loaded by this isolate, by source and backend (immutable; shared by every handler). */
const models = new Map<string, Promise<TnlModel>>();

function sharedModel(
  source: string,
  backend: BackendChoice,
  quantize: WeightQuantization,
  maxQueue: number,
): Promise<TnlModel> {
  const key = JSON.stringify([source, backend, quantize, maxQueue]);
  let m = models.get(key);
  if (!m) {
    m = loadModel(source, { backend, quantize, engine: { maxQueue } });
    models.set(key, m);
    // A failed load is retried by the next request.
    m.catch(() => models.delete(key));
  }
  return m;
}

/** What a handler builds once its model is there. */
interface Ready {
  model: TnlModel;
  engine: Engine;
  modelId: string;
  maxBodyBytes: number;
  prefixCache: PrefixCache | null;
}

/** Env variables of `edgeOptionsFromEnv`. */
const ENV_KEYS = [
  "TNL_MODEL",
  "TNL_BACKEND",
  "TNL_QUANTIZE",
  "TNL_STORE",
  "TNL_STORE_PREFIX",
  "TNL_STORE_TTL_MS",
  "TNL_STATE_SECRET",
  "TNL_STATE_ENCODING",
  "TNL_MAX_TOKENS_PER_REQUEST",
  "TNL_MAX_TOKENS",
  "TNL_MAX_PROMPT_TOKENS",
  "TNL_MAX_BODY_BYTES",
  "TNL_MAX_QUEUE",
  "TNL_CHECKPOINT_TOKENS",
  "TNL_LEASE_MS",
  "TNL_PREFIX_CACHE_BYTES",
] as const;

/**
 * Options from environment variables: `TNL_MODEL`, `TNL_BACKEND` (auto | cpu | webgpu),
 * `TNL_QUANTIZE` (none | int8),
 * `TNL_STORE` (kv | kv:PATH | redis://… | fs:DIR | memory; unset: inline sessions only),
 * `TNL_STORE_PREFIX`, `TNL_STORE_TTL_MS`, `TNL_STATE_SECRET`, `TNL_STATE_ENCODING` (one of
 * `STATE_ENCODINGS`; default f32), `TNL_MAX_TOKENS_PER_REQUEST`,
 * `TNL_MAX_TOKENS`, `TNL_MAX_PROMPT_TOKENS`, `TNL_MAX_BODY_BYTES`, `TNL_MAX_QUEUE`,
 * `TNL_CHECKPOINT_TOKENS`, `TNL_LEASE_MS`, `TNL_PREFIX_CACHE_BYTES` (0: no prefix cache).
 * Variables the process may not read (no env permission) are left at their defaults, without a
 * permission prompt. A malformed value throws a `TypeError` naming the variable.
 */
export function edgeOptionsFromEnv(
  get: (k: string) => string | undefined = (k) => Deno.env.get(k),
): EdgeOptions {
  const env: Partial<Record<(typeof ENV_KEYS)[number], string>> = {};
  for (const k of ENV_KEYS) {
    try {
      // Never prompt (a library import in a terminal): read only what is already granted.
      const state = Deno.permissions?.querySync?.({ name: "env", variable: k }).state;
      if (state !== undefined && state !== "granted") continue;
      const v = get(k);
      if (v !== undefined && v !== "") env[k] = v;
    } catch {
      // no env permission: defaults
    }
  }
  const num = (k: (typeof ENV_KEYS)[number]): number | undefined => {
    const v = env[k];
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) throw new TypeError(`${k}: not a non-negative number: ${v}`);
    return n;
  };
  const backend = env.TNL_BACKEND as BackendChoice | undefined;
  if (backend !== undefined && !["auto", "cpu", "webgpu"].includes(backend)) {
    throw new TypeError(`TNL_BACKEND: expected auto, cpu or webgpu, got ${backend}`);
  }
  const quantize = env.TNL_QUANTIZE;
  if (quantize !== undefined && !(WEIGHT_QUANTIZATIONS as readonly string[]).includes(quantize)) {
    throw new TypeError(
      `TNL_QUANTIZE: expected ${WEIGHT_QUANTIZATIONS.join(" or ")}, got ${quantize}`,
    );
  }
  const stateEncoding = env.TNL_STATE_ENCODING;
  if (stateEncoding !== undefined && !isStateEncoding(stateEncoding)) {
    throw new TypeError(
      `TNL_STATE_ENCODING: expected one of ${STATE_ENCODINGS.join(", ")}, got ${stateEncoding}`,
    );
  }
  return {
    model: env.TNL_MODEL,
    backend,
    quantize: quantize as WeightQuantization | undefined,
    store: env.TNL_STORE,
    storeOptions: { prefix: env.TNL_STORE_PREFIX, ttlMs: num("TNL_STORE_TTL_MS") },
    stateSecret: env.TNL_STATE_SECRET,
    stateEncoding,
    maxTokensPerRequest: num("TNL_MAX_TOKENS_PER_REQUEST"),
    maxTokensLimit: num("TNL_MAX_TOKENS"),
    maxPromptTokens: num("TNL_MAX_PROMPT_TOKENS"),
    maxBodyBytes: num("TNL_MAX_BODY_BYTES"),
    maxQueue: num("TNL_MAX_QUEUE"),
    checkpointTokens: num("TNL_CHECKPOINT_TOKENS"),
    leaseMs: num("TNL_LEASE_MS"),
    prefixCacheBytes: num("TNL_PREFIX_CACHE_BYTES"),
  };
}

/** Retry a lazily opened resource after a failure (the next request tries again). */
function lazy<T>(open: () => Promise<T>): () => Promise<T> {
  let p: Promise<T> | null = null;
  return () => {
    if (!p) {
      p = open();
      p.catch(() => (p = null));
    }
    return p;
  };
}

const LEASE_OWNER = "edge_" + crypto.randomUUID();
let leaseCount = 0;

/**
 * Build the handler; nothing is loaded or opened until the first request needs it.
 *
 * @example A stateless edge function (`deno serve`, Deno Deploy) with sessions in Deno KV
 * ```ts
 * import { createEdgeHandler } from "./handler.ts";
 *
 * Deno.serve(createEdgeHandler({ store: "kv", maxTokensPerRequest: 64 }));
 * ```
 */
export function createEdgeHandler(opts: EdgeOptions = {}): EdgeHandler {
  const cap = opts.maxTokensPerRequest ?? 64;
  const maxTokensLimit = opts.maxTokensLimit ?? 32_768;
  const maxPromptTokens = opts.maxPromptTokens ?? DEFAULT_MAX_PROMPT_TOKENS;
  if (!Number.isSafeInteger(maxPromptTokens) || maxPromptTokens < 0) {
    throw new TypeError(`maxPromptTokens: expected an integer ≥ 0, got ${maxPromptTokens}`);
  }
  const prefixBytes = opts.prefixCacheBytes ?? EDGE_PREFIX_CACHE_BYTES;
  if (!Number.isSafeInteger(prefixBytes) || prefixBytes < 0) {
    throw new TypeError(`prefixCacheBytes: expected an integer ≥ 0, got ${prefixBytes}`);
  }
  const backend = edgeBackend(opts.backend);
  const secret = opts.stateSecret || undefined;
  const defaultEncoding = opts.stateEncoding ?? DEFAULT_STATE_ENCODING;
  if (!isStateEncoding(defaultEncoding)) {
    throw new TypeError(
      `stateEncoding: expected one of ${STATE_ENCODINGS.join(", ")}, got ${defaultEncoding}`,
    );
  }

  const ready = lazy<Ready>(async () => {
    let model: TnlModel;
    try {
      model = await (opts.loaded ??
        sharedModel(
          opts.model ?? DEFAULT_MODEL_DIR,
          backend,
          opts.quantize ?? "none",
          opts.maxQueue ?? 32,
        ));
    } catch (e) {
      throw new HttpError(503, `the model failed to load: ${(e as Error)?.message ?? e}`, {
        code: "model_unavailable",
        headers: { "retry-after": "1" },
        cause: e,
      });
    }
    const maxBodyBytes = opts.maxBodyBytes ??
      Math.ceil(defaultMaxStateBytes(model.config) * 4 / 3) + 65536;
    const engine = model.engine();
    const prefixCache = prefixBytes > 0
      ? new PrefixCache({
        modelFingerprint: model.fingerprint,
        backend: model.backend.kind,
        chunk: engine.prefillChunk,
        maxBytes: prefixBytes,
      })
      : null;
    return { model, engine, modelId: modelIdOf(model), maxBodyBytes, prefixCache };
  });

  const spec = opts.store;
  // Stores opened here: unref'd, so a `deno serve` that stops serving exits without closing them.
  const opened: Promise<SessionStore>[] = [];
  const open = (prefix?: string) => {
    const p = openStore(spec as string, {
      ...opts.storeOptions,
      unref: true,
      ...(prefix ? { prefix } : {}),
    });
    opened.push(p);
    p.catch(() => opened.splice(opened.indexOf(p), 1));
    return p;
  };
  const store = spec === undefined
    ? null
    : lazy<SessionStore>(() => typeof spec === "string" ? open() : Promise.resolve(spec));
  const replayStore = opts.replayStore
    ? () => Promise.resolve(opts.replayStore!)
    : typeof spec === "string"
    ? lazy<SessionStore>(() => open(`${opts.storeOptions?.prefix ?? "tnl"}-inline`))
    : null;
  const managers = new WeakMap<Engine, SessionManager>();
  const manager = async (r: Ready): Promise<SessionManager> => {
    let m = managers.get(r.engine);
    if (!m) {
      m = new SessionManager({
        model: r.model,
        engine: r.engine,
        store: await store!(),
        modelId: r.modelId,
        secret,
        cacheSize: 0,
        leaseMs: opts.leaseMs,
        encoding: defaultEncoding,
      });
      managers.set(r.engine, m);
    }
    return m;
  };
  const codec = (m: TnlModel) => ({
    config: m.config,
    modelFingerprint: m.fingerprint,
    tokenizerFingerprint: m.tokenizer.fingerprint,
    secret,
  });

  const health = async (): Promise<Response> => {
    const r = await ready();
    return Response.json({
      status: "ok",
      model: r.modelId,
      backend: r.model.backend.kind,
      device: r.model.backend.device,
      max_tokens_per_request: cap,
      store: spec === undefined ? null : typeof spec === "string" ? spec.split(":")[0] : spec.kind,
      signed_states: secret !== undefined,
    });
  };

  /** Run one capped generation on a held session. */
  const run = async (
    r: Ready,
    session: Session,
    p: EdgeGenerateRequest,
    isNew: boolean,
    signal: AbortSignal,
    lease: SessionLease | null,
  ) => {
    const prompt = completionPrompt({ model: r.model, maxPromptTokens }, session, p.prompt);
    const capped = cap > 0 && p.maxTokens > cap;
    const maxTokens = capped ? cap : p.maxTokens;
    const checkpointEvery = lease ? opts.checkpointTokens ?? 0 : 0;
    const { events, cachedTokens } = await generateOnSession(r.engine, {
      session,
      prompt,
      sampling: sessionSampling(session, isNew, p.sampling),
      maxTokens,
      stop: p.stop,
      signal,
      holdPartial: capped,
      checkpointEvery,
      onCheckpoint: lease ? (s) => lease.checkpoint(s) : undefined,
    }, { prefixCache: r.prefixCache });
    let text = "";
    const tokens: number[] = [];
    let done: Extract<GenerateEvent, { type: "done" }> | null = null;
    for await (const ev of events) {
      if (ev.type === "token") {
        text += ev.text;
        tokens.push(...ev.tokens);
      } else done = ev;
    }
    if (!done) throw new HttpError(500, "the generation ended without a result");
    if (done.finishReason === "error") throw toHttpError(done.error);
    if (done.finishReason === "cancelled") {
      throw new HttpError(499, "the client closed the request", { code: "client_closed" });
    }
    text += done.text;
    const finish: "stop" | "length" = done.finishReason === "stop" ? "stop" : "length";
    const generated = done.usage.completionTokens;
    return {
      text,
      tokens,
      finish,
      promptTokens: done.usage.promptTokens,
      cachedTokens,
      generated,
      cont: capped && finish === "length" && generated < p.maxTokens,
    };
  };

  const reply = (
    r: Ready,
    p: EdgeGenerateRequest,
    session: Session,
    out: Awaited<ReturnType<typeof run>>,
    state: Uint8Array | undefined,
    stored: StoredEncoding,
  ): Record<string, unknown> => {
    const body: EdgeGenerateResponse = {
      object: "tnl.generation",
      model: r.modelId,
      text: out.text,
      tokens: out.tokens,
      finish_reason: out.finish,
      continue: out.cont,
      remaining_tokens: p.maxTokens - out.generated,
      session: session.id,
      generation: session.generation,
      position: session.state.position,
      state_encoding: stored.encoding,
      state_lossy: stored.lossy,
      usage: {
        prompt_tokens: out.promptTokens,
        completion_tokens: out.generated,
        total_tokens: out.promptTokens + out.generated,
        prompt_tokens_details: { cached_tokens: out.cachedTokens },
      },
    };
    if (state) body.state = state;
    return body as unknown as Record<string, unknown>;
  };

  /** A stored session (by id, or a new one kept in the store). */
  const stored = async (r: Ready, p: EdgeGenerateRequest, signal: AbortSignal) => {
    const sessions = await manager(r);
    const lopts = { encoding: p.stateEncoding };
    const lease = p.session !== undefined
      ? await sessions.open(p.session, lopts)
      : await sessions.create(undefined, lopts);
    try {
      const out = await run(r, lease.session, p, lease.isNew, signal, lease);
      const saved = await lease.save();
      return reply(r, p, lease.session, out, undefined, saved);
    } finally {
      await lease.release();
    }
  };

  /** An inline session (from `state`, or a new one returned inline). */
  const inline = async (r: Ready, p: EdgeGenerateRequest, signal: AbortSignal) => {
    const c = codec(r.model);
    let snap: DecodedSession | null = null;
    let digest: string | null = null;
    if (p.state) {
      snap = await decodeSession(p.state, c);
      digest = await sessionDigest(p.state);
    }
    const session = snap ? Session.fromSnapshot(r.model.config, snap) : r.engine.newSession();
    const replay = replayStore ? await replayStore() : null;
    const owner = `${LEASE_OWNER}.${++leaseCount}`;
    let leased = false;
    try {
      let expect: number | null = null;
      if (replay) {
        if (replay.leases) {
          leased = await replay.leases.acquire(session.id, owner, opts.leaseMs ?? 10_000);
          if (!leased) {
            throw new HttpError(409, `session ${session.id} is busy (another request holds it)`, {
              param: "state",
              code: "conflict",
              headers: { "retry-after": "1" },
            });
          }
        }
        const seen = await replay.getEntry(session.id);
        if (seen) {
          const latest = new TextDecoder().decode(seen.bytes);
          if (!snap || seen.generation !== snap.generation || latest !== digest) {
            throw new HttpError(
              409,
              snap && snap.generation < seen.generation
                ? `state: generation ${snap.generation} of session ${session.id} is stale; the latest is generation ${seen.generation}`
                : `state: this state of session ${session.id} was already continued (replayed or forked state); send the latest state`,
              { param: "state", code: "state_replayed" },
            );
          }
          expect = seen.generation;
        } else if (snap) {
          // First time this handler sees the id: accept, and record from now on.
          expect = null;
        }
      }
      const out = await run(r, session, p, snap === null, signal, null);
      session.generation = (snap?.generation ?? 0) + 1;
      const encoding = p.stateEncoding ?? defaultEncoding;
      const lossy = snap?.lossy ?? null;
      const bytes = await encodeSession({ ...session.toSnapshot(), lossy }, { ...c, encoding });
      if (replay) {
        try {
          await replay.put(session.id, new TextEncoder().encode(await sessionDigest(bytes)), {
            generation: session.generation,
            expectGeneration: expect,
          });
        } catch (e) {
          if (e instanceof StoreConflictError) {
            throw new HttpError(409, `state: session ${session.id} was continued meanwhile`, {
              param: "state",
              code: "state_replayed",
            });
          }
          throw e;
        }
      }
      return reply(r, p, session, out, bytes, {
        encoding,
        lossy: lossyOrigin(encoding, lossy),
      });
    } finally {
      if (leased) await replay!.leases!.release(session.id, owner).catch(() => {});
    }
  };

  const generate = async (req: Request): Promise<Response> => {
    const r = await ready();
    const { format, body } = await readEdgeBody(req, r.maxBodyBytes);
    const p = parseGenerateRequest(body, { vocabSize: r.model.config.vocabSize, maxTokensLimit });
    const useStore = p.state === undefined &&
      (p.session !== undefined || (p.store ?? store !== null));
    if (useStore && store === null) {
      throw badRequest(
        p.session !== undefined ? "session" : "store",
        "this handler has no session store (set TNL_STORE); send the state inline",
      );
    }
    const out = useStore ? await stored(r, p, req.signal) : await inline(r, p, req.signal);
    return edgeResponse(out, responseFormat(req, format));
  };

  const handler = async (req: Request): Promise<Response> => {
    const requestId = req.headers.get("x-request-id")?.slice(0, 128) || newRequestId();
    let res: Response;
    try {
      const path = new URL(req.url).pathname;
      if (path === "/v1/generate") {
        if (req.method !== "POST") throw methodNotAllowed("POST");
        res = await generate(req);
      } else if (path === "/health") {
        if (req.method !== "GET" && req.method !== "HEAD") throw methodNotAllowed("GET");
        res = await health();
      } else {
        throw notFound(`no route ${req.method} ${path}`, null, "route_not_found");
      }
    } catch (e) {
      res = errorResponse(e, requestId);
    }
    res.headers.set("x-request-id", requestId);
    return res;
  };
  const close = async (): Promise<void> => {
    const stores = await Promise.allSettled(opened.splice(0));
    for (const r of stores) if (r.status === "fulfilled") await r.value.close().catch(() => {});
  };
  return Object.assign(handler, { close });
}

function methodNotAllowed(allow: string): HttpError {
  return new HttpError(405, `method not allowed (use ${allow})`, {
    code: "method_not_allowed",
    headers: { allow },
  });
}
