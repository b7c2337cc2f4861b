/**
 * `POST /v1/chat/completions`, mounted at `/v1/chat/completions`: messages rendered with the chat
 * template (see `src/sessions/chat_template.ts`), generation stopped at the template's stop strings
 * and the request's. With `session`, the messages are the NEW ones: they are appended to the
 * conversation the session holds (an empty `messages` continues the assistant's reply). `n` > 1
 * gives n choices, each in a new session of its own (a 400 with `session`). A new conversation
 * starts from the prefix cache, which also keeps the state of its earlier turns.
 * @module
 */

import { Hono } from "../src/deps.ts";
import { readJsonObject } from "../src/http/body.ts";
import { type AppContext, checkModel, schemaLimits } from "../src/http/context.ts";
import { type CallBase, respondOnNewSessions, respondOnSession } from "../src/http/generation.ts";
import type { AppEnv } from "../src/http/middleware.ts";
import { parseChatRequest } from "../src/http/schemas.ts";
import { chatPrompt, chatStops, earlierTurnsLength } from "../src/sessions/mod.ts";

/** The chat completions sub-app (paths relative to its mount point). */
export function chatRoutes(ctx: AppContext): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.post("/", async (c) => {
    const serving = ctx.require();
    const body = await readJsonObject(c.req.raw, ctx.options.maxBodyBytes);
    const params = parseChatRequest(body, schemaLimits(ctx, serving));
    checkModel(params.model, serving);
    params.stop = chatStops(serving, params.stop);
    const base: CallBase = {
      kind: "chat",
      ctx,
      serving,
      params,
      holdPartial: false,
      request: c.req.raw,
      record: c.get("record"),
    };
    if (params.session) {
      return await respondOnSession(base, params.session, (session) => ({
        prompt: chatPrompt(serving, session, params.messages),
      }));
    }
    // n choices, each in a new session.
    const copies = Array.from({ length: params.n }, (_, copy) => copy);
    return await respondOnNewSessions(base, copies, (session, copy) => {
      const prompt = chatPrompt(serving, session, params.messages);
      return { prompt, copy, shareAt: earlierTurnsLength(serving, params.messages, prompt) };
    });
  });
  return app;
}
