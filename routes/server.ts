/**
 * The HTTP server: `Deno.serve` on a host and port with the app of `routes/mod.ts`, over a session
 * store opened from a spec. `GET /health` answers 503 until the model (which may be given as a
 * promise) has loaded.
 *
 * Shutdown (the handle's `shutdown()`, or SIGINT / SIGTERM): stop accepting connections, let
 * running requests finish for up to the grace period, then cancel what still runs (the engine
 * stops at a step boundary; completed responses have saved their sessions), and close the store.
 * On a signal the process then exits; a second signal exits at once.
 *
 * This module is the server's composition root: the app of `routes/mod.ts` with its context,
 * store and logger, served; `main.ts` starts the server through it.
 * @module
 */

import { createApp } from "./mod.ts";
import type { TnlModel } from "../src/load.ts";
import { openStore, type OpenStoreOptions } from "../src/state/mod.ts";
import type { SessionStore } from "../src/state/store.ts";
import { AppContext, type AppOptions } from "../src/http/context.ts";
import { jsonLogger, type Logger } from "../src/http/logger.ts";

/** Options of `startServer`. */
export interface ServerOptions extends AppOptions {
  /** Port (default 8000; 0 picks a free one). */
  port?: number;
  /** Host to bind (default 0.0.0.0). */
  hostname?: string;
  /** A store spec (`memory`, `fs:DIR`, `kv[:PATH]`, `redis://...`) or an open store. */
  store?: string | SessionStore;
  /** Options for `openStore` when `store` is a spec. */
  storeOptions?: OpenStoreOptions;
  /** How long running requests may go on after a shutdown starts, in ms (default 30 000). */
  graceMs?: number;
  /** Logger (default JSON lines on stderr). */
  logger?: Logger;
  /** Shut down on SIGINT / SIGTERM and exit (default true). */
  handleSignals?: boolean;
  /**
   * Share prefix states between instances through the store spec (opened again with the key prefix
   * `<prefix>-prefix`, so they stay apart from sessions); default false: per-process memory.
   */
  prefixCacheShared?: boolean;
}

/** A running server. */
export interface ServerHandle {
  /** The address it listens on. */
  readonly addr: Deno.NetAddr;
  /** Base URL (`http://127.0.0.1:PORT` when bound to every interface). */
  readonly url: string;
  /**
   * The app context (model, engine, store, metrics).
   * @internal
   */
  readonly ctx: AppContext;
  /** Resolves when the server has stopped. */
  readonly finished: Promise<void>;
  /** Stop: no new connections, running requests get `graceMs`, then are cancelled; store closed. */
  shutdown(graceMs?: number): Promise<void>;
}

/**
 * Start serving `model` (or a promise of it); see the module doc.
 *
 * @example The OpenAI-compatible server on a port, in a Deno app
 * ```ts
 * import { startServer } from "./server.ts";
 * import { loadModel } from "../src/load.ts";
 *
 * const server = await startServer(loadModel(), { port: 8000, store: "memory" });
 * const res = await fetch(`${server.url}/v1/completions`, {
 *   method: "POST",
 *   headers: { "content-type": "application/json" },
 *   body: JSON.stringify({ prompt: "ROMEO:", max_tokens: 16 }),
 * });
 * console.log((await res.json()).choices[0].text);
 * await server.shutdown();
 * ```
 */
export async function startServer(
  model: TnlModel | Promise<TnlModel>,
  opts: ServerOptions = {},
): Promise<ServerHandle> {
  const logger = opts.logger ?? jsonLogger();
  const spec = opts.store ?? "memory";
  const store = typeof spec === "string" ? await openStore(spec, opts.storeOptions) : spec;
  if (opts.prefixCacheShared && typeof spec !== "string") {
    throw new TypeError("prefixCacheShared: needs a store spec (it is opened with its own prefix)");
  }
  const prefixStore = opts.prefixCacheShared
    ? await openStore(spec as string, {
      ...opts.storeOptions,
      prefix: `${opts.storeOptions?.prefix ?? "tnl"}-prefix`,
    })
    : undefined;
  // Session states are encoded and hashed in workers, off the thread that serves HTTP: up to 8
  // (64 kept 385M sessions ending together cost about 45 ms of encoding and hashing each on the
  // H200's host; 4 workers took 0.7 s to save them all), leaving two cores to the serving thread
  // and the backend's worker.
  const codecWorkers = opts.codecWorkers ??
    Math.min(8, Math.max(1, navigator.hardwareConcurrency - 2));
  const ctx = new AppContext({
    model,
    store,
    prefixStore,
    options: { ...opts, codecWorkers },
    logger,
  });
  // A loaded model: serve once everything around it is ready. A promise: serve at once (503s).
  if (!(model instanceof Promise)) await ctx.ready;
  const app = createApp(ctx);
  const unwatchLoop = ctx.metrics.watchEventLoop();
  const graceDefault = opts.graceMs ?? 30_000;

  let listening!: (a: Deno.NetAddr) => void;
  const listened = new Promise<Deno.NetAddr>((r) => (listening = r));
  const server = Deno.serve({
    port: opts.port ?? 8000,
    hostname: opts.hostname ?? "0.0.0.0",
    onListen: (a) => listening(a as Deno.NetAddr),
  }, app.fetch);
  const addr = await listened;
  const host = addr.hostname === "0.0.0.0" || addr.hostname === "::"
    ? "127.0.0.1"
    : addr.hostname.includes(":")
    ? `[${addr.hostname}]`
    : addr.hostname;
  const url = `http://${host}:${addr.port}`;
  const shown = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  Deno.stderr.writeSync(new TextEncoder().encode(`listening on http://${shown}:${addr.port}\n`));

  let stopping: Promise<void> | null = null;
  const signals: [Deno.Signal, () => void][] = [];
  const removeSignals = () => {
    for (const [sig, f] of signals) {
      try {
        Deno.removeSignalListener(sig, f);
      } catch {
        // already removed
      }
    }
    signals.length = 0;
  };

  const shutdown = (graceMs = graceDefault): Promise<void> => {
    if (stopping) return stopping;
    stopping = (async () => {
      logger.log("info", "shutting down", { graceMs, inFlight: ctx.metrics.inFlight });
      const timer = setTimeout(() => {
        logger.log("warn", "grace period over: cancelling running requests", {
          inFlight: ctx.metrics.inFlight,
        });
        ctx.cancelAll();
      }, graceMs);
      try {
        await server.shutdown();
      } finally {
        clearTimeout(timer);
      }
      try {
        await store.close();
        await prefixStore?.close();
      } catch (e) {
        logger.log("error", "store close failed", { error: String(e) });
      }
      removeSignals();
      unwatchLoop();
      ctx.codec.close();
      logger.log("info", "stopped");
    })();
    return stopping;
  };

  if (opts.handleSignals ?? true) {
    for (const sig of ["SIGINT", "SIGTERM"] as Deno.Signal[]) {
      const f = () => {
        if (stopping) Deno.exit(130);
        shutdown().then(async () => {
          const m = ctx.serving?.model;
          if (m) await m.dispose().catch(() => {});
          // End as a plain program does once nothing is left (so `--cpu-prof` profiles get
          // written); whatever still holds the process is cut after a second.
          Deno.unrefTimer(setTimeout(() => Deno.exit(0), 1000));
        });
      };
      try {
        Deno.addSignalListener(sig, f);
        signals.push([sig, f]);
      } catch {
        // signal not supported on this platform
      }
    }
  }

  return { addr, url, ctx, finished: server.finished, shutdown };
}
