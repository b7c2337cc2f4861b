/**
 * The scheduler's rounds (issue 20): a request admitted while others decode gets its first token
 * within a bounded number of rounds; many concurrent seeded requests give what each gives alone;
 * a step that produces non-finite values fails its own request only and leaves the session as it
 * was; a GPU worker that dies fails its requests with `device_lost` (a 503 in the OpenAI shape)
 * and the next request succeeds. Rounds are counted, never timed.
 */

import assert from "node:assert/strict";
import { CpuBackend } from "../../src/cpu/mod.ts";
import type { Backend } from "../../src/engine/backend.ts";
import {
  Engine,
  type EngineOptions,
  type GenerateEvent,
  type GenerateRequest,
  type RoundInfo,
} from "../../src/engine/engine.ts";
import { TnlError } from "../../src/errors.ts";
import { Session } from "../../src/engine/session.ts";
import { WorkerBackend } from "../../src/worker/backend.ts";
import { errorBody, toHttpError } from "../../src/http/errors.ts";
import { loadConfig } from "../../src/model/config.ts";
import { openSafetensors } from "../../src/model/weights/safetensors.ts";
import { Tokenizer } from "../../src/tokenizer/tokenizer.ts";
import { gpuContext } from "../gpu/support.ts";
import { DEFAULT_MODEL_DIR } from "../fixtures.ts";
import { runRequest } from "../support/engine.ts";

const config = await loadConfig(DEFAULT_MODEL_DIR + "config.json");
const tokenizer = await Tokenizer.load(DEFAULT_MODEL_DIR + "tokenizer.model");
const hasGpu = (await gpuContext()) !== null;
const requireGpu = Deno.env.get("TNL_REQUIRE_GPU") === "1";

async function cpuBackend(): Promise<Backend> {
  const src = await openSafetensors(DEFAULT_MODEL_DIR + "model.safetensors");
  try {
    return await CpuBackend.load(src, config, "default");
  } finally {
    src.close();
  }
}

function workerBackend(kind: "webgpu" | "cpu" = "webgpu", maxBatch = 8): Promise<WorkerBackend> {
  return WorkerBackend.load(
    {
      kind,
      dir: DEFAULT_MODEL_DIR,
      quantize: "none",
      options: { maxSlots: maxBatch + 4, maxBatch },
    },
    config,
  );
}

const run = runRequest;

const seeded = (engine: Engine, i: number, maxTokens: number): GenerateRequest => ({
  session: engine.newSession(),
  prompt: tokenizer.encode(["First Citizen:", "ROMEO:", "To be, or not", "My lord"][i % 4]),
  sampling: { temperature: 0.9, topK: 40, seed: 1000 + i },
  maxTokens,
  stopAtEos: false,
});

function withEngine(
  name: string,
  kind: "cpu" | "cpu-worker" | "worker",
  options: EngineOptions,
  fn: (engine: Engine, rounds: RoundInfo[]) => Promise<void>,
): void {
  Deno.test({
    name: `scheduler (${kind}): ${name}`,
    ignore: kind === "worker" && !hasGpu && !requireGpu,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const rounds: RoundInfo[] = [];
      const backend = kind === "cpu"
        ? await cpuBackend()
        : await workerBackend(kind === "worker" ? "webgpu" : "cpu");
      const engine = new Engine(backend, tokenizer, {
        ...options,
        onRound: (r) => rounds.push(r),
      });
      try {
        await fn(engine, rounds);
      } finally {
        await engine.close(true);
        await backend.dispose();
      }
    },
  });
}

for (const kind of ["cpu", "cpu-worker", "worker"] as const) {
  withEngine(
    "a request admitted while others decode gets its first token within two rounds",
    kind,
    { stepsPerSync: 8 },
    async (engine, rounds) => {
      const running = [0, 1, 2].map((i) => run(engine, seeded(engine, i, 60)));
      // Wait until the three decode (a round with a batch of three).
      while (!rounds.some((r) => r.batch === 3)) await new Promise((r) => setTimeout(r, 5));
      const at = rounds.length;
      let firstAt = -1;
      for await (const e of engine.generate(seeded(engine, 3, 4))) {
        if (e.type === "token" && e.tokens.length && firstAt < 0) firstAt = rounds.length;
      }
      await Promise.all(running);
      // The round in progress when it arrived, then the round that admits, prefills and decodes it.
      assert.ok(firstAt - at <= 2, `first token after ${firstAt - at} rounds`);
    },
  );

  const n = kind === "worker" ? 16 : 64;
  withEngine(
    `${n} concurrent seeded requests give exactly what each gives alone`,
    kind,
    { stepsPerSync: 8 },
    async (engine) => {
      const together = await Promise.all(
        Array.from({ length: n }, (_, i) => run(engine, seeded(engine, i, 24))),
      );
      for (let i = 0; i < n; i++) {
        const alone = await run(engine, seeded(engine, i, 24));
        assert.deepEqual(together[i].tokens, alone.tokens, `request ${i}`);
      }
    },
  );
}

