/**
 * Scale-out on Redis: two `main.ts serve` instances (subprocesses, no shared memory) on two ports
 * share sessions through one `redis-server`, as behind any HTTP load balancer.
 *
 * - a session continued alternately on A and B gives exactly the tokens (and the bit-exact final
 *   state) of one uninterrupted run, greedy and with seeded sampling;
 * - two instances never generate for one session at once: the loser gets 409 with Retry-After;
 * - kill -9 of an instance mid-generation: another instance resumes from the last checkpoint
 *   (every 16 tokens here) once the dead instance's lease expires, and regenerates the rest
 *   identically.
 * @module
 */

import assert from "node:assert/strict";
import { loadModel } from "../../src/load.ts";
import type { SessionSnapshot } from "../../src/model/snapshot.ts";
import { decodeSession } from "../../src/state/codec.ts";
import {
  type Instance,
  json,
  postJson,
  redisIgnore,
  type RedisServer,
  startRedis,
  startServer,
} from "./support.ts";

const ignore = await redisIgnore();
const SECRET = "scale-out test secret";
const LEASE_MS = 1500;
const CHECKPOINT = 16;

let redis: RedisServer | null = null;
let a: Instance | null = null;
let b: Instance | null = null;
const model = ignore ? null : loadModel(undefined, { backend: "cpu" });

async function setup(): Promise<[Instance, Instance]> {
  if (!redis) {
    redis = await startRedis();
    const args = [
      "--store",
      redis.url,
      "--state-secret",
      SECRET,
      "--checkpoint-tokens",
      String(CHECKPOINT),
      "--lease-ms",
      String(LEASE_MS),
    ];
    [a, b] = await Promise.all([startServer(args), startServer(args)]);
  }
  return [a!, b!];
}

const stest = (name: string, fn: () => Promise<void>) =>
  Deno.test({
    name: `scale-out: ${name}`,
    ignore: Boolean(ignore),
    sanitizeOps: false,
    sanitizeResources: false,
    fn,
  });

/** Create a session prefilled with `prompt` on `url`; returns its id. */
async function create(url: string, prompt: string): Promise<string> {
  const r = await json(await postJson(`${url}/v1/sessions`, { prompt }), 201);
  return r.id as string;
}

/** Continue session `id` on `url`; returns the response body. */
async function cont(url: string, id: string, body: Record<string, unknown>) {
  return await json(await postJson(`${url}/v1/sessions/${id}/completions`, body));
}

/** The stored state of session `id`, decoded against the model. */
async function stateOf(url: string, id: string): Promise<SessionSnapshot> {
  const res = await fetch(`${url}/v1/sessions/${id}/state`);
  assert.equal(res.status, 200);
  const m = await model!;
  return await decodeSession(new Uint8Array(await res.arrayBuffer()), {
    config: m.config,
    modelFingerprint: m.fingerprint,
    tokenizerFingerprint: m.tokenizer.fingerprint,
    secret: SECRET,
  });
}

/**
 * Assert two snapshots hold the same history, pending token, RNG draws (and seed, when `seeded`)
 * and bit-identical layers.
 */
function assertSameSession(x: SessionSnapshot, y: SessionSnapshot, seeded = false): void {
  assert.deepEqual(Array.from(x.tokens!), Array.from(y.tokens!), "token history");
  assert.equal(x.pending, y.pending, "pending token");
  assert.equal(x.state.position, y.state.position, "position");
  assert.equal(x.rng.counter, y.rng.counter, "rng draws");
  if (seeded) assert.equal(x.rng.seed, y.rng.seed, "rng seed");
  assert.equal(x.state.layers.length, y.state.layers.length);
  for (let l = 0; l < x.state.layers.length; l++) {
    const bx = new Uint8Array(x.state.layers[l].buffer);
    const by = new Uint8Array(y.state.layers[l].buffer);
    assert.ok(bx.length === by.length && bx.every((v, i) => v === by[i]), `layer ${l} bits`);
  }
}

stest("alternating A, B, A, B continues exactly as one run (greedy, then seeded)", async () => {
  const [A, B] = await setup();
  for (const sampling of [{ temperature: 0 }, { temperature: 0.9, seed: 11 }]) {
    const ref = await create(A.url, "JULIET:");
    const one = await cont(B.url, ref, { max_tokens: 40, ...sampling });
    const id = await create(B.url, "JULIET:");
    let text = "";
    for (let i = 0; i < 4; i++) {
      const on = i % 2 === 0 ? A : B;
      const r = await cont(on.url, id, { max_tokens: 10, ...(i === 0 ? sampling : {}) });
      text += (r.choices as { text: string }[])[0].text;
    }
    assert.equal(text, (one.choices as { text: string }[])[0].text);
    assertSameSession(await stateOf(A.url, id), await stateOf(B.url, ref), "seed" in sampling);
  }
});

