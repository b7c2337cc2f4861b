/**
 * The serving benchmark's client against a stand-in server (no model): streaming requests back to
 * back, token counts from `usage`, kept sessions continued and deleted, the lag histogram's delta.
 */

import assert from "node:assert/strict";
import { type PromptPool, serverLevel } from "../../bench/serve.ts";

const TOKENS = 4;

/** A server speaking the routes the benchmark uses; it records what it was sent. */
function standIn() {
  const bodies: Record<string, unknown>[] = [];
  const deleted: string[] = [];
  let scrapes = 0, sessions = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/health") return Response.json({ status: "ok", running: 0, queue_depth: 0 });
    if (path === "/metrics") {
      // 10 samples of 2 ms before the level, then 90 more of 20 ms.
      const [fast, slow] = scrapes++ === 0 ? [10, 0] : [10, 90];
      return new Response(
        [
          `tnl_event_loop_lag_seconds_bucket{le="0.005"} ${fast}`,
          `tnl_event_loop_lag_seconds_bucket{le="0.025"} ${fast + slow}`,
          `tnl_event_loop_lag_seconds_bucket{le="+Inf"} ${fast + slow}`,
          `tnl_event_loop_lag_seconds_sum ${fast * 0.002 + slow * 0.02}`,
          `tnl_event_loop_lag_seconds_count ${fast + slow}`,
        ].join("\n"),
      );
    }
    if (req.method === "DELETE") {
      deleted.push(path.split("/").pop()!);
      return new Response(null, { status: 204 });
    }
    const body = await req.json();
    bodies.push(body);
    const session = body.store ? (body.session ?? `s${++sessions}`) : null;
    const enc = new TextEncoder();
    const ev = (o: unknown) => enc.encode(`data: ${JSON.stringify(o)}\n\n`);
    const stream = new ReadableStream<Uint8Array>({
      async start(c) {
        for (let i = 0; i < body.max_tokens; i++) {
          c.enqueue(ev({ choices: [{ text: "ab", finish_reason: null }], session }));
          await new Promise((r) => setTimeout(r, 5));
        }
        c.enqueue(ev({ choices: [{ text: "", finish_reason: "length" }], session }));
        c.enqueue(
          ev({
            choices: [],
            usage: { prompt_tokens: 3, completion_tokens: body.max_tokens },
            session,
          }),
        );
        c.enqueue(enc.encode("data: [DONE]\n\n"));
        c.close();
      },
    });
    return new Response(stream, { headers: { "content-type": "text/event-stream" } });
  });
  return { server, bodies, deleted, url: `http://127.0.0.1:${server.addr.port}` };
}

const PROMPTS: PromptPool = { short: ["a b c"], long: ["long text"], longTokens: 2 };

Deno.test("serverLevel: kept sessions are continued, then deleted; usage counts tokens", async () => {
  const s = standIn();
  try {
    const r = await serverLevel(
      s.url,
      { streams: 2, prompt: "short", store: "kept" },
      { tokens: TOKENS, seconds: 1, warmup: 0, eos: 2 },
      PROMPTS,
    );
    assert.ok(r.finished >= 2, `finished ${r.finished}`);
    assert.equal(r.exactLength, r.finished);
    assert.equal(r.meanCompletionTokens, TOKENS);
    assert.equal(r.meanPromptTokens, 3);
    assert.deepEqual(r.errors, {});
    for (const b of s.bodies) {
      assert.equal(b.stream, true);
      assert.equal(b.max_tokens, TOKENS);
      assert.deepEqual(b.logit_bias, { 2: -100 });
      assert.equal(b.store, true);
    }
    // Each client's first request opens a session, the following ones continue it.
    const opened = s.bodies.filter((b) => b.session === undefined).length;
    assert.equal(opened, 2);
    assert.ok(s.bodies.length > 2 && s.bodies.slice(2).some((b) => typeof b.session === "string"));
    assert.deepEqual(s.deleted.sort(), ["s1", "s2"]);
    // The level's own lag samples: 90 in (5, 25] ms.
    assert.equal(r.eventLoopLagMs?.samples, 90);
    assert.ok(r.eventLoopLagMs!.p50 > 5 && r.eventLoopLagMs!.p50 <= 25);
    assert.ok(Math.abs(r.eventLoopLagMs!.mean - 20) < 1e-9);
    assert.ok(r.ttftMs.p50 >= 0);
    assert.ok(Number.isFinite(r.clientLagMs.p99) && r.healthMs.samples > 0);
  } finally {
    await s.server.shutdown();
  }
});

Deno.test("serverLevel: store none sends store false and deletes nothing", async () => {
  const s = standIn();
  try {
    const r = await serverLevel(
      s.url,
      { streams: 1, prompt: "long", store: "none" },
      { tokens: TOKENS, seconds: 0.3, warmup: 0, eos: 7 },
      PROMPTS,
    );
    assert.ok(r.finished >= 1);
    assert.ok(s.bodies.every((b) => b.store === false && b.prompt === "long text"));
    assert.deepEqual(s.deleted, []);
  } finally {
    await s.server.shutdown();
  }
});

Deno.test("serverLevel: the level ends at its deadline, whatever the server still streams", async () => {
  // One chunk every 100 ms for 30 s: a request never finishes inside the 0.3 s window.
  let stopped = false;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/health") return Response.json({ status: "ok", running: 0, queue_depth: 0 });
    if (path === "/metrics") return new Response("tnl_queue_depth 0\n");
    await req.json();
    const enc = new TextEncoder();
    const stream = new ReadableStream<Uint8Array>({
      async start(c) {
        for (let i = 0; i < 300 && !stopped; i++) {
          c.enqueue(enc.encode(`data: ${JSON.stringify({ choices: [{ text: "x" }] })}\n\n`));
          await new Promise((r) => setTimeout(r, 100));
        }
        if (stopped) return;
        c.enqueue(
          enc.encode(
            `data: ${JSON.stringify({ choices: [], usage: { completion_tokens: 300 } })}\n\n`,
          ),
        );
        c.close();
      },
      cancel() {
        stopped = true;
      },
    });
    return new Response(stream, { headers: { "content-type": "text/event-stream" } });
  });
  try {
    const r = await serverLevel(
      `http://127.0.0.1:${server.addr.port}`,
      { streams: 1, prompt: "short", store: "none" },
      { tokens: 300, seconds: 0.3, warmup: 0, eos: 2 },
      PROMPTS,
    );
    assert.equal(r.finished, 0);
    assert.equal(r.started, 1);
    assert.equal(r.eventLoopLagMs, null, "no lag histogram: null, not zeros");
  } finally {
    stopped = true;
    await server.shutdown();
  }
});
