/**
 * `POST /v1/completions` (OpenAI legacy completions). Without `session` the completion starts a new
 * session and returns its id in `session` (kept in the store unless `store: false`); with `session`
 * it continues that session (the prompt is appended to it). A prompt array and `n` > 1 give several
 * choices (prompt by prompt, `n` each, OpenAI's `index` order), each in a new session of its own,
 * generated together; with `session` both are a 400.
 * @module
 */

import { Hono } from "../src/deps.ts";
import { readJsonObject } from "../src/http/body.ts";
import type { AppContext } from "../src/http/context.ts";
import { newChoices, respondWithGeneration } from "../src/http/generation.ts";
import type { AppEnv } from "../src/http/middleware.ts";
import { checkModel, completionPrompt, promptText, schemaLimits } from "../src/http/prompt.ts";
import { parseCompletionRequest } from "../src/http/schemas.ts";

/** The completions sub-app. */
export function completionsRoutes(ctx: AppContext): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.post("/v1/completions", async (c) => {
    const serving = ctx.require();
    const body = await readJsonObject(c.req.raw, ctx.options.maxBodyBytes);
    const params = parseCompletionRequest(body, schemaLimits(ctx, serving));
    checkModel(params.model, serving);
    if (params.session) {
      const lease = await serving.sessions.open(params.session);
      let prompt: Int32Array;
      try {
        prompt = completionPrompt(serving, lease.session, params.prompt);
      } catch (e) {
        await lease.release();
        throw e;
      }
      return respondWithGeneration({
        kind: "completion",
        ctx,
        serving,
        lease,
        prompt,
        params,
        holdPartial: false,
        echo: params.echo ? promptText(serving, params.prompt) : undefined,
        request: c.req.raw,
        record: c.get("record"),
      });
    }
    // n choices per prompt, in OpenAI's order (prompt by prompt), each in a new session.
    const choices = await newChoices(
      serving,
      params.prompts.flatMap((p) => Array.from({ length: params.n }, (_, copy) => ({ p, copy }))),
      (session, { p, copy }) => ({
        prompt: completionPrompt(serving, session, p),
        echo: params.echo ? promptText(serving, p) : undefined,
        copy,
      }),
    );
    return respondWithGeneration({
      kind: "completion",
      ctx,
      serving,
      ...choices[0],
      more: choices.slice(1),
      params,
      holdPartial: false,
      request: c.req.raw,
      record: c.get("record"),
    });
  });
  return app;
}
