/**
 * The engine on both backends: batching does not change results, a resumed session continues
 * exactly, a stop string found mid-submission rewinds the state to the kept token, cancellation
 * frees the slot and keeps the session consistent, backpressure and conflicts are typed errors.
 */

import assert from "node:assert/strict";
import { CpuBackend } from "../../src/cpu/mod.ts";
import type { Backend } from "../../src/engine/backend.ts";
import { Engine, type GenerateEvent } from "../../src/engine/engine.ts";
import { Session } from "../../src/engine/session.ts";
import { TnlError } from "../../src/errors.ts";
import { WebGpuBackend } from "../../src/gpu/backend.ts";
import { WorkerBackend } from "../../src/worker/backend.ts";
import { loadConfig } from "../../src/model/config.ts";
import { openSafetensors } from "../../src/model/weights/safetensors.ts";
import { Tokenizer } from "../../src/tokenizer/tokenizer.ts";
import { gpuContext } from "../gpu/support.ts";
import { DEFAULT_MODEL_DIR } from "../fixtures.ts";
import { runRequest } from "../support/engine.ts";

const config = await loadConfig(DEFAULT_MODEL_DIR + "config.json");
const tokenizer = await Tokenizer.load(DEFAULT_MODEL_DIR + "tokenizer.model");

async function makeBackend(kind: "cpu" | "webgpu" | "worker"): Promise<Backend> {
  if (kind === "worker") {
    const spec = { dir: DEFAULT_MODEL_DIR, quantize: "none" as const };
    return await WorkerBackend.load({ ...spec, options: { maxSlots: 12, maxBatch: 8 } }, config);
  }
  const src = await openSafetensors(DEFAULT_MODEL_DIR + "model.safetensors");
  try {
    if (kind === "cpu") return await CpuBackend.load(src, config, "default");
    const ctx = (await gpuContext())!;
    return await WebGpuBackend.load(src, config, "default", {
      context: ctx,
      maxSlots: 12,
      maxBatch: 8,
    });
  } finally {
    src.close();
  }
}

const run = runRequest;

const prompt = (s: string) => tokenizer.encode(s);
const hasGpu = (await gpuContext()) !== null;
const requireGpu = Deno.env.get("TNL_REQUIRE_GPU") === "1";

