/**
 * Redis faults under a running instance (`main.ts serve --store redis://...`, checkpoints every 8
 * tokens): Redis killed (SIGKILL) and restarted on the same port and data (append-only file).
 *
 * - while Redis is down, requests on stored sessions fail fast (well under 2 s) with 503 and
 *   Retry-After; a new completion still answers, unsaved (`session: null`);
 * - once Redis is back, the same requests succeed again, and the session continues exactly;
 * - Redis killed while many generations are writing checkpoints: after the restart, every stored
 *   state decodes (signature, shapes, history invariant) and is a prefix of the uninterrupted run:
 *   a write is either complete or not visible (value first, then an atomic flip).
 * @module
 */

import assert from "node:assert/strict";
import { loadModel } from "../../src/load.ts";
import { decodeSession } from "../../src/state/codec.ts";
import { json, postJson, redisIgnore, startRedis, startServer } from "./support.ts";

const ignore = await redisIgnore();
const SECRET = "fault test secret";

Deno.test({
  name: "redis faults: 503 fast while down, recovery after restart, never a half-written state",
  ignore: Boolean(ignore),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const redis = await startRedis();
    const server = await startServer([
      "--store",
      redis.url,
      "--state-secret",
      SECRET,
      "--checkpoint-tokens",
      "8",
      "--lease-ms",
      "1000",
    ]);
    const model = await loadModel(undefined, { backend: "cpu" });
    const url = server.url;
    const create = async () =>
      (await json(await postJson(`${url}/v1/sessions`, { prompt: "HAMLET:" }), 201)).id as string;
    const cont = (id: string, max: number) =>
      postJson(`${url}/v1/sessions/${id}/completions`, { max_tokens: max, temperature: 0 });
    const text = async (r: Response) => ((await json(r)).choices as { text: string }[])[0].text;
    try {
      // The reference: 10 + 10 tokens without faults.
      const ref = await create();
      const refText = await text(await cont(ref, 10)) + await text(await cont(ref, 10));
      const id = await create();
      const first = await text(await cont(id, 10));

      await redis.kill("SIGKILL");
      for (const req of [() => cont(id, 10), () => fetch(`${url}/v1/sessions/${id}`)]) {
        const t0 = performance.now();
        const r = await req();
        const ms = performance.now() - t0;
        const body = await json(r, 503);
        assert.equal(r.headers.get("retry-after"), "1");
        assert.ok(ms < 1500, `503 after ${ms.toFixed(0)} ms`);
        console.error(`503 in ${ms.toFixed(0)} ms`);
        assert.equal((body.error as { type: string }).type, "server_error");
      }
      const fresh = await json(
        await postJson(`${url}/v1/completions`, { prompt: "A", max_tokens: 2 }),
      );
      assert.equal(fresh.session, null);

      await redis.start();
      const t0 = performance.now();
      let r: Response;
      for (;;) {
        r = await cont(id, 10);
        if (r.status !== 503) break;
        await r.body?.cancel();
        assert.ok(performance.now() - t0 < 10_000, "no recovery within 10 s of the restart");
        await new Promise((res) => setTimeout(res, 50));
      }
      console.error(`recovered ${(performance.now() - t0).toFixed(0)} ms after the restart`);
      assert.equal(first + await text(r), refText);

      // Kill Redis while 6 streams write checkpoints, restart, and check every stored state.
      const ids = await Promise.all(Array.from({ length: 6 }, create));
      const refLong = await create();
      await text(await cont(refLong, 600));
      const reference = (await fetchState(url, refLong, model)).tokens!;
      const streams = ids.map((sid) =>
        postJson(`${url}/v1/sessions/${sid}/completions`, {
          max_tokens: 600,
          temperature: 0,
          stream: true,
        }).then((res) => res.text())
      );
      await new Promise((res) => setTimeout(res, 400));
      await redis.kill("SIGKILL");
      await Promise.all(streams);
      await redis.start();
      const lengths: number[] = [];
      for (const sid of ids) {
        let st;
        for (const t1 = performance.now();;) {
          try {
            st = await fetchState(url, sid, model);
            break;
          } catch (e) {
            if (performance.now() - t1 > 10_000) throw e;
            await new Promise((res) => setTimeout(res, 50));
          }
        }
        const toks = Array.from(st.tokens!);
        assert.deepEqual(toks, Array.from(reference.subarray(0, toks.length)));
        lengths.push(toks.length);
      }
      console.error(
        `stored histories after the crash: ${lengths.join(", ")} of ${reference.length}`,
      );
      assert.ok(lengths.some((n) => n < reference.length), "Redis died before the streams ended");
    } finally {
      await server.kill();
      await redis.stop();
      await model.dispose();
    }
  },
});

/** The stored state of a session, decoded and checked (throws on a 503 or an invalid state). */
async function fetchState(url: string, id: string, model: Awaited<ReturnType<typeof loadModel>>) {
  const res = await fetch(`${url}/v1/sessions/${id}/state`);
  if (res.status !== 200) {
    await res.body?.cancel();
    throw new Error(`state of ${id}: HTTP ${res.status}`);
  }
  return await decodeSession(new Uint8Array(await res.arrayBuffer()), {
    config: model.config,
    modelFingerprint: model.fingerprint,
    tokenizerFingerprint: model.tokenizer.fingerprint,
    secret: SECRET,
  });
}
