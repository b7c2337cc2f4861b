/**
 * `GET /v1/models` and `GET /v1/models/:model`: the one served model (its id is the model
 * directory's basename).
 * @module
 */

import { Hono } from "../src/deps.ts";
import type { AppContext, Serving } from "../src/http/context.ts";
import { notFound } from "../src/http/errors.ts";
import type { AppEnv } from "../src/http/middleware.ts";

const STARTED = Math.floor(Date.now() / 1000);

function modelObject(s: Serving) {
  return { id: s.modelId, object: "model", created: STARTED, owned_by: "tnl-edge" };
}

/** The models sub-app (mounted at `/v1/models`). */
export function modelsRoutes(ctx: AppContext): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.get("/", (c) => {
    const s = ctx.require();
    return c.json({ object: "list", data: [modelObject(s)] });
  });
  app.get("/:model{.+}", (c) => {
    const s = ctx.require();
    const id = c.req.param("model");
    if (id !== s.modelId) {
      throw notFound(`The model '${id}' does not exist`, "model", "model_not_found");
    }
    return c.json(modelObject(s));
  });
  return app;
}
