/**
 * Middleware: request ids (`x-request-id` echoed or generated), one structured log line and one
 * metrics observation per request (streams are counted when they end), optional CORS, and the
 * error handler that answers in the OpenAI shape.
 * @module
 */

import { type Context, type MiddlewareHandler, routePath } from "../deps.ts";
import type { AppContext } from "./context.ts";
import { errorResponse, toHttpError } from "./errors.ts";

/** What a handler reports about its request for the log line. */
export interface RequestRecord {
  /** Prompt tokens consumed. */
  promptTokens?: number;
  /** Tokens generated. */
  completionTokens?: number;
  /** Session used or created. */
  session?: string;
  /** Why the generation ended (engine reason). */
  finish?: string;
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
    const record: RequestRecord = {};
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
        ctx.logger.log(status >= 500 ? "error" : "info", "request", fields);
      };
      if (record.done) record.done.then(finish, finish);
      else finish();
    }
  };
}

/** CORS for `origin` (`*` when true): preflights answered, headers on every response. */
export function corsMiddleware(origin: string | true): MiddlewareHandler<AppEnv> {
  const allow = origin === true ? "*" : origin;
  return async (c, next) => {
    if (c.req.method === "OPTIONS" && c.req.header("access-control-request-method")) {
      return new Response(null, {
        status: 204,
        headers: {
          "access-control-allow-origin": allow,
          "access-control-allow-methods": "GET, POST, PUT, DELETE, OPTIONS",
          "access-control-allow-headers": c.req.header("access-control-request-headers") ??
            "authorization, content-type, x-request-id",
          "access-control-max-age": "600",
          vary: "origin",
        },
      });
    }
    await next();
    c.res.headers.set("access-control-allow-origin", allow);
    c.res.headers.set("access-control-expose-headers", "x-request-id, etag, retry-after");
    if (allow !== "*") c.res.headers.append("vary", "origin");
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
