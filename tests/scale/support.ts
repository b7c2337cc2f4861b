/**
 * Helpers of the scale-out and edge tests: a `redis-server` on a free loopback port (restartable on
 * the same port and data directory, with an append-only file so data survives a crash), server
 * instances in subprocesses (`main.ts serve` and `deno serve src/edge/serve.ts`) that can be killed
 * with SIGKILL, and their resident memory.
 *
 * Without the `redis-server` binary the Redis tests are skipped, unless `TNL_REQUIRE_REDIS=1`
 * (CI), which makes them fail instead.
 * @module
 */

import assert from "node:assert/strict";

/** Repository root. */
export const ROOT: string = new URL("../../", import.meta.url).pathname;

const REQUIRED = Deno.env.get("TNL_REQUIRE_REDIS") === "1";
const BINARY = Deno.env.get("TNL_REDIS_SERVER") ?? "redis-server";

/** A free TCP port on loopback (best effort: it could be taken before use). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function waitForPort(port: number, ms: number, alive: () => boolean): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      c.close();
      return;
    } catch {
      if (!alive()) throw new Error(`the process for port ${port} exited`);
      if (Date.now() > deadline) throw new Error(`nothing listens on port ${port} after ${ms} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

/** Whether the Redis binary exists (checked once). */
let redisAvailable: boolean | null = null;

/** Whether `redis-server` can run here; throws when it cannot and `TNL_REQUIRE_REDIS=1`. */
export async function haveRedis(): Promise<boolean> {
  if (redisAvailable === null) {
    try {
      const out = await new Deno.Command(BINARY, { args: ["--version"], stdout: "null" }).output();
      redisAvailable = out.success;
    } catch {
      redisAvailable = false;
    }
  }
  if (!redisAvailable && REQUIRED) {
    throw new Error(`TNL_REQUIRE_REDIS=1 but ${BINARY} cannot run (apt-get install redis-server)`);
  }
  return redisAvailable;
}

/** Why the Redis tests are ignored (false when they run). */
export async function redisIgnore(): Promise<string | false> {
  return (await haveRedis()) ? false : "redis-server not installed";
}

/** A redis-server child. */
export interface RedisServer {
  /** Its port. */
  readonly port: number;
  /** `redis://127.0.0.1:PORT`. */
  readonly url: string;
  /** Kill it with SIGKILL (a crash), or SIGTERM. */
  kill(signal?: Deno.Signal): Promise<void>;
  /** Start it again on the same port and data directory (after `kill`). */
  start(): Promise<void>;
  /** Stop it and remove its data directory. */
  stop(): Promise<void>;
}

