/**
 * The engine's decode rounds continued on the device (`EngineOptions.decodeAhead`, WebGPU directly
 * and in a worker): the same tokens and the same kept states, bit for bit, as rounds one after
 * another; a request cancelled while its round is continued keeps a session whose state holds
 * exactly its transcript (the same request run to that length leaves the same state bits).
 */

import assert from "node:assert/strict";
import type { Backend } from "../../src/engine/backend.ts";
import { Engine, type GenerateRequest } from "../../src/engine/engine.ts";
import type { ModelState } from "../../src/model/state.ts";
import { WebGpuBackend } from "../../src/gpu/backend.ts";
import { WorkerBackend } from "../../src/worker/backend.ts";
import { loadConfig } from "../../src/model/config.ts";
import { openSafetensors } from "../../src/model/weights/safetensors.ts";
import { Tokenizer } from "../../src/tokenizer/tokenizer.ts";
import { sameStates } from "../gpu/harness.ts";
import { gpuContext } from "../gpu/support.ts";
import { DEFAULT_MODEL_DIR } from "../fixtures.ts";
import { runRequest } from "../support/engine.ts";

const config = await loadConfig(DEFAULT_MODEL_DIR + "config.json");
const tokenizer = await Tokenizer.load(DEFAULT_MODEL_DIR + "tokenizer.model");
const ignore = (await gpuContext()) === null && Deno.env.get("TNL_REQUIRE_GPU") !== "1";

async function makeBackend(kind: "webgpu" | "worker"): Promise<Backend> {
  if (kind === "worker") {
    const spec = { dir: DEFAULT_MODEL_DIR, quantize: "none" as const };
    return await WorkerBackend.load({ ...spec, options: { maxSlots: 12, maxBatch: 8 } }, config);
  }
  const src = await openSafetensors(DEFAULT_MODEL_DIR + "model.safetensors");
  return await WebGpuBackend.load(src, config, "default", {
    context: (await gpuContext())!,
    maxSlots: 12,
    maxBatch: 8,
  }).finally(() => src.close());
}

/** Two-step rounds, so a short request runs many of them. */
const engineFor = (backend: Backend, decodeAhead: boolean) =>
  new Engine(backend, tokenizer, {
    stepsPerSync: 8,
    roundMs: { busy: 1, steady: 1, continued: 1 },
    decodeAhead,
  });

const REQUESTS: Omit<GenerateRequest, "session">[] = [
  { prompt: tokenizer.encode("ROMEO:"), sampling: { temperature: 0 }, maxTokens: 30 },
  {
    prompt: tokenizer.encode("JULIET:\nO"),
    sampling: { temperature: 0.9, seed: 7, topK: 30 },
    maxTokens: 23,
  },
  {
    prompt: tokenizer.encode("KING"),
    sampling: { temperature: 0.8, topP: 0.9, repetitionPenalty: 1.1, seed: 3 },
    maxTokens: 30,
  },
];

for (const kind of ["webgpu", "worker"] as const) {
  Deno.test({
    name: `engine (${kind}): rounds continued on the device give the same tokens and states`,
    ignore,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const backend = await makeBackend(kind);
      try {
        const results = [];
        for (const decodeAhead of [false, true]) {
          const engine = engineFor(backend, decodeAhead);
          const sessions = REQUESTS.map(() => engine.newSession());
          // The steps-per-round estimate first, so the rounds of the requests below can continue.
          await runRequest(engine, { ...REQUESTS[0], session: engine.newSession() });
          // Checkpoints read states mid-request: never one the device has continued past.
          const checkpoints: { tokens: number; state: ModelState }[][] = REQUESTS.map(() => []);
          const out = await Promise.all(
            REQUESTS.map((r, i) =>
              runRequest(engine, {
                ...r,
                session: sessions[i],
                checkpointEvery: 7,
                onCheckpoint: (snap) =>
                  checkpoints[i].push({ tokens: snap.tokens?.length ?? 0, state: snap.state }),
              })
            ),
          );
          results.push({
            tokens: out.map((o) => o.tokens),
            states: sessions.map((s) => s.state),
            continued: engine.stats().continuedRounds,
            checkpoints,
          });
          await engine.close();
        }
        const [plain, ahead] = results;
        assert.equal(plain.continued, 0);
        assert.ok(ahead.continued >= 5, `${ahead.continued} rounds continued`);
        assert.deepEqual(ahead.tokens, plain.tokens);
        const counts = (r: typeof plain) => r.checkpoints.map((c) => c.map((x) => x.tokens));
        assert.ok(plain.checkpoints.every((c) => c.length >= 2), JSON.stringify(counts(plain)));
        assert.deepEqual(counts(ahead), counts(plain));
        sameStates(
          ahead.checkpoints.flat().map((c) => c.state),
          plain.checkpoints.flat().map((c) => c.state),
        );
        sameStates(ahead.states, plain.states);
      } finally {
        await backend.dispose();
      }
    },
  });
}

