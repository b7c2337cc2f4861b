/**
 * Redis store tests against a real `redis-server` started on a free loopback port. Without the
 * binary they are skipped, unless `TNL_REQUIRE_REDIS=1` (CI), which makes them fail instead.
 * @module
 */

import { toHttpError } from "../../src/http/errors.ts";
import assert from "node:assert/strict";
import { RedisSessionStore } from "../../src/state/redis_store.ts";
import { StoreError } from "../../src/state/errors.ts";
import { openStore } from "../../src/state/mod.ts";
import { bytesOf, sameBytes, storeSuite } from "./store_suite.ts";

const REQUIRED = Deno.env.get("TNL_REQUIRE_REDIS") === "1";
const BINARY = Deno.env.get("TNL_REDIS_SERVER") ?? "redis-server";

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

interface Server {
  port: number;
  url: string;
  stop(): Promise<void>;
}

/** Start `redis-server` on a free port and wait until it accepts connections (null: no binary). */
async function startRedis(): Promise<Server | null> {
  const port = freePort();
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(BINARY, {
      args: ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
      stdout: "null",
      stderr: "null",
    }).spawn();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      c.close();
      break;
    } catch {
      if (Date.now() > deadline) {
        child.kill("SIGKILL");
        await child.status;
        throw new Error(`redis-server did not start on port ${port}`);
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  let stopped = false;
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      if (stopped) return;
      stopped = true;
      child.kill("SIGTERM");
      await child.status;
    },
  };
}

const server = await startRedis();
if (server === null && REQUIRED) {
  throw new Error(`TNL_REQUIRE_REDIS=1 but ${BINARY} was not found (apt-get install redis-server)`);
}
if (server === null) {
  console.warn(
    `redis-server not found: Redis store tests skipped (set TNL_REQUIRE_REDIS=1 to fail instead)`,
  );
}
const ignore = server === null ? "redis-server not installed" : false;
globalThis.addEventListener("unload", () => {
  // Best effort at exit: the server is a child of this process.
  server?.stop();
});

let n = 0;
const prefix = () => `t${Date.now().toString(36)}${n++}:`;

storeSuite(
  "redis store",
  (opts) => RedisSessionStore.connect(server!.url, { ...opts, prefix: prefix() }),
  { eviction: "written", ignore },
);

const rtest = (name: string, fn: () => Promise<void>) =>
  Deno.test({
    name: `redis store: ${name}`,
    ignore: Boolean(ignore),
    sanitizeOps: false,
    sanitizeResources: false,
    fn,
  });

/** A raw RESP command over a fresh connection (test side, independent of the client). */
async function raw(port: number, ...args: string[]): Promise<string> {
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  const enc = new TextEncoder();
  let msg = `*${args.length}\r\n`;
  for (const a of args) msg += `$${enc.encode(a).length}\r\n${a}\r\n`;
  await c.write(enc.encode(msg));
  const buf = new Uint8Array(65536);
  const k = await c.read(buf);
  c.close();
  return new TextDecoder().decode(buf.subarray(0, k ?? 0));
}

rtest("a crash between the value write and the flip leaves the old state readable", async () => {
  const p = prefix();
  const s = await RedisSessionStore.connect(server!.url, { prefix: p });
  const old = bytesOf(500_000, 1);
  await s.put("c", old, { generation: 1 });
  // A writer that stored its bytes and died before the flip.
  assert.match(
    await raw(server!.port, "SET", `${p}v:c:crashedtoken`, "partial", "PX", "60000"),
    /OK/,
  );
  sameBytes(await s.get("c"), old, "old state");
  assert.equal((await s.getEntry("c"))!.generation, 1);
  // After a successful overwrite the replaced value is gone and only one value key remains.
  await s.put("c", bytesOf(10, 2), { generation: 2 });
  const keys = await raw(server!.port, "KEYS", `${p}v:c:*`);
  assert.match(keys, /^\*2\r\n/, "the new value and the abandoned one (which expires)");
  await s.close();
});

rtest("TTL is set with PEXPIRE on the head and the value; 0 persists", async () => {
  const p = prefix();
  const s = await RedisSessionStore.connect(server!.url, { prefix: p, ttlMs: 60_000 });
  await s.put("t", bytesOf(10, 1));
  const pttl = Number((await raw(server!.port, "PTTL", `${p}s:t`)).slice(1));
  assert.ok(pttl > 50_000 && pttl <= 60_000, `head PTTL ${pttl}`);
  await s.put("t", bytesOf(10, 2), { ttlMs: 0 });
  assert.equal((await raw(server!.port, "PTTL", `${p}s:t`)).trim(), ":-1");
  await s.close();
});

rtest("cannot connect: fails fast with backend_unavailable", async () => {
  const t0 = Date.now();
  await assert.rejects(
    RedisSessionStore.connect(`redis://127.0.0.1:${freePort()}`, { connectTimeoutMs: 1000 }),
    (e: unknown) =>
      e instanceof StoreError && e.code === "backend_unavailable" && toHttpError(e).status === 503,
  );
  assert.ok(Date.now() - t0 < 3000, `took ${Date.now() - t0} ms`);
  await assert.rejects(
    openStore(`redis://127.0.0.1:${freePort()}/0`),
    (e: unknown) => e instanceof StoreError && e.code === "backend_unavailable",
  );
});

rtest("server gone mid-session: commands fail fast, never hang", async () => {
  const own = await startRedis();
  assert.ok(own);
  const s = await RedisSessionStore.connect(own.url, { commandTimeoutMs: 2000 });
  await s.put("a", bytesOf(100, 1));
  await own.stop();
  const t0 = Date.now();
  for (
    const op of [
      () => s.get("a"),
      () => s.put("a", bytesOf(100, 2)),
      () => s.delete("a"),
      () => s.size(),
    ]
  ) {
    await assert.rejects(
      op(),
      (e: unknown) => e instanceof StoreError && e.code === "backend_unavailable",
    );
  }
  assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
  await s.close();
});

rtest("openStore parses redis specs", async () => {
  for (
    const spec of [
      server!.url,
      `${server!.url}/1`,
      `redis:${server!.url}`,
      `redis:127.0.0.1:${server!.port}`,
    ]
  ) {
    const s = await openStore(spec, { prefix: prefix().slice(0, -1) });
    assert.equal(s.kind, "redis");
    await s.put("x", bytesOf(5, 1));
    sameBytes(await s.get("x"), bytesOf(5, 1), spec);
    await s.close();
  }
});

rtest("stop the test server", async () => {
  await server!.stop();
});
