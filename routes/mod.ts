/**
 * The HTTP app: one Hono sub-app per resource, mounted under one root with the request middleware
 * (request id, access log, metrics), optional CORS, OpenAI-shaped errors and a 404 for every other
 * route.
 *
 * | route                                   | file             |
 * |-----------------------------------------|------------------|
 * | `GET /health`                           | `health.ts`      |
 * | `GET /metrics`                          | `metrics.ts`     |
 * | `GET /v1/models`, `/v1/models/:model`   | `models.ts`      |
 * | `POST /v1/completions`                  | `completions.ts` |
 * | `POST /v1/chat/completions`             | `chat.ts`        |
 * | `/v1/sessions...`                       | `sessions.ts`    |
 *
 * @example The app without a listening socket (tests, or mounting under another Hono app)
 * ```ts
 * import { AppContext, createApp } from "./mod.ts";
 * import { loadModel } from "../src/load.ts";
 * import { openStore } from "../src/state/mod.ts";
 *
 * const app = createApp(new AppContext({ model: loadModel(), store: await openStore("memory") }));
 * const res = await app.request("/v1/models");
 * console.log((await res.json()).data[0].id);
 * ```
 * @module
 */

import { Hono } from "../src/deps.ts";
import type { AppContext } from "../src/http/context.ts";
import { errorResponse, notFound } from "../src/http/errors.ts";
import {
  type AppEnv,
  corsMiddleware,
  JSON_ROUTES,
  jsonBodies,
  onError,
  requestMiddleware,
} from "../src/http/middleware.ts";
import { chatRoutes } from "./chat.ts";
import { completionsRoutes } from "./completions.ts";
import { healthRoutes } from "./health.ts";
import { metricsRoutes } from "./metrics.ts";
import { modelsRoutes } from "./models.ts";
import { sessionsRoutes } from "./sessions.ts";

export { AppContext, type AppContextInit, type AppOptions } from "../src/http/context.ts";
export type { AppEnv } from "../src/http/middleware.ts";

/** Build the app over a context. */
export function createApp(ctx: AppContext): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.use("*", requestMiddleware(ctx));
  if (ctx.options.cors) app.use("*", corsMiddleware(ctx.options.cors));
  app.on("POST", [...JSON_ROUTES], jsonBodies());
  app.route("/health", healthRoutes(ctx));
  app.route("/metrics", metricsRoutes(ctx));
  app.route("/v1/models", modelsRoutes(ctx));
  app.route("/v1/completions", completionsRoutes(ctx));
  app.route("/v1/chat/completions", chatRoutes(ctx));
  app.route("/v1/sessions", sessionsRoutes(ctx));
  app.notFound((c) =>
    errorResponse(
      notFound(`no route ${c.req.method} ${c.req.path}`, null, "route_not_found"),
      c.get("requestId"),
    )
  );
  app.onError(onError(ctx));
  return app;
}
