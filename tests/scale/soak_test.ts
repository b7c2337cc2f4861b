/**
 * A bounded soak on loopback: SESSIONS sessions × REQUESTS requests each (4 tokens per request,
 * seeded sampling), alternating between two `main.ts serve` instances that share Redis, 8 requests
 * in flight. Checks: no errors, no lost session (each ends with exactly the tokens and generation
 * its responses add up to), and bounded memory: the RSS of each instance after warm-up, after the
 * first half of the sessions and at the end (the second half must not grow it by more than 96 MiB).
 *
 * Size: `TNL_SOAK_SESSIONS` (default 100) and `TNL_SOAK_REQUESTS` (default 20); the full
 * size is 200 × 20 (`TNL_SOAK_SESSIONS=200`). The numbers are printed as one JSON line.
 * @module
 */

import assert from "node:assert/strict";
import {
  type Instance,
  json,
  pool,
  postJson,
  redisIgnore,
  redisUsedMemory,
  startRedis,
  startServer,
} from "./support.ts";

const ignore = await redisIgnore();
const SESSIONS = Number(Deno.env.get("TNL_SOAK_SESSIONS") ?? 100);
const REQUESTS = Number(Deno.env.get("TNL_SOAK_REQUESTS") ?? 20);
const IN_FLIGHT = 8;
const MB = 1024 * 1024;
const mib = (b: number | null) => (b === null ? null : Math.round(b / MB));

Deno.test({
  name: `soak: ${SESSIONS} sessions × ${REQUESTS} requests across two instances on Redis`,
  ignore: Boolean(ignore),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const redis = await startRedis();
    const args = ["--store", redis.url, "--state-secret", "soak", "--max-queue", "64"];
    const instances: Instance[] = await Promise.all([startServer(args), startServer(args)]);
    try {
      const send = async (on: Instance, body: Record<string, unknown>) => {
        const r = await postJson(`${on.url}/v1/completions`, body);
        return await json(r);
      };
      // Warm-up (JIT, WASM, buffers), then the baseline RSS.
      for (const on of instances) {
        for (let i = 0; i < 20; i++) await send(on, { prompt: "A", max_tokens: 4 });
      }
      const rssBefore = await Promise.all(instances.map((i) => i.rss()));
      const redisBefore = await redisUsedMemory(redis.port);

      const latencies: number[] = [];
      const t0 = performance.now();
      const run = (from: number, to: number) =>
        pool(to - from, IN_FLIGHT, async (j) => {
          const s = from + j;
          let id: string | null = null;
          let tokens = 0;
          for (let k = 0; k < REQUESTS; k++) {
            const on = instances[(s + k) % 2];
            const body: Record<string, unknown> = k === 0
              ? { prompt: `ROMEO ${s}:`, max_tokens: 4, temperature: 0.8, seed: s }
              : { session: id, prompt: " and", max_tokens: 4 };
            const t = performance.now();
            const r = await send(on, body);
            latencies.push(performance.now() - t);
            id = r.session as string;
            assert.ok(id, `request ${k} of session ${s} was not stored`);
            const u = r.usage as { prompt_tokens: number; completion_tokens: number };
            tokens += u.prompt_tokens + u.completion_tokens;
          }
          return { id: id!, tokens };
        });
      // Two halves: memory after the first half is the plateau the second half must stay near.
      const half = Math.floor(SESSIONS / 2);
      const results = await run(0, half);
      const rssHalf = await Promise.all(instances.map((i) => i.rss()));
      results.push(...await run(half, SESSIONS));
      const seconds = (performance.now() - t0) / 1000;

      // No lost session: each holds exactly what its responses added, at generation REQUESTS.
      await pool(results.length, IN_FLIGHT, async (i) => {
        const { id, tokens } = results[i];
        const info = await json(await fetch(`${instances[i % 2].url}/v1/sessions/${id}`));
        assert.equal(info.tokens, tokens, `session ${id}: tokens`);
        assert.equal(info.generation, REQUESTS, `session ${id}: generation`);
      });
      const rssAfter = await Promise.all(instances.map((i) => i.rss()));
      const redisAfter = await redisUsedMemory(redis.port);
      latencies.sort((a, b) => a - b);
      const q = (p: number) => Math.round(latencies[Math.floor(p * (latencies.length - 1))]);
      const report = {
        sessions: SESSIONS,
        requestsPerSession: REQUESTS,
        requests: SESSIONS * REQUESTS,
        errors: 0,
        lostSessions: 0,
        seconds: Number(seconds.toFixed(1)),
        requestsPerSecond: Number((SESSIONS * REQUESTS / seconds).toFixed(1)),
        latencyMs: { p50: q(0.5), p95: q(0.95), p99: q(0.99), max: q(1) },
        rssMiB: instances.map((_, i) => ({
          warm: mib(rssBefore[i]),
          half: mib(rssHalf[i]),
          end: mib(rssAfter[i]),
        })),
        redisUsedMiB: { before: Math.round(redisBefore / MB), after: Math.round(redisAfter / MB) },
      };
      console.log(JSON.stringify(report));
      for (let i = 0; i < 2; i++) {
        const [warm, mid, end] = [rssBefore[i], rssHalf[i], rssAfter[i]];
        if (warm === null || mid === null || end === null) continue;
        assert.ok(end - warm < 256 * MB, `instance ${i}: ${mib(warm)} → ${mib(end)} MiB`);
        assert.ok(end - mid < 96 * MB, `instance ${i}: ${mib(mid)} → ${mib(end)} MiB (2nd half)`);
      }
    } finally {
      await Promise.all(instances.map((i) => i.kill()));
      await redis.stop();
    }
  },
});
