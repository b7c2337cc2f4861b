/**
 * Sessions: the resumable state of a conversation, kept in the session store. Mounted at
 * `/v1/sessions` (the paths inside are relative to it).
 *
 * - `POST /v1/sessions` `{id?, prompt? | messages?, state_encoding?}`: create (a random id unless given; 409 if the
 *   id exists); a prompt (text or token ids) or chat messages are prefilled (consumed without
 *   generating). 201 with the metadata.
 * - `GET /v1/sessions?limit=&after=`: the operator's listing (id, position, tokens, busy,
 *   state_bytes, updated = last use), in id order, OpenAI's list shape (`has_more`, `last_id` is the
 *   next page's `after`; `limit` 1-1000, default 100). Off (404) unless an admin token is set, and
 *   only with `Authorization: Bearer <token>` (401): a session id is the capability to continue it.
 * - `GET /v1/sessions/:id`: metadata (position, tokens, generation, created, updated, busy).
 * - `DELETE /v1/sessions/:id`: delete (409 while busy).
 * - `POST /v1/sessions/:id/completions`: continue with the options and streaming of
 *   `/v1/completions` (`prompt` optional: without one the session's text just goes on). Sampling
 *   fields left out keep the session's last values (the seed excepted); partial characters and
 *   partial stop matches at a `length` finish stay in the session for the next request.
 * - `GET /v1/sessions/:id/state`: the encoded state (`application/vnd.msgpack`), ETag = SHA-256 of
 *   the bytes sent. As stored, or in the encoding asked for by `Accept: application/vnd.msgpack;
 *   encoding=q8+deflate` or `?encoding=q8+deflate` (decoded and encoded again when it differs from
 *   the stored one); `X-State-Encoding` says which, `X-State-Lossy` the lossy encoding a state that
 *   is not exact passed through.
 * - `PUT /v1/sessions/:id/state`: import a state (msgpack body); it must be valid for this model
 *   (400 malformed, 401 signature, 422 another model). The state's own id is rewritten to the URL's
 *   (so a state can be copied to a new id: a fork); 201 when created, 200 when replaced. Every
 *   encoding is accepted; it is stored in the server's default, still marked lossy if it was. Over an
 *   existing id only the session's own state at the stored generation or later is taken, or any
 *   state with `If-Match: <stored ETag>`; else 409 `state_replayed` (no rollback by replay). A
 *   stale `If-Match` is a 412.
 * @module
 */

import { Hono } from "../src/deps.ts";
import { readJsonObject } from "../src/http/body.ts";
import { type AppContext, checkModel, schemaLimits } from "../src/http/context.ts";
import { badRequest } from "../src/http/errors.ts";
import { type CallBase, prefillSession, respondOnSession } from "../src/http/generation.ts";
import { adminOnly, type AppEnv } from "../src/http/middleware.ts";
import { msgpackResponse, readMsgpackBody } from "../src/http/msgpack.ts";
import { requestedStateEncoding } from "../src/http/state_encoding.ts";
import {
  checkSessionId,
  checkSingleChoice,
  parseCompletionRequest,
  parseSessionCreate,
} from "../src/http/schemas.ts";
import {
  chatPrefill,
  completionPrompt,
  etagOf,
  matchesEtag,
  promptText,
  type StoredEncoding,
} from "../src/sessions/mod.ts";

