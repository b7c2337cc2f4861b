/**
 * `HostSampling` (the CPU backend's multi-step sampled decode, as the server's worker runs it):
 * the engine over it gives exactly what the engine's own one-step host sampling gives, tokens,
 * finish reasons and states bit for bit, for every sampling mode, penalties, logit bias, stop
 * strings (the rewind path), end of sequence, budgets ending inside a round, and broken logits.
 */

import assert from "node:assert/strict";
import { CpuBackend } from "../../src/cpu/mod.ts";
import { BROKEN_LOGITS_TOKEN, type SampledRow } from "../../src/engine/backend.ts";
import { validateSamplingParams } from "../../src/engine/sampling_params.ts";
import { Engine, type GenerateRequest } from "../../src/engine/engine.ts";
import { HostSampling, logitsBroken } from "../../src/engine/host_sampling.ts";
import type { Session } from "../../src/engine/session.ts";
import { loadConfig } from "../../src/model/config.ts";
import { openSafetensors } from "../../src/model/weights/safetensors.ts";
import { Tokenizer } from "../../src/tokenizer/tokenizer.ts";
import { DEFAULT_MODEL_DIR } from "../fixtures.ts";
import { runRequest } from "../support/engine.ts";

const config = await loadConfig(DEFAULT_MODEL_DIR + "config.json");
const tokenizer = await Tokenizer.load(DEFAULT_MODEL_DIR + "tokenizer.model");

async function cpuBackend(): Promise<CpuBackend> {
  const src = await openSafetensors(DEFAULT_MODEL_DIR + "model.safetensors");
  try {
    return await CpuBackend.load(src, config, "default");
  } finally {
    src.close();
  }
}

const run = runRequest;

/** The requests both engines run: one per sampling feature. */
function requests(session: () => Session): GenerateRequest[] {
  const p = (s: string) => tokenizer.encode(s);
  const eos = config.eosTokenId;
  return [
    {
      session: session(),
      prompt: p("ROMEO:"),
      sampling: { temperature: 0 },
      maxTokens: 40,
      stopAtEos: false,
    },
    {
      session: session(),
      prompt: p("First Citizen:"),
      sampling: { temperature: 0.9, topK: 40, seed: 7 },
      maxTokens: 37,
      stopAtEos: false,
    },
    {
      session: session(),
      prompt: p("To be, or not"),
      sampling: { temperature: 1.1, topP: 0.8, minP: 0.02, seed: 8 },
      maxTokens: 29,
    },
    {
      session: session(),
      prompt: p("My lord"),
      sampling: {
        temperature: 0.7,
        repetitionPenalty: 1.3,
        presencePenalty: 0.5,
        frequencyPenalty: 0.4,
        seed: 9,
      },
      maxTokens: 45,
      stopAtEos: false,
    },
    {
      session: session(),
      prompt: p("KING:"),
      sampling: { temperature: 0.8, seed: 10 },
      maxTokens: 60,
      stop: ["the"],
    },
    {
      // End of sequence pushed up: the row stops on the device path at the token it samples.
      session: session(),
      prompt: p("Nay,"),
      sampling: { temperature: 1, seed: 11, logitBias: { [eos]: 12 } },
      maxTokens: 60,
    },
  ];
}

Deno.test({
  name: "host sampling: the engine over decodeSampled equals one-step host sampling, bit for bit",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const plain = await cpuBackend();
    const wrapped = new HostSampling(await cpuBackend(), 16);
    const rounds = { host: 0, device: 0 };
    const host = new Engine(plain, tokenizer, { stepsPerSync: 16, onRound: () => rounds.host++ });
    const device = new Engine(wrapped, tokenizer, {
      stepsPerSync: 16,
      onRound: () => rounds.device++,
    });
    try {
      const hostSessions: Session[] = [];
      const devSessions: Session[] = [];
      const want = await Promise.all(
        requests(() => (hostSessions.push(host.newSession()), hostSessions.at(-1)!)).map((r) =>
          run(host, r)
        ),
      );
      const got = await Promise.all(
        requests(() => (devSessions.push(device.newSession()), devSessions.at(-1)!)).map((r) =>
          run(device, r)
        ),
      );
      assert.ok(rounds.device * 2 < rounds.host, `rounds: ${JSON.stringify(rounds)}`);
      assert.equal(
        want.find((w) => w.done.finishReason === "stop" && w.tokens.at(-1) !== config.eosTokenId)
          ?.done.finishReason,
        "stop",
        "a stop string ended a request",
      );
      assert.ok(want.some((w) => w.tokens.at(-1) === config.eosTokenId), "one ended at EOS");
      for (let i = 0; i < want.length; i++) {
        assert.deepEqual(got[i].tokens, want[i].tokens, `request ${i}: tokens`);
        assert.equal(got[i].text, want[i].text, `request ${i}: text`);
        assert.equal(got[i].done.finishReason, want[i].done.finishReason, `request ${i}: finish`);
        const a = devSessions[i], b = hostSessions[i];
        assert.equal(a.position, b.position, `request ${i}: position`);
        // Sessions of unseeded requests draw their own seeds: the streams advanced alike.
        assert.equal(a.rng.counter, b.rng.counter, `request ${i}: random stream`);
        a.state.layers.forEach((l, j) =>
          assert.deepEqual(
            new Uint32Array(l.buffer, l.byteOffset, l.length),
            new Uint32Array(b.state.layers[j].buffer, b.state.layers[j].byteOffset, l.length),
            `request ${i}: layer ${j}`,
          )
        );
      }
    } finally {
      await host.close(true);
      await device.close(true);
      await plain.dispose();
      await wrapped.dispose();
    }
  },
});

