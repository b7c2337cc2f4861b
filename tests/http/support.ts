/**
 * Shared helpers of the HTTP and route tests: the embedded model on the CPU backend, an app over a
 * memory store, JSON requests, SSE reading, and a server started in a subprocess (`main.ts serve`).
 * @module
 */

import assert from "node:assert/strict";
import type { Hono } from "hono";
import { createApp } from "../../routes/mod.ts";
import type { EngineOptions } from "../../src/engine/engine.ts";
import { AppContext, type AppOptions } from "../../src/http/context.ts";
import { memoryLogger } from "../../src/http/logger.ts";
import type { AppEnv } from "../../src/http/middleware.ts";
import { readSse } from "../../src/http/sse.ts";
import { loadModel, type TnlModel } from "../../src/load.ts";
import { MemorySessionStore } from "../../src/state/memory_store.ts";
import type { SessionStore } from "../../src/state/store.ts";

const models = new Map<string, Promise<TnlModel>>();

/** The embedded 6M model on the CPU backend (one per engine options, per process). */
export function cpuModel(engine: EngineOptions = {}): Promise<TnlModel> {
  const key = JSON.stringify(engine);
  let m = models.get(key);
  if (!m) {
    m = loadModel(undefined, { backend: "cpu", engine });
    models.set(key, m);
  }
  return m;
}

/** An app under test. */
export interface TestApp {
  /** The Hono app. */
  app: Hono<AppEnv>;
  /** Its context. */
  ctx: AppContext;
  /** Its store. */
  store: SessionStore;
  /** Its log records. */
  logs: ReturnType<typeof memoryLogger>["records"];
}

/** An app over the CPU model (or `model`) and a memory store. */
export async function testApp(
  opts: {
    model?: TnlModel | Promise<TnlModel>;
    options?: AppOptions;
    store?: SessionStore;
    engine?: EngineOptions;
  } = {},
): Promise<TestApp> {
  const store = opts.store ?? new MemorySessionStore();
  const logger = memoryLogger();
  const ctx = new AppContext({
    model: opts.model ?? cpuModel(opts.engine),
    store,
    options: opts.options,
    logger,
  });
  if (!opts.model || !(opts.model instanceof Promise)) await ctx.ready;
  return { app: createApp(ctx), ctx, store, logs: logger.records };
}

/** POST a JSON body (a value, or a raw string). */
export function post(
  app: Hono<AppEnv>,
  path: string,
  body: unknown,
  init: RequestInit = {},
): Promise<Response> {
  return Promise.resolve(app.request(path, {
    method: "POST",
    headers: { "content-type": "application/json", ...(init.headers ?? {}) },
    body: typeof body === "string" ? body : JSON.stringify(body),
    signal: init.signal,
  }));
}

/** The JSON body of a response, asserting its status. */
export async function jsonOf(res: Response, status = 200): Promise<Record<string, unknown>> {
  const text = await res.text();
  assert.equal(res.status, status, `status ${res.status}, expected ${status}: ${text}`);
  return JSON.parse(text);
}

/** Assert an OpenAI-shaped error with `status` (and `param` when given); returns its error. */
export async function expectError(
  res: Response,
  status: number,
  param?: string | null,
): Promise<{ message: string; type: string; param: string | null; code: string | null }> {
  const body = await jsonOf(res, status);
  const e = body.error as { message: string; type: string; param: string | null; code: string };
  assert.equal(typeof e.message, "string");
  assert.equal(typeof e.type, "string");
  assert.ok("param" in e && "code" in e, "error has param and code");
  if (param !== undefined) assert.equal(e.param, param, `param of: ${e.message}`);
  return e;
}

/** The parsed JSON chunks of an SSE response (the final `[DONE]` checked and dropped). */
export async function sseChunks(res: Response): Promise<Record<string, unknown>[]> {
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/event-stream/);
  const events = await readSse(res.body!);
  assert.equal(events.at(-1), "[DONE]", `stream ends with [DONE]: ${events.at(-1)}`);
  return events.slice(0, -1).map((e) => JSON.parse(e));
}

/** Wait until `f()` is true (polling), or fail after `ms`. */
export async function waitFor(f: () => boolean, ms = 10_000, what = "condition"): Promise<void> {
  const t0 = Date.now();
  while (!f()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A server in a subprocess. */
export interface ChildServer {
  /** Base URL. */
  url: string;
  /** Stderr lines so far. */
  stderr: string[];
  /** SIGTERM and wait for the exit; returns the exit code. */
  stop(): Promise<number>;
}

/** Start `deno run -A main.ts serve --port 0 --backend cpu ...args` and wait for it to listen. */
export async function startChildServer(args: string[] = []): Promise<ChildServer> {
  const root = new URL("../../", import.meta.url).pathname;
  const proc = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "main.ts",
      "serve",
      "--port",
      "0",
      "--host",
      "127.0.0.1",
      "--backend",
      "cpu",
      ...args,
    ],
    cwd: root,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr: string[] = [];
  let resolveUrl!: (u: string) => void;
  let rejectUrl!: (e: Error) => void;
  const urlP = new Promise<string>((res, rej) => {
    resolveUrl = res;
    rejectUrl = rej;
  });
  const reading = (async () => {
    const decoder = new TextDecoder();
    let buf = "";
    for await (const chunk of proc.stderr) {
      buf += decoder.decode(chunk, { stream: true });
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        stderr.push(line);
        const m = line.match(/^listening on http:\/\/([^\s]+):(\d+)$/);
        if (m) resolveUrl(`http://127.0.0.1:${m[2]}`);
      }
    }
    rejectUrl(new Error(`server exited before listening:\n${stderr.join("\n")}`));
  })();
  const timer = setTimeout(() => rejectUrl(new Error("server did not start in 60 s")), 60_000);
  let url: string;
  try {
    url = await urlP;
  } catch (e) {
    try {
      proc.kill("SIGKILL");
    } catch { /* gone */ }
    await proc.status;
    await reading;
    throw e;
  } finally {
    clearTimeout(timer);
  }
  return {
    url,
    stderr,
    async stop() {
      try {
        proc.kill("SIGTERM");
      } catch { /* already gone */ }
      const st = await proc.status;
      await reading;
      return st.code;
    },
  };
}