stest("two instances never generate for one session at once: the loser gets 409", async () => {
  const [A, B] = await setup();
  const id = await create(A.url, "ROMEO:");
  const res = await postJson(`${A.url}/v1/sessions/${id}/completions`, {
    max_tokens: 3000,
    stream: true,
  });
  assert.equal(res.status, 200);
  const reader = res.body!.getReader();
  await reader.read(); // the generation runs on A
  const other = await postJson(`${B.url}/v1/sessions/${id}/completions`, { max_tokens: 1 });
  const body = await json(other, 409);
  assert.equal((body.error as { code: string }).code, "conflict");
  assert.equal(other.headers.get("retry-after"), "1");
  const same = await postJson(`${A.url}/v1/sessions/${id}/completions`, { max_tokens: 1 });
  await json(same, 409);
  // The client goes away: A cancels at the next step and releases the lease; then B may have it.
  await reader.cancel();
  const t0 = Date.now();
  for (;;) {
    const r = await postJson(`${B.url}/v1/sessions/${id}/completions`, { max_tokens: 2 });
    if (r.status === 200) {
      assert.equal((await r.json()).usage.completion_tokens, 2);
      break;
    }
    await json(r, 409);
    assert.ok(Date.now() - t0 < 3000, "the lease was not released after the client went away");
    await new Promise((res) => setTimeout(res, 20));
  }
});

stest(
  "kill -9 mid-generation: B resumes from the last checkpoint and regenerates identically",
  async () => {
    const [, B] = await setup();
    const victim = await startServer([
      "--store",
      redis!.url,
      "--state-secret",
      SECRET,
      "--checkpoint-tokens",
      String(CHECKPOINT),
      "--lease-ms",
      String(LEASE_MS),
    ]);
    const TOTAL = 1024;
    const prompt = "KING RICHARD III:";
    // The reference: one uninterrupted run.
    const ref = await create(B.url, prompt);
    const refText = ((await cont(B.url, ref, { max_tokens: TOTAL, temperature: 0 })).choices as {
      text: string;
    }[])[0]
      .text;
    const reference = await stateOf(B.url, ref);
    const promptLen = (await stateOf(B.url, await create(B.url, prompt))).tokens!.length;

    const id = await create(victim.url, prompt);
    const res = await postJson(`${victim.url}/v1/sessions/${id}/completions`, {
      max_tokens: TOTAL,
      temperature: 0,
      stream: true,
    });
    assert.equal(res.status, 200);
    let received = 0;
    let seenText = "";
    const reader = res.body!.getReader();
    const dec = new TextDecoder();
    let buf = "";
    // Generation has begun once text arrives (a chunk may carry several tokens: one per stream
    // per decode round).
    while (received < 1) {
      const { done, value } = await reader.read();
      assert.ok(!done, "the stream ended before any text");
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const ev = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const data = ev.replace(/^data: /, "");
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.choices?.[0]?.text !== undefined) {
          received++;
          seenText += chunk.choices[0].text;
        }
      }
    }
    // Checkpoints are written in the background, so a streamed token is no proof that one landed:
    // wait until the store holds one (the victim keeps generating meanwhile), then kill.
    const waitFrom = Date.now();
    for (;;) {
      const stored = (await stateOf(B.url, id)).tokens!.length - promptLen;
      if (stored >= CHECKPOINT) break;
      assert.ok(Date.now() - waitFrom < 30_000, "no checkpoint was stored within 30 s");
      await new Promise((res) => setTimeout(res, 10));
    }
    assert.equal(await victim.kill("SIGKILL"), 128);
    reader.cancel().catch(() => {});

    // The last checkpoint is in Redis: a complete, valid state (decoded and checked here).
    const saved = await stateOf(B.url, id);
    const done = saved.tokens!.length - promptLen;
    // A checkpoint is written at the end of a decode round once at least CHECKPOINT tokens were
    // generated since the last one (a round may decode several steps).
    assert.ok(done >= CHECKPOINT && done < TOTAL, `checkpointed at ${done} generated tokens`);
    assert.deepEqual(
      Array.from(saved.tokens!),
      Array.from(reference.tokens!.subarray(0, saved.tokens!.length)),
    );

    // B continues once the dead instance's lease has expired (409 with Retry-After until then).
    const t0 = Date.now();
    let r: Response;
    for (;;) {
      r = await postJson(`${B.url}/v1/sessions/${id}/completions`, { max_tokens: TOTAL - done });
      if (r.status !== 409) break;
      assert.equal(r.headers.get("retry-after"), "1");
      await r.body?.cancel();
      assert.ok(Date.now() - t0 < LEASE_MS * 4, "the lease did not expire");
      await new Promise((res) => setTimeout(res, 100));
    }
    const body = await json(r);
    assert.equal((body.usage as { completion_tokens: number }).completion_tokens, TOTAL - done);
    assertSameSession(await stateOf(B.url, id), reference);
    // What the client saw before the kill is a prefix of the reference text.
    assert.ok(refText.startsWith(seenText), "streamed text is a prefix of the reference");
  },
);

stest("stop the instances and Redis", async () => {
  await Promise.all([a?.kill(), b?.kill()]);
  await redis?.stop();
  (await model)?.dispose();
});