/** Start `redis-server` on a free port with an append-only file fsynced on every write. */
export async function startRedis(): Promise<RedisServer> {
  const port = freePort();
  const dir = await Deno.makeTempDir({ prefix: "tnl-redis-" });
  let child: Deno.ChildProcess | null = null;
  let exited = false;
  const start = async () => {
    exited = false;
    child = new Deno.Command(BINARY, {
      args: [
        "--port",
        String(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        dir,
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    child.status.then(() => (exited = true));
    await waitForPort(port, 10_000, () => !exited);
  };
  const kill = async (signal: Deno.Signal = "SIGKILL") => {
    const c = child;
    child = null;
    if (!c) return;
    try {
      c.kill(signal);
    } catch {
      // already gone
    }
    await c.status;
  };
  await start();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    kill,
    start,
    async stop() {
      await kill("SIGTERM");
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** A server process under test. */
export interface Instance {
  /** Base URL. */
  readonly url: string;
  /** Process id. */
  readonly pid: number;
  /** Stderr lines so far. */
  readonly stderr: string[];
  /** Send a signal and wait for the exit; returns the exit code (or the signal's). */
  kill(signal?: Deno.Signal): Promise<number>;
  /** Resident memory in bytes (Linux `/proc`; null elsewhere). */
  rss(): Promise<number | null>;
}

async function spawnInstance(
  args: string[],
  env: Record<string, string>,
  listening: RegExp,
): Promise<Instance> {
  const proc = new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    env,
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
    try {
      for await (const chunk of proc.stderr) {
        buf += decoder.decode(chunk, { stream: true });
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (stderr.length < 5000) stderr.push(line);
          const m = line.match(listening);
          if (m) resolveUrl(`http://127.0.0.1:${m[1]}`);
        }
      }
    } catch {
      // killed
    }
    rejectUrl(new Error(`exited before listening:\n${stderr.join("\n")}`));
  })();
  const timer = setTimeout(() => rejectUrl(new Error("did not listen within 60 s")), 60_000);
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
  let code: Promise<number> | null = null;
  return {
    url,
    pid: proc.pid,
    stderr,
    kill(signal: Deno.Signal = "SIGTERM") {
      if (!code) {
        try {
          proc.kill(signal);
        } catch { /* gone */ }
        code = proc.status.then(async (s) => {
          await reading;
          return s.signal ? 128 : s.code;
        });
      }
      return code;
    },
    async rss() {
      try {
        const status = await Deno.readTextFile(`/proc/${proc.pid}/status`);
        const m = status.match(/^VmRSS:\s+(\d+) kB/m);
        return m ? Number(m[1]) * 1024 : null;
      } catch {
        return null;
      }
    },
  };
}

/** `deno run -A main.ts serve --port 0 --host 127.0.0.1 --backend cpu ...args`. */
export function startServer(
  args: string[] = [],
  env: Record<string, string> = {},
): Promise<Instance> {
  return spawnInstance(
    [
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
    env,
    /^listening on http:\/\/[^\s]+:(\d+)$/,
  );
}

/**
 * `deno serve` of the edge module with `env` (TNL_BACKEND=cpu unless given), on a free port
 * (`port` to choose; `flags` go before the module, e.g. `--parallel`).
 */
export function startEdge(
  env: Record<string, string> = {},
  opts: { port?: number; flags?: string[]; permissions?: string[] } = {},
): Promise<Instance> {
  return spawnInstance(
    [
      "serve",
      ...(opts.permissions ?? ["--allow-read", "--allow-env", "--allow-net"]),
      ...(opts.flags ?? []),
      "--host",
      "127.0.0.1",
      "--port",
      String(opts.port ?? 0),
      "src/edge/serve.ts",
    ],
    { TNL_BACKEND: "cpu", ...env },
    /Listening on http:\/\/[^\s]+:(\d+)\//,
  );
}

/** POST JSON and return the response. */
export function postJson(url: string, body: unknown, headers: HeadersInit = {}): Promise<Response> {
  return fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
}

/** The JSON of a response with the expected status (the body in the failure message). */
export async function json(res: Response, status = 200): Promise<Record<string, unknown>> {
  const text = await res.text();
  assert.equal(res.status, status, `status ${res.status}, expected ${status}: ${text}`);
  return JSON.parse(text);
}

/** Run `n` async jobs with at most `limit` at a time; returns their results in order. */
export async function pool<T>(
  n: number,
  limit: number,
  job: (i: number) => Promise<T>,
): Promise<T[]> {
  const out = new Array<T>(n);
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, n) }, async () => {
    while (next < n) {
      const i = next++;
      out[i] = await job(i);
    }
  });
  await Promise.all(workers);
  return out;
}

/** One RESP command over a fresh connection; returns the raw reply text (for INFO and the like). */
export async function redisCommand(port: number, ...args: string[]): Promise<string> {
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const enc = new TextEncoder();
    let msg = `*${args.length}\r\n`;
    for (const a of args) msg += `$${enc.encode(a).length}\r\n${a}\r\n`;
    await c.write(enc.encode(msg));
    const buf = new Uint8Array(1 << 16);
    let out = "";
    const dec = new TextDecoder();
    // A bulk reply: read until the declared length has arrived.
    for (;;) {
      const n = await c.read(buf);
      if (n === null) break;
      out += dec.decode(buf.subarray(0, n), { stream: true });
      const m = out.match(/^\$(\d+)\r\n/);
      if (!m || out.length >= m[0].length + Number(m[1])) break;
    }
    return out;
  } finally {
    c.close();
  }
}

/** `used_memory` of a Redis server, in bytes. */
export async function redisUsedMemory(port: number): Promise<number> {
  const info = await redisCommand(port, "INFO", "memory");
  return Number(info.match(/used_memory:(\d+)/)?.[1] ?? NaN);
}
