/**
 * Middleware: request ids (`x-request-id` echoed or generated), one structured log line and one
 * metrics observation per request (streams are counted when they end), optional CORS (Hono's
 * `cors`), the JSON content-type guard of the POST routes, the admin token guard, and the error
 * handler that answers in the OpenAI shape.
 *
 * Hono ships middleware for some of this; where ours stays, the reason:
 * - `hono/request-id`: it keeps only ids of `[A-Za-z0-9_=-]` and replaces any other, so trace ids
 *   with `.`, `:` or `/` (`svc:req/1`, W3C-style ids) would not come back to the client; ours
 *   accepts those (`REQUEST_ID`) and is the same middleware that logs the request with its id.
 * - `hono/logger`: two plain-text lines through `console.log` when the handler returns; ours writes
 *   one JSON line with the request id, tokens, session and finish reason, for a stream when the
 *   stream ends (its real duration), and observes the metrics at the same moment.
 * - `hono/body-limit`: bodies are read by `readBody` (`body.ts`), which the edge handler (a plain
 *   `fetch` handler, no Hono) uses too; `bodyLimit` trusts a declared `Content-Length` without
 *   counting what arrives, and would buffer the body once more before our parser reads it.
 * - `hono/streaming` (`streamSSE`): see `sse.ts`.
 * @module
 */

import { type Context, cors, type MiddlewareHandler, routePath } from "../deps.ts";
import type { AppContext } from "./context.ts";
import { errorResponse, HttpError, toHttpError } from "./errors.ts";

/** What a handler reports about its request for the log line. */
export interface RequestRecord {
  /** When the request arrived (`performance.now()`). */
  arrivedAt?: number;
  /** Prompt tokens consumed. */
  promptTokens?: number;
  /** Tokens generated. */
  completionTokens?: number;
  /** Session used or created. */
  session?: string;
  /** Why the generation ended (engine reason). */
  finish?: string;
  /** A failure after the response started (a stream's error event): logged with the request. */
  error?: { status: number; message: string };
  /** For streams: resolves when the stream has ended (the log line waits for it). */
  done?: Promise<void>;
}

/** Hono environment of the app. */
export type AppEnv = {
  Variables: {
    /** The request id. */
    requestId: string;
    /** Facts for the log line. */
    record: RequestRecord;
  };
};

const REQUEST_ID = /^[A-Za-z0-9._:@\/+=-]{1,128}$/;

/** A new request id. */
export function newRequestId(): string {
  const b = new Uint8Array(12);
  crypto.getRandomValues(b);
  return "req_" + b.toBase64({ alphabet: "base64url", omitPadding: true });
}

/** The route label of a request (its registered pattern, or "unmatched"). */
function routeLabel(c: Context): string {
  try {
    const p = routePath(c, -1);
    return p && p !== "*" && p !== "/*" ? p : "unmatched";
  } catch {
    return "unmatched";
  }
}

/**
 * Request id, access log and metrics. The id comes from a well-formed `x-request-id` header or is
 * generated, and is echoed in the response.
 */
export function requestMiddleware(ctx: AppContext): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const t0 = performance.now();
    const given = c.req.header("x-request-id");
    const id = given && REQUEST_ID.test(given) ? given : newRequestId();
    c.set("requestId", id);
    const record: RequestRecord = { arrivedAt: t0 };
    c.set("record", record);
    ctx.metrics.inFlight++;
    let status = 500;
    try {
      await next();
      status = c.res.status;
      c.res.headers.set("x-request-id", id);
    } finally {
      const route = routeLabel(c);
      const finish = () => {
        ctx.metrics.inFlight--;
        const ms = performance.now() - t0;
        ctx.metrics.observe(route, c.req.method, status, ms / 1000);
        const fields: Record<string, unknown> = {
          id,
          method: c.req.method,
          path: c.req.path,
          route,
          status,
          ms: Math.round(ms * 10) / 10,
        };
        if (record.promptTokens !== undefined || record.completionTokens !== undefined) {
          fields.tokens = {
            prompt: record.promptTokens ?? 0,
            completion: record.completionTokens ?? 0,
          };
        }
        if (record.session) fields.session = record.session;
        if (record.finish) fields.finish = record.finish;
        let level: "error" | "warn" | "info" = status >= 500 ? "error" : "info";
        if (record.error) {
          fields.error = record.error.message;
          fields.error_status = record.error.status;
          level = record.error.status >= 500 ? "error" : "warn";
        }
        ctx.logger.log(level, "request", fields);
      };
      if (record.done) record.done.then(finish, finish);
      else finish();
    }
  };
}

