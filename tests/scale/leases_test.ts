/**
 * Session leases of the shared stores (Redis, Deno KV): one owner at a time, expiry, renewal,
 * owner-checked release, and exactly one winner among concurrent claimants. Then the session
 * manager over a leasing store: a second "process" (its own manager) gets 409 while the first holds
 * the session, and checkpoints written mid-generation advance the stored generation.
 * @module
 */

import assert from "node:assert/strict";
import { Session } from "../../src/engine/session.ts";
import { toHttpError } from "../../src/http/errors.ts";
import { TnlError } from "../../src/errors.ts";
import { SessionManager } from "../../src/sessions/manager.ts";
import { loadModel } from "../../src/load.ts";
import { KvSessionStore } from "../../src/state/kv_store.ts";
import { RedisSessionStore } from "../../src/state/redis_store.ts";
import type { SessionStore } from "../../src/state/store.ts";
import { redisIgnore, type RedisServer, startRedis } from "./support.ts";

const redisIgnored = await redisIgnore();
let redis: RedisServer | null = null;
let n = 0;

const kinds: [string, () => Promise<SessionStore>, string | false][] = [
  ["kv", () => KvSessionStore.open(":memory:", { sweepIntervalMs: 0 }), false],
  [
    "redis",
    async () => {
      redis ??= await startRedis();
      return await RedisSessionStore.connect(redis.url, { prefix: `l${n++}:` });
    },
    redisIgnored,
  ],
];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

for (const [kind, open, ignore] of kinds) {
  const t = (name: string, fn: (s: SessionStore) => Promise<void>) =>
    Deno.test({
      name: `leases (${kind}): ${name}`,
      ignore: Boolean(ignore),
      sanitizeOps: false,
      sanitizeResources: false,
      async fn() {
        const s = await open();
        try {
          await fn(s);
        } finally {
          await s.close();
        }
      },
    });

  t("one owner at a time; owner-checked renew and release; expiry", async (s) => {
    const l = s.leases!;
    assert.ok(l);
    assert.equal(await l.acquire("s1", "a", 300), true);
    assert.equal(await l.acquire("s1", "b", 300), false);
    assert.equal(await l.renew("s1", "b", 300), false);
    assert.equal(await l.renew("s1", "a", 300), true);
    await l.release("s1", "b"); // not b's: nothing happens
    assert.equal(await l.acquire("s1", "b", 300), false);
    await l.release("s1", "a");
    assert.equal(await l.acquire("s1", "b", 200), true);
    await sleep(350); // b's lease expires
    assert.equal(await l.acquire("s1", "c", 1000), true);
    assert.equal(await l.renew("s1", "b", 1000), false, "a lapsed lease taken by another");
    await l.release("s1", "c");
    assert.equal(await l.renew("s1", "c", 1000), true, "a lapsed lease nobody took is retaken");
    await assert.rejects(l.acquire("bad id!", "a", 10));
    await assert.rejects(l.acquire("s2", "", 10));
  });

  t("20 concurrent claimants: exactly one wins", async (s) => {
    const wins = await Promise.all(
      Array.from({ length: 20 }, (_, i) => s.leases!.acquire("hot", `o${i}`, 5000)),
    );
    assert.equal(wins.filter(Boolean).length, 1);
  });

  t("session manager: another process gets 409 while one holds it; checkpoints land", async (s) => {
    const model = await loadModel(undefined, { backend: "cpu" });
    try {
      const mk = () =>
        new SessionManager({
          model,
          engine: model.engine(),
          store: s,
          modelId: "m",
          cacheSize: 0,
          leaseMs: 500,
        });
      const [p1, p2] = [mk(), mk()];
      const created = await p1.create("shared");
      await created.save();
      await created.release();
      const held = await p1.open("shared");
      await assert.rejects(
        p2.open("shared"),
        // The session room raises a code; the HTTP layer answers 409 with Retry-After.
        (e: unknown) =>
          e instanceof TnlError && e.code === "conflict" && toHttpError(e).status === 409 &&
          toHttpError(e).headers["retry-after"] === "1",
      );
      // Held past its TTL: renewals keep it.
      await sleep(800);
      await assert.rejects(p2.open("shared"), (e: unknown) => e instanceof TnlError);
      // Checkpoints: generate 40 tokens, one every 10, then save.
      const ids = model.tokenizer.encode("ROMEO:");
      for await (
        const _ of model.engine().generate({
          session: held.session,
          prompt: ids,
          maxTokens: 40,
          sampling: { temperature: 0 },
          checkpointEvery: 10,
          onCheckpoint: (snap) => held.checkpoint(snap),
        })
      ) { /* run */ }
      const { bytes } = await held.save();
      assert.ok(held.checkpoints.written >= 1, `checkpoints ${JSON.stringify(held.checkpoints)}`);
      assert.equal(held.checkpoints.failed, 0);
      const entry = await s.getEntry("shared");
      assert.equal(entry!.generation, 1 + held.checkpoints.written + 1);
      assert.deepEqual(entry!.bytes, bytes);
      await held.release();
      const again = await p2.open("shared");
      assert.ok(again.session instanceof Session);
      assert.equal(again.session.length, held.session.length);
      await again.release();
    } finally {
      await model.dispose();
    }
  });
}

Deno.test({
  name: "leases: stop the test Redis",
  ignore: Boolean(redisIgnored),
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    await redis?.stop();
  },
});