/** The sessions sub-app (paths relative to its mount point). */
export function sessionsRoutes(ctx: AppContext): Hono<AppEnv> {
  const app = new Hono<AppEnv>();

  app.post("/", async (c) => {
    const serving = ctx.require();
    const body = await readJsonObject(c.req.raw, ctx.options.maxBodyBytes, { allowEmpty: true });
    const p = parseSessionCreate(body);
    const record = c.get("record");
    const lease = await serving.sessions.create(p.id, { encoding: p.stateEncoding });
    record.session = lease.session.id;
    try {
      let prompt: Int32Array | null = null;
      if (p.prompt !== undefined) {
        prompt = completionPrompt(serving, lease.session, p.prompt);
      } else if (p.messages !== undefined) prompt = chatPrefill(serving, p.messages);
      if (prompt && prompt.length > 0) {
        record.promptTokens = await prefillSession(ctx, serving, lease, prompt);
      }
      const saved = await lease.save();
      c.header("etag", etagOf(saved.digest));
      c.header("location", `/v1/sessions/${lease.session.id}`);
      // Released before the response goes out: not busy for whoever reads it.
      return c.json(
        { ...serving.sessions.describe(lease.session, saved.bytes.length, saved), busy: false },
        201,
      );
    } finally {
      await lease.release();
    }
  });

  app.get("/", adminOnly(ctx), async (c) => {
    const serving = ctx.require();
    const q = c.req.query();
    for (const k of Object.keys(q)) {
      if (k !== "limit" && k !== "after") {
        throw badRequest(k, `${k}: unknown query parameter (limit, after)`);
      }
    }
    let limit = 100;
    if (q.limit !== undefined) {
      limit = Number(q.limit);
      if (!/^\d+$/.test(q.limit) || limit < 1 || limit > 1000) {
        throw badRequest(
          "limit",
          `limit: expected an integer in [1, 1000], got ${JSON.stringify(q.limit)}`,
        );
      }
    }
    checkSessionId(q.after, "after");
    return c.json(await serving.sessions.list({ after: q.after, limit }));
  });

  app.get("/:id", async (c) => {
    const serving = ctx.require();
    return c.json(await serving.sessions.info(c.req.param("id")));
  });

  app.delete("/:id", async (c) => {
    const serving = ctx.require();
    const id = c.req.param("id");
    await serving.sessions.remove(id);
    return c.json({ id, object: "session.deleted", deleted: true });
  });

  app.post("/:id/completions", async (c) => {
    const serving = ctx.require();
    const id = c.req.param("id");
    const body = await readJsonObject(c.req.raw, ctx.options.maxBodyBytes, { allowEmpty: true });
    if (body.prompt === undefined || body.prompt === null) body.prompt = "";
    const params = parseCompletionRequest(body, schemaLimits(ctx, serving));
    if (params.session !== undefined && params.session !== id) {
      throw badRequest("session", `session: ${params.session} differs from the URL's ${id}`);
    }
    checkModel(params.model, serving);
    checkSingleChoice(params);
    params.session = id;
    const base: CallBase = {
      kind: "completion",
      ctx,
      serving,
      params,
      holdPartial: true,
      request: c.req.raw,
      record: c.get("record"),
    };
    return await respondOnSession(base, id, (session) => ({
      prompt: completionPrompt(serving, session, params.prompt),
      echo: params.echo ? promptText(serving, params.prompt) : undefined,
    }));
  });

  app.get("/:id/state", async (c) => {
    const serving = ctx.require();
    const encoding = requestedStateEncoding(c.req.raw);
    const { bytes, digest, ...stored } = await serving.sessions.exportState(
      c.req.param("id"),
      encoding,
    );
    const headers = stateHeaders(stored);
    if (matchesEtag(c.req.header("if-none-match") ?? null, etagOf(digest))) {
      return new Response(null, { status: 304, headers: { ...headers, etag: etagOf(digest) } });
    }
    return msgpackResponse(bytes, digest, headers);
  });

  app.put("/:id/state", async (c) => {
    const serving = ctx.require();
    const id = c.req.param("id");
    checkSessionId(id, "id");
    const bytes = await readMsgpackBody(c.req.raw, ctx.options.maxBodyBytes);
    const r = await serving.sessions.importState(id, bytes, {
      ifMatch: c.req.header("if-match") ?? null,
    });
    c.get("record").session = id;
    c.header("etag", etagOf(r.digest));
    return c.json(r.info, r.created ? 201 : 200);
  });

  return app;
}

/**
 * The headers of a state download: its encoding (`X-State-Encoding`), the lossy encoding it passed
 * through when it is not exact (`X-State-Lossy`), and `Vary: Accept` (the bytes follow it).
 */
function stateHeaders(s: StoredEncoding): Record<string, string> {
  const h: Record<string, string> = { "x-state-encoding": s.encoding, vary: "Accept" };
  if (s.lossy !== null) h["x-state-lossy"] = s.lossy;
  return h;
}
