/**
 * `POST /v1/completions` (OpenAI legacy completions), mounted at `/v1/completions`. Without
 * `session` the completion starts a new session and returns its id in `session` (kept in the store
 * unless `store: false`); with `session` it continues that session (the prompt is appended to it).
 * A prompt array and `n` > 1 give several choices (prompt by prompt, `n` each, OpenAI's `index`
 * order), each in a new session of its own, generated together; with `session` both are a 400.
 * @module
 */

import { Hono } from "../src/deps.ts";
import { readJsonObject } from "../src/http/body.ts";
import { type AppContext, checkModel, schemaLimits } from "../src/http/context.ts";
import { type CallBase, respondOnNewSessions, respondOnSession } from "../src/http/generation.ts";
import type { AppEnv } from "../src/http/middleware.ts";
import { parseCompletionRequest } from "../src/http/schemas.ts";
import { completionPrompt, promptText } from "../src/sessions/mod.ts";

/** The completions sub-app (paths relative to its mount point). */
export function completionsRoutes(ctx: AppContext): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.post("/", async (c) => {
    const serving = ctx.require();
    const body = await readJsonObject(c.req.raw, ctx.options.maxBodyBytes);
    const params = parseCompletionRequest(body, schemaLimits(ctx, serving));
    checkModel(params.model, serving);
    const base: CallBase = {
      kind: "completion",
      ctx,
      serving,
      params,
      holdPartial: false,
      request: c.req.raw,
      record: c.get("record"),
    };
    const echo = (p: string | number[]) => params.echo ? promptText(serving, p) : undefined;
    if (params.session) {
      return await respondOnSession(base, params.session, (session) => ({
        prompt: completionPrompt(serving, session, params.prompt),
        echo: echo(params.prompt),
      }));
    }
    // n choices per prompt, in OpenAI's order (prompt by prompt), each in a new session.
    const specs = params.prompts.flatMap((p) =>
      Array.from({ length: params.n }, (_, copy) => ({ p, copy }))
    );
    return await respondOnNewSessions(base, specs, (session, { p, copy }) => ({
      prompt: completionPrompt(serving, session, p),
      echo: echo(p),
      copy,
    }));
  });
  return app;
}
