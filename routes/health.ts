/**
 * `GET /health`: 503 (with `Retry-After`) while the model loads or if it failed to load; 200 with
 * the model id, backend and device once it serves.
 * @module
 */

import { Hono } from "../src/deps.ts";
import type { AppContext } from "../src/http/context.ts";
import { RETRY_AFTER_SECONDS } from "../src/http/errors.ts";
import type { AppEnv } from "../src/http/middleware.ts";

/** The health sub-app (mounted at `/health`). */
export function healthRoutes(ctx: AppContext): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.get("/", (c) => {
    const s = ctx.serving;
    if (!s) {
      c.header("retry-after", String(RETRY_AFTER_SECONDS));
      const failed = ctx.loadError !== null;
      return c.json(
        failed ? { status: "error", error: "the model failed to load" } : { status: "loading" },
        503,
      );
    }
    const stats = s.engine.stats();
    return c.json({
      status: "ok",
      model: s.modelId,
      backend: s.model.backend.kind,
      device: s.model.backend.device,
      queue_depth: stats.queueDepth,
      running: stats.running,
    });
  });
  return app;
}