Deno.test({
  name: "host sampling: broken logits end the row with the marker; budgets and EOS stop rows",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const b = new HostSampling(await cpuBackend(), 8);
    try {
      const sampling = validateSamplingParams({ temperature: 0 }, config.vocabSize);
      const good = b.allocState(), bad = b.allocState();
      const huge = await b.readState(bad);
      huge.layers.forEach((l) => l.fill(3e38));
      await b.writeState(bad, huge);
      const rows: SampledRow[] = [
        { state: good, token: 5, budget: 3, sampling, rng: { seed: 1, counter: 0 } },
        { state: bad, token: 5, budget: 8, sampling, rng: { seed: 2, counter: 0 } },
      ].map((r) => ({ ...r, stopAtEos: true, penalties: false, capture: true }));
      const out = await b.decodeSampled(rows, 8);
      assert.deepEqual([...out[1]], [BROKEN_LOGITS_TOKEN]);
      assert.equal(out[0].length, 1, "the round ends at the step where a row ends");
      assert.equal(rows[0].captured, undefined, "a row that goes on is not captured");
      const rest = await b.decodeSampled([{ ...rows[0], token: out[0][0], budget: 2 }], 8);
      assert.equal(rest[0].length, 2, "stops at its budget");
      assert.equal(good.position, 3, "consumed the pending token and two sampled ones");
      assert.ok(logitsBroken(Float32Array.of(1, NaN)));
      assert.ok(logitsBroken(Float32Array.of(-Infinity, -Infinity)));
      assert.ok(!logitsBroken(Float32Array.of(-Infinity, 0)));
    } finally {
      await b.dispose();
    }
  },
});

Deno.test({
  name: "host sampling: rounds cut by a row's end or an interrupt give the same tokens as one",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const flag = new Int32Array(new SharedArrayBuffer(4));
    const b = new HostSampling(await cpuBackend(), 64, flag);
    try {
      const sampling = validateSamplingParams({ temperature: 0.9, seed: 3 }, config.vocabSize);
      const make = (): SampledRow[] =>
        [5, 9].map((token, i) => ({
          state: b.allocState(),
          token,
          budget: [6, 12][i],
          sampling,
          rng: { seed: 11 + i, counter: 0 },
          stopAtEos: false,
          penalties: false,
          capture: true,
        }));
      // One call: the round ends when the first row reaches its budget (6 steps).
      const whole = make();
      const first = await b.decodeSampled(whole, 12);
      assert.deepEqual(first.map((t) => t.length), [6, 6]);
      assert.equal(whole[0].captured?.position, 6, "the row that ended is captured");
      assert.equal(whole[1].captured, undefined);
      const second = await b.decodeSampled([{ ...whole[1], token: first[1][5], budget: 6 }], 12);
      const want = [[...first[0]], [...first[1], ...second[0]]];
      // The same rows, the flag set: every call returns after one step; the flag's owner clears it.
      const cut = make();
      const got: number[][] = [[], []];
      let live = [0, 1];
      while (live.length) {
        Atomics.store(flag, 0, 1);
        const rows = live.map((i) => ({
          ...cut[i],
          token: got[i].at(-1) ?? cut[i].token,
          budget: cut[i].budget - got[i].length,
        }));
        const out = await b.decodeSampled(rows, 12);
        rows.forEach((r, k) => {
          assert.equal(out[k].length, 1, "one step, then the interrupt ends the round");
          got[live[k]].push(...out[k]);
          cut[live[k]].rng = r.rng;
        });
        live = live.filter((i) => got[i].length < cut[i].budget);
      }
      assert.deepEqual(got, want);
      assert.equal(Atomics.load(flag, 0), 1, "a shared flag is cleared by its owner only");
    } finally {
      await b.dispose();
    }
  },
});
