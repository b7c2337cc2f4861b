/**
 * `GET /metrics`: Prometheus text — requests by route and status, request duration histogram,
 * prompt and completion tokens, queue depth, running batch, tokens/s, sessions and state bytes.
 * @module
 */

import { Hono } from "../src/deps.ts";
import type { AppContext } from "../src/http/context.ts";
import { renderMetrics } from "../src/http/metrics.ts";
import type { AppEnv } from "../src/http/middleware.ts";

/** The metrics sub-app (mounted at `/metrics`). */
export function metricsRoutes(ctx: AppContext): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.get("/", async (c) => {
    const s = ctx.serving;
    let sessions: number | undefined;
    try {
      sessions = await ctx.store.size();
    } catch {
      sessions = undefined; // store unavailable: leave the gauge out
    }
    const text = renderMetrics(ctx.metrics, {
      engine: s?.engine.stats(),
      sessions,
      stateBytes: s?.sessions.stateBytes ?? 0,
      stateBytesWritten: s?.sessions.bytesWritten ?? 0,
      busySessions: ctx.busy.size,
      ready: s !== null,
      prefix: s?.prefixCache?.stats(),
    });
    return c.body(text, 200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" });
  });
  return app;
}
