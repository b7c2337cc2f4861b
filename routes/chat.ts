/**
 * `POST /v1/chat/completions`: messages rendered with the chat template (see
 * `src/http/chat_template.ts`), generation stopped at the template's stop strings and the request's.
 * With `session`, the messages are the NEW ones: they are appended to the conversation the session
 * holds (an empty `messages` continues the assistant's reply). `n` > 1 gives n choices, each in a new
 * session of its own (a 400 with `session`).
 * @module
 */

import { Hono } from "../src/deps.ts";
import { readJsonObject } from "../src/http/body.ts";
import type { AppContext } from "../src/http/context.ts";
import { newChoices, respondWithGeneration } from "../src/http/generation.ts";
import type { AppEnv } from "../src/http/middleware.ts";
import { chatPrompt, chatStops, checkModel, schemaLimits } from "../src/http/prompt.ts";
import { parseChatRequest } from "../src/http/schemas.ts";

/** The chat completions sub-app. */
export function chatRoutes(ctx: AppContext): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.post("/v1/chat/completions", async (c) => {
    const serving = ctx.require();
    const body = await readJsonObject(c.req.raw, ctx.options.maxBodyBytes);
    const params = parseChatRequest(body, schemaLimits(ctx, serving));
    checkModel(params.model, serving);
    params.stop = chatStops(serving, params.stop);
    if (params.session) {
      const lease = await serving.sessions.open(params.session);
      let prompt: Int32Array;
      try {
        prompt = chatPrompt(serving, lease.session, params.messages);
      } catch (e) {
        await lease.release();
        throw e;
      }
      return respondWithGeneration({
        kind: "chat",
        ctx,
        serving,
        lease,
        prompt,
        params,
        holdPartial: false,
        request: c.req.raw,
        record: c.get("record"),
      });
    }
    // n choices, each in a new session.
    const choices = await newChoices(
      serving,
      Array.from({ length: params.n }, (_, copy) => copy),
      (session, copy) => ({ prompt: chatPrompt(serving, session, params.messages), copy }),
    );
    return respondWithGeneration({
      kind: "chat",
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