/**
 * CORS for `origin` (`*` when true), with Hono's `cors`: preflights answered (204), and every
 * response carries the allowed origin, also to requests without an `Origin` header (the configured
 * origin is the only one allowed), and exposes `x-request-id`, `etag` and `retry-after`.
 */
export function corsMiddleware(origin: string | true): MiddlewareHandler<AppEnv> {
  const allow = origin === true ? "*" : origin;
  return cors({
    origin: allow === "*" ? "*" : () => allow,
    allowMethods: ["GET", "POST", "PUT", "DELETE", "OPTIONS"],
    exposeHeaders: ["x-request-id", "etag", "retry-after"],
    maxAge: 600,
  });
}

/** Routes whose body is JSON (POST): `jsonBodies` guards them. */
export const JSON_ROUTES: readonly string[] = [
  "/v1/completions",
  "/v1/chat/completions",
  "/v1/sessions",
  "/v1/sessions/:id/completions",
];

/**
 * 415 (OpenAI error shape, `unsupported_media_type`) unless the request says
 * `content-type: application/json` (parameters such as `charset` allowed). Without this a JSON body
 * sent as `text/plain` is a CORS "simple request": any web page could start generations on a local
 * server without a preflight.
 */
export function jsonBodies(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const ct = c.req.header("content-type") ?? "";
    const base = ct.split(";")[0].trim().toLowerCase();
    if (base !== "application/json") {
      await c.req.raw.body?.cancel().catch(() => {});
      throw new HttpError(
        415,
        ct === ""
          ? "content-type: missing; send the JSON body with content-type: application/json"
          : `content-type: expected application/json, got ${JSON.stringify(ct.slice(0, 100))}`,
        { param: "content-type", code: "unsupported_media_type" },
      );
    }
    await next();
  };
}

/** Constant-time equality of two strings (as UTF-8). */
function sameSecret(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a), y = new TextEncoder().encode(b);
  let diff = x.length ^ y.length;
  for (let i = 0; i < Math.max(x.length, y.length); i++) diff |= (x[i] ?? 0) ^ (y[i] ?? 0);
  return diff === 0;
}

/**
 * Operator routes: off (404, as if absent) unless an admin token is configured; then only for
 * `Authorization: Bearer <token>` (401 otherwise, with `WWW-Authenticate`).
 */
export function adminOnly(ctx: AppContext): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const token = ctx.options.adminToken;
    if (!token) {
      throw new HttpError(404, `no route ${c.req.method} ${c.req.path}`, {
        code: "route_not_found",
      });
    }
    const auth = c.req.header("authorization") ?? "";
    const m = /^Bearer\s+(\S+)\s*$/i.exec(auth);
    if (!m || !sameSecret(m[1], token)) {
      throw new HttpError(
        401,
        auth === ""
          ? "authorization: this route needs the admin token (Authorization: Bearer ...)"
          : "authorization: not the admin token",
        {
          param: "authorization",
          code: "invalid_admin_token",
          headers: { "www-authenticate": 'Bearer realm="tnl-edge admin"' },
        },
      );
    }
    await next();
  };
}

/** The app's error handler: OpenAI-shaped errors; 5xx logged with their cause. */
export function onError(ctx: AppContext): (e: Error, c: Context<AppEnv>) => Response {
  return (e, c) => {
    const id = c.get("requestId");
    const h = toHttpError(e);
    if (h.status >= 500) {
      const cause = h.cause ?? e;
      ctx.logger.log("error", "request failed", {
        id,
        path: c.req.path,
        status: h.status,
        error: cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause),
        stack: cause instanceof Error ? cause.stack : undefined,
      });
    }
    return errorResponse(h, id);
  };
}