withEngine(
  "a request that arrives during a long round is admitted after a step, not after the round",
  "cpu-worker",
  { stepsPerSync: 128, roundMs: { busy: 60_000, steady: 60_000 } },
  async (engine, rounds) => {
    let aTokens = 0; // A's tokens received so far
    const a = (async () => {
      for await (const e of engine.generate(seeded(engine, 0, 2000))) {
        if (e.type === "token") aTokens += e.tokens.length;
      }
    })();
    // Rounds of 128 steps by now (the step time is known).
    while (!rounds.some((r) => r.steps === 128)) await new Promise((r) => setTimeout(r, 2));
    // Arrive inside a round: after a chunk of A's, then a pause shorter than a round.
    const chunks = aTokens;
    while (aTokens === chunks) await new Promise((r) => setTimeout(r, 1));
    await new Promise((r) => setTimeout(r, 10));
    const at = rounds.length; // the round in flight is rounds[at] once it ends
    let firstAt = -1;
    for await (const e of engine.generate(seeded(engine, 1, 4))) {
      if (e.type === "token" && e.tokens.length && firstAt < 0) firstAt = rounds.length;
    }
    await a;
    // The round in flight ends after its current step (not after 128), and the next admits B
    // and gives its first token.
    assert.ok(rounds[at].steps < 128, `the round in flight ran all ${rounds[at].steps} steps`);
    assert.ok(firstAt - at <= 2, `first token after ${firstAt - at} rounds`);
  },
);

for (const [kind, keepState] of [["cpu", true], ["worker", true], ["worker", false]] as const) {
  withEngine(
    `a non-finite step fails its own request only (${keepState ? "kept" : "store: false"})`,
    kind,
    {},
    async (engine) => {
      const bad = engine.newSession();
      const first = await run(engine, {
        session: bad,
        prompt: tokenizer.encode("ROMEO:"),
        maxTokens: 2,
      });
      assert.equal(first.done.finishReason, "length");
      // A new state object (an engine keeping the session resident sees replacements only).
      bad.state = {
        position: bad.state.position,
        layers: bad.state.layers.map((l) => new Float32Array(l.length).fill(3e38)),
      };
      const before = { length: bad.length, pending: bad.pending, rng: { ...bad.rng } };
      const good = run(engine, seeded(engine, 0, 8));
      // On WebGPU these 8 tokens are decoded and sampled on the device (no host logits).
      const failed = await run(engine, { session: bad, prompt: [], maxTokens: 8, keepState });
      assert.equal(failed.done.finishReason, "error");
      assert.ok(failed.done.error instanceof TnlError && failed.done.error.code === "non_finite");
      assert.equal(toHttpError(failed.done.error).status, 422);
      assert.equal((await good).done.finishReason, "length");
      assert.deepEqual(
        { length: bad.length, pending: bad.pending, rng: bad.rng },
        before,
      );
      assert.equal(bad.state.layers[0][0], Math.fround(3e38));
      assert.equal(bad.busy, false);
    },
  );
}

for (const kind of ["cpu", "worker"] as const) {
  withEngine(
    "a kept session's next request starts from its resident slot, with the same tokens",
    kind,
    { keepResident: true },
    async (engine) => {
      const uploads = countUploads(engine.backend);
      const turns = (session: ReturnType<Engine["newSession"]>) => [
        { ...seeded(engine, 2, 8), session },
        { session, prompt: tokenizer.encode(" and"), maxTokens: 8, stopAtEos: false },
        { session, prompt: [], maxTokens: 6, stopAtEos: false },
      ];
      const resident = engine.newSession();
      const got = [];
      for (const req of turns(resident)) got.push((await run(engine, req)).tokens);
      assert.equal(uploads.count, 0, "no state was uploaded");
      // The same turns, each from the host state: a fresh session object per turn.
      let moved = engine.newSession();
      const want = [];
      for (const req of turns(moved)) {
        want.push((await run(engine, { ...req, session: moved })).tokens);
        moved = Session.fromSnapshot(engine.config, structuredClone(moved.toSnapshot()));
      }
      assert.equal(uploads.count, 2, "each new session object uploads its state");
      assert.deepEqual(got, want);
      // A replaced state is uploaded, not taken from the slot.
      resident.state = structuredClone(resident.state);
      await run(engine, { session: resident, prompt: [], maxTokens: 2, stopAtEos: false });
      assert.equal(uploads.count, 3);
    },
  );
}

/** Count `writeState` calls of a backend. */
function countUploads(backend: Backend): { count: number } {
  const c = { count: 0 };
  const write = backend.writeState.bind(backend);
  backend.writeState = (s, h) => {
    c.count++;
    return write(s, h);
  };
  return c;
}

for (const kind of ["cpu", "webgpu"] as const) {
  Deno.test({
    name:
      `scheduler (${kind} worker): a worker that dies fails its requests with a 503; the next succeeds`,
    ignore: kind === "webgpu" && !hasGpu && !requireGpu,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const backend = await workerBackend(kind);
      const engine = new Engine(backend, tokenizer, { stepsPerSync: 4 });
      try {
        const events: GenerateEvent[] = [];
        let crashed = false;
        for await (const e of engine.generate(seeded(engine, 0, 400))) {
          events.push(e);
          if (e.type === "token" && !crashed) {
            crashed = true;
            backend.simulateCrash();
          }
        }
        const done = events.at(-1)!;
        assert.ok(done.type === "done" && done.finishReason === "error");
        const err = toHttpError(done.error);
        assert.equal(err.status, 503);
        const body = errorBody(err, undefined) as { error: { type: string; code: string | null } };
        assert.equal(body.error.type, "server_error");
        assert.equal(backend.restarts, 1);
        const next = await run(engine, seeded(engine, 1, 6));
        assert.equal(next.done.finishReason, "length");
        assert.equal(next.tokens.length, 6);
      } finally {
        await engine.close(true);
        await backend.dispose();
      }
    },
  });
}