Deno.test({
  name: "engine (webgpu): stop strings found in continued rounds rewind to the same bits",
  ignore,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const backend = await makeBackend("webgpu");
    try {
      const request = {
        prompt: tokenizer.encode("KING"),
        sampling: { temperature: 0.8, seed: 5 },
        maxTokens: 48,
      };
      const plain = engineFor(backend, false);
      const free = await runRequest(plain, { ...request, session: plain.newSession() });
      // Stop strings from the text at several places, so some fall on a round's last token.
      for (const at of [14, 19, 25, 31]) {
        const stop = [free.text.slice(at, at + 3)];
        const results = [];
        for (const decodeAhead of [false, true]) {
          const engine = engineFor(backend, decodeAhead);
          await runRequest(engine, { ...REQUESTS[0], session: engine.newSession() });
          const session = engine.newSession();
          const r = await runRequest(engine, { ...request, stop, session });
          results.push({
            tokens: r.tokens,
            text: r.text,
            reason: r.done.finishReason,
            state: session.state,
            continued: engine.stats().continuedRounds,
          });
          await engine.close();
        }
        const [p, a] = results;
        assert.equal(p.reason, "stop", `stop ${JSON.stringify(stop)}`);
        assert.ok(a.continued > 0, `stop ${JSON.stringify(stop)}: rounds continued`);
        assert.deepEqual(
          [a.tokens, a.text, a.reason],
          [p.tokens, p.text, p.reason],
        );
        sameStates([a.state], [p.state]); // positions and bits
      }
      await plain.close();
    } finally {
      await backend.dispose();
    }
  },
});

Deno.test({
  name: "engine (webgpu): a request cancelled in a continued round keeps a consistent session",
  ignore,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const backend = await makeBackend("webgpu");
    const engine = engineFor(backend, true);
    try {
      await runRequest(engine, { ...REQUESTS[0], session: engine.newSession() });
      const before = engine.stats().continuedRounds;
      const ac = new AbortController();
      const s = engine.newSession();
      let n = 0;
      let reason = "";
      for await (
        const e of engine.generate({
          session: s,
          prompt: tokenizer.encode("First Citizen:"),
          sampling: { temperature: 0 },
          maxTokens: 200,
          signal: ac.signal,
        })
      ) {
        if (e.type === "token") {
          n += e.tokens.length;
          if (n >= 12) ac.abort();
        } else reason = e.finishReason;
      }
      assert.equal(reason, "cancelled");
      assert.ok(engine.stats().continuedRounds > before, "the request's rounds were continued");
      assert.equal(s.state.position + 1, s.length, "all but the pending token consumed");
      // Its state holds its transcript: the same request run to that length without
      // continued rounds leaves the same tokens and the same state bits.
      const generated = s.generatedFlags.reduce((x, f) => x + f, 0);
      const plainEngine = engineFor(backend, false);
      const same = plainEngine.newSession();
      await runRequest(plainEngine, {
        session: same,
        prompt: tokenizer.encode("First Citizen:"),
        sampling: { temperature: 0 },
        maxTokens: generated,
      });
      await plainEngine.close();
      assert.deepEqual([...s.tokens], [...same.tokens]);
      sameStates([s.state], [same.state]);
    } finally {
      await engine.close(true);
      await backend.dispose();
    }
  },
});
