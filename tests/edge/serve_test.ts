/**
 * The edge handler the way it runs: `deno serve src/edge/serve.ts` in subprocesses configured by
 * environment variables, with no memory shared between requests (or between processes).
 *
 * - inline sessions, capped at 8 tokens per request: `continueSession` over HTTP gives exactly the
 *   text of one uncapped request (computed in this process), in msgpack and in JSON; the process
 *   stays far below a 512 MB edge memory limit;
 * - `deno serve --parallel` (2 isolates, each loading its own model): same result;
 * - Redis (`TNL_STORE=redis://…`), two edge processes: a stored session alternates between them;
 *   an inline state continues on the other process, and replaying an old state is a 409 there;
 *   a state for another model is a 422;
 * - Deno KV (`TNL_STORE=kv:PATH`, as on Deno Deploy with `TNL_STORE=kv`): stored sessions.
 * @module
 */

import assert from "node:assert/strict";
import { continueSession, type ContinueSessionOptions } from "../../src/edge/client.ts";
import { createEdgeHandler } from "../../src/edge/handler.ts";
import { STATE_MEDIA_TYPE } from "../../src/state/mod.ts";
import { loadModel } from "../../src/load.ts";
import { decodeSession, encodeSession } from "../../src/state/codec.ts";
import {
  freePort,
  type Instance,
  json,
  postJson,
  redisIgnore,
  type RedisServer,
  startEdge,
  startRedis,
} from "../scale/support.ts";

const SECRET = "edge serve secret";
const model = loadModel(undefined, { backend: "cpu" });
const reference = createEdgeHandler({ loaded: model, maxTokensPerRequest: 0 });
const redisIgnored = await redisIgnore();
const MB = 1024 * 1024;

const test = (name: string, fn: () => Promise<void>, ignore: string | false = false) =>
  Deno.test({
    name: `deno serve edge: ${name}`,
    ignore: Boolean(ignore),
    sanitizeOps: false,
    sanitizeResources: false,
    fn,
  });

async function run(
  url: string | ((r: Request) => Promise<Response>),
  opts: ContinueSessionOptions,
) {
  let text = "";
  let requests = 0;
  let state: Uint8Array | undefined;
  let session = "";
  const target = typeof url === "string" ? url : "http://in-process";
  const fetch = typeof url === "string" ? undefined : url;
  for await (const c of continueSession(target, "ROMEO:", { ...opts, fetch })) {
    text += c.text;
    requests++;
    state = c.state ?? state;
    session = c.session;
  }
  return { text, requests, state, session };
}

test("inline sessions over HTTP, capped at 8: the text of one uncapped request", async () => {
  const edge = await startEdge({ TNL_MAX_TOKENS_PER_REQUEST: "8", TNL_STATE_SECRET: SECRET });
  try {
    const health = await json(await fetch(`${edge.url}/health`));
    assert.equal(health.backend, "cpu");
    assert.equal(health.max_tokens_per_request, 8);
    assert.equal(health.signed_states, true);
    for (const format of ["msgpack", "json"] as const) {
      for (const sampling of [{ temperature: 0 }, { temperature: 0.9, seed: 42 }]) {
        const opts = { maxTokens: 50, sampling, format };
        const a = await run(edge.url, opts);
        const b = await run(reference, opts);
        assert.equal(a.requests, 7);
        assert.equal(a.text, b.text);
      }
    }
    // Memory: the edge process after those requests (the default model, CPU backend).
    const rss = await edge.rss();
    if (rss !== null) {
      console.error(`deno serve edge RSS: ${(rss / MB).toFixed(0)} MiB`);
      assert.ok(rss < 400 * MB, `RSS ${(rss / MB).toFixed(0)} MiB`);
    }
  } finally {
    await edge.kill();
  }
});

test("a malformed variable: every request is a 500 naming it", async () => {
  const edge = await startEdge({ TNL_MAX_TOKENS_PER_REQUEST: "lots" });
  try {
    const r = await json(await fetch(`${edge.url}/health`), 500);
    assert.match((r.error as { message: string }).message, /TNL_MAX_TOKENS_PER_REQUEST/);
  } finally {
    await edge.kill();
  }
});

test("deno serve --parallel: two isolates, each with its own model, one conversation", async () => {
  const port = freePort();
  const edge = await startEdge({ TNL_MAX_TOKENS_PER_REQUEST: "4", DENO_JOBS: "2" }, {
    port,
    flags: ["--parallel"],
  });
  try {
    const opts = { maxTokens: 40, sampling: { temperature: 0.7, seed: 9 } };
    const runs = await Promise.all([run(edge.url, opts), run(edge.url, opts)]);
    const b = await run(reference, opts);
    for (const a of runs) assert.equal(a.text, b.text);
  } finally {
    await edge.kill();
  }
});