for (const kind of ["cpu", "webgpu", "worker"] as const) {
  const ignore = kind !== "cpu" && !hasGpu && !requireGpu;
  const test = (name: string, fn: (engine: Engine, backend: Backend) => Promise<void>) =>
    Deno.test({
      name: `engine (${kind}): ${name}`,
      ignore,
      sanitizeResources: false,
      sanitizeOps: false,
      fn: async () => {
        const backend = await makeBackend(kind);
        const engine = new Engine(backend, tokenizer, { stepsPerSync: 8 });
        try {
          await fn(engine, backend);
        } finally {
          await engine.close(true);
          await backend.dispose();
        }
      },
    });

  test("concurrent requests give the tokens each gives alone", async (engine) => {
    const reqs = [
      { p: "ROMEO:", sampling: { temperature: 0 } },
      { p: "JULIET:\nO", sampling: { temperature: 0.9, seed: 7 } },
      { p: "First Citizen:", sampling: { temperature: 1.1, topK: 30, seed: 11 } },
      { p: "KING", sampling: { temperature: 0.8, topP: 0.9, repetitionPenalty: 1.1, seed: 3 } },
    ];
    const alone: Awaited<ReturnType<typeof run>>[] = [];
    for (const r of reqs) {
      alone.push(
        await run(engine, {
          session: engine.newSession(),
          prompt: prompt(r.p),
          sampling: r.sampling,
          maxTokens: 12,
        }),
      );
    }
    const together = await Promise.all(
      reqs.map((r) =>
        run(engine, {
          session: engine.newSession(),
          prompt: prompt(r.p),
          sampling: r.sampling,
          maxTokens: 12,
        })
      ),
    );
    together.forEach((t, i) => assert.deepEqual(t.tokens, alone[i].tokens, `request ${i}`));
    assert.equal(engine.stats().running, 0);
  });

  test("a session resumed from its snapshot continues exactly (greedy and seeded)", async (engine) => {
    for (const sampling of [{ temperature: 0 }, { temperature: 0.9, seed: 42 }]) {
      const whole = await run(engine, {
        session: engine.newSession(),
        prompt: prompt("ROMEO:"),
        sampling,
        maxTokens: 20,
      });
      const s1 = engine.newSession();
      const first = await run(engine, {
        session: s1,
        prompt: prompt("ROMEO:"),
        sampling,
        maxTokens: 7,
      });
      // Through plain data, as the codec would carry it, into a new session object.
      const snap = structuredClone(s1.toSnapshot());
      const s2 = Session.fromSnapshot(config, snap);
      const { seed: _seed, ...noSeed } = sampling as { seed?: number };
      const rest = await run(engine, { session: s2, prompt: [], sampling: noSeed, maxTokens: 13 });
      assert.deepEqual([...first.tokens, ...rest.tokens], whole.tokens, JSON.stringify(sampling));
      assert.equal(s2.state.position + 1, s2.length, "all but the pending token consumed");
    }
  });

  test(
    "a stop string ends the state at the kept token, as if decoding had never run past it",
    async (engine, backend) => {
      const sampling = { temperature: 0 };
      const free = await run(engine, {
        session: engine.newSession(),
        prompt: prompt("ROMEO:"),
        sampling,
        maxTokens: 24,
      });
      // A stop string from the middle of the greedy text.
      const stop = free.text.slice(10, 14);
      assert.ok(stop.trim().length >= 2, `stop string ${JSON.stringify(stop)}`);
      const a = engine.newSession();
      const ra = await run(engine, {
        session: a,
        prompt: prompt("ROMEO:"),
        sampling,
        maxTokens: 24,
        stop: [stop],
      });
      assert.equal(ra.done.finishReason, "stop");
      assert.ok(!ra.text.includes(stop));
      // The same with one token per submission (no overshoot possible).
      const one = new Engine(backend, tokenizer, { stepsPerSync: 1 });
      const b = one.newSession();
      const rb = await run(one, {
        session: b,
        prompt: prompt("ROMEO:"),
        sampling,
        maxTokens: 24,
        stop: [stop],
      });
      assert.deepEqual(ra.tokens, rb.tokens);
      assert.equal(a.pending, b.pending);
      assert.equal(a.state.position, b.state.position);
      a.state.layers.forEach((l, i) => {
        let differ = 0;
        for (let k = 0; k < l.length; k++) if (l[k] !== b.state.layers[i][k]) differ++;
        assert.equal(differ, 0, `layer ${i}: ${differ} values differ`);
      });
      await one.close();
    },
  );

  test("cancellation stops at a step boundary, frees the slot, keeps the session consistent", async (engine) => {
    const ac = new AbortController();
    const s = engine.newSession();
    let n = 0;
    let done: Extract<GenerateEvent, { type: "done" }> | null = null;
    for await (
      const e of engine.generate({
        session: s,
        prompt: prompt("ROMEO:"),
        maxTokens: 200,
        signal: ac.signal,
      })
    ) {
      if (e.type === "token") {
        if (++n === 3) ac.abort();
      } else done = e;
    }
    assert.equal(done!.finishReason, "cancelled");
    assert.ok(done!.usage.completionTokens < 200);
    assert.equal(s.busy, false);
    assert.equal(s.state.position + 1, s.length);
    assert.equal(engine.stats().running, 0);
    // The session continues from where it stopped.
    const more = await run(engine, { session: s, prompt: [], maxTokens: 3 });
    assert.equal(more.tokens.length, 3);
  });

  test("bad requests, a busy session and a full queue are typed errors", async (engine) => {
    assert.throws(
      () => engine.generate({ session: engine.newSession(), prompt: [], maxTokens: 3 }),
      /empty/,
    );
    assert.throws(
      () => engine.generate({ session: engine.newSession(), prompt: [99999], maxTokens: 3 }),
      /vocabulary/,
    );
    assert.throws(
      () => engine.generate({ session: engine.newSession(), prompt: [1], maxTokens: -1 }),
      /max_tokens/,
    );
    const s = engine.newSession();
    const it = engine.generate({ session: s, prompt: prompt("A"), maxTokens: 2 });
    assert.throws(
      () => engine.generate({ session: s, prompt: prompt("B"), maxTokens: 2 }),
      (e: unknown) => e instanceof TnlError && e.code === "conflict",
    );
    for await (const _ of it) { /* drain */ }
    const small = new Engine(engine.backend, tokenizer, { maxQueue: 1, maxBatch: 1 });
    const first = small.generate({
      session: small.newSession(),
      prompt: prompt("A"),
      maxTokens: 4,
    });
    const second = small.generate({
      session: small.newSession(),
      prompt: prompt("B"),
      maxTokens: 4,
    });
    assert.throws(
      () => small.generate({ session: small.newSession(), prompt: prompt("C"), maxTokens: 4 }),
      (e: unknown) => e instanceof TnlError && e.code === "overloaded",
    );
    for await (const _ of first) { /* drain */ }
    for await (const _ of second) { /* drain */ }
    await small.close();
  });

  test("max_tokens 0 only consumes the prompt; a later request generates from it", async (engine) => {
    const s = engine.newSession();
    const r = await run(engine, { session: s, prompt: prompt("ROMEO:\nWhat"), maxTokens: 0 });
    assert.deepEqual(r.tokens, []);
    assert.equal(r.done.finishReason, "length");
    const direct = await run(engine, {
      session: engine.newSession(),
      prompt: prompt("ROMEO:\nWhat"),
      sampling: { temperature: 0 },
      maxTokens: 5,
    });
    const later = await run(engine, {
      session: s,
      prompt: [],
      sampling: { temperature: 0 },
      maxTokens: 5,
    });
    assert.deepEqual(later.tokens, direct.tokens);
  });
}