let redis: RedisServer | null = null;

test(
  "Redis: stored sessions and inline states across two edge processes; replays are 409s",
  async () => {
    redis = await startRedis();
    const env = {
      TNL_STORE: redis.url,
      TNL_STATE_SECRET: SECRET,
      TNL_MAX_TOKENS_PER_REQUEST: "6",
    };
    const [e1, e2] = await Promise.all([startEdge(env), startEdge(env)]);
    try {
      // A stored session alternating between the two processes.
      const opts = { maxTokens: 30, sampling: { temperature: 0 } };
      let session: string | undefined;
      let text = "";
      let remaining = 30;
      for (let i = 0; remaining > 0; i++) {
        const on: Instance = i % 2 === 0 ? e1 : e2;
        const body: Record<string, unknown> = session
          ? { session, max_tokens: remaining }
          : { prompt: "ROMEO:", max_tokens: remaining, temperature: 0 };
        const r = await json(await postJson(`${on.url}/v1/generate`, body));
        assert.equal(r.state, undefined);
        session = r.session as string;
        text += r.text;
        remaining = r.remaining_tokens as number;
        assert.equal(r.generation, i + 1);
      }
      assert.equal(text, (await run(reference, opts)).text);

      // An inline state: generation 1 from e1, continued on e2; then the old one is refused.
      const g1 = await json(
        await postJson(`${e1.url}/v1/generate`, {
          prompt: "ROMEO:",
          max_tokens: 4,
          store: false,
        }),
      );
      const g2 = await json(
        await postJson(`${e2.url}/v1/generate`, { state: g1.state, max_tokens: 4 }),
      );
      assert.equal(g2.generation, 2);
      for (const on of [e1, e2]) {
        const again = await json(await postJson(`${on.url}/v1/generate`, { state: g1.state }), 409);
        assert.equal((again.error as { code: string }).code, "state_replayed");
      }
      // The same request twice at once: one wins, the other is a 409 (busy or replayed).
      const both = await Promise.all(
        [e1, e2].map((on) => postJson(`${on.url}/v1/generate`, { state: g2.state, max_tokens: 8 })),
      );
      assert.deepEqual(both.map((r) => r.status).sort(), [200, 409]);
      await Promise.all(both.map((r) => r.body?.cancel()));

      // A state for another model (valid signature, other fingerprint) is a 422.
      const m = await model;
      const codec = {
        config: m.config,
        modelFingerprint: m.fingerprint,
        tokenizerFingerprint: m.tokenizer.fingerprint,
        secret: SECRET,
      };
      const snap = await decodeSession(Uint8Array.fromBase64(g2.state as string), codec);
      const other = await encodeSession(snap, { ...codec, modelFingerprint: "f".repeat(64) });
      const res = await fetch(`${e1.url}/v1/generate`, {
        method: "POST",
        headers: { "content-type": STATE_MEDIA_TYPE },
        body: await (async () => {
          const { encodeEdgeBody } = await import("../../src/edge/protocol.ts");
          return encodeEdgeBody({ state: other }, "msgpack") as Uint8Array<ArrayBuffer>;
        })(),
      });
      assert.equal((await json(res, 422)).error && res.status, 422);
    } finally {
      await Promise.all([e1.kill(), e2.kill()]);
      await redis.stop();
    }
  },
  redisIgnored,
);

test("Deno KV (as on Deno Deploy): stored sessions continue by id", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tnl-edge-kv-" });
  const edge = await startEdge(
    { TNL_STORE: `kv:${dir}/edge.sqlite3`, TNL_MAX_TOKENS_PER_REQUEST: "8" },
    { permissions: ["--allow-read", "--allow-write", "--allow-env", "--allow-net"] },
  );
  try {
    const health = await json(await fetch(`${edge.url}/health`));
    assert.equal(health.store, "kv");
    const opts = { maxTokens: 30, sampling: { temperature: 0.8, seed: 4 } };
    const a = await run(edge.url, opts);
    assert.equal(a.state, undefined);
    assert.equal(a.requests, 4);
    assert.equal(a.text, (await run(reference, opts)).text);
  } finally {
    await edge.kill();
    await Deno.remove(dir, { recursive: true });
  }
});
