/**
 * `decodeSampled` with `ahead`: calls continued on the device (submitted before the call before
 * was read back) give the tokens, RNG counters, positions and states of the same calls made one
 * after another, bit for bit: rows that end (budget, end-of-sequence) are left out of the next
 * call, and a continuation the caller does not take fails loudly unless its rows had stopped.
 */

import assert from "node:assert/strict";
import type { BackendState, SampledRow } from "../../src/engine/backend.ts";
import { validateSamplingParams } from "../../src/engine/sampling_params.ts";
import { TnlError } from "../../src/errors.ts";
import type { WebGpuBackend } from "../../src/gpu/backend.ts";
import { loadConfig } from "../../src/model/config.ts";
import { DEFAULT_MODEL_DIR } from "../fixtures.ts";
import { gpuTest, withDefaultBackend } from "./support.ts";

const config = await loadConfig(DEFAULT_MODEL_DIR + "config.json");
const V = config.vocabSize;

/** One sequence: its prompt, sampling, budget over all calls, and whether it stops at EOS. */
interface Case {
  prompt: number[];
  sampling: Parameters<typeof validateSamplingParams>[0];
  budget: number;
  stopAtEos: boolean;
  penalties?: boolean;
}

const CASES: Case[] = [
  { prompt: [5, 17, 33], sampling: { temperature: 0 }, budget: 40, stopAtEos: false },
  {
    prompt: [9, 2, 71, 4],
    sampling: { temperature: 0.9, seed: 7, topK: 20 },
    budget: 11, // ends by its budget inside the second call
    stopAtEos: false,
  },
  {
    prompt: [12],
    sampling: { temperature: 1.1, seed: 3, topP: 0.9, frequencyPenalty: 0.5 },
    budget: 40,
    stopAtEos: false,
    penalties: true,
  },
  {
    prompt: [40, 41],
    // Its second token is forced to end-of-sequence: the row ends early and stays stopped.
    sampling: { temperature: 0, logitBias: { [config.eosTokenId]: 100 } },
    budget: 40,
    stopAtEos: true,
  },
];

/** Run `calls` calls of `steps` steps over the cases, `ahead` on every call but the last. */
async function generate(b: WebGpuBackend, calls: number, steps: number, ahead: boolean) {
  const states: BackendState[] = [];
  for (const c of CASES) {
    const s = b.allocState();
    if (c.prompt.length > 1) await b.prefill(s, Int32Array.from(c.prompt.slice(0, -1)), "none");
    states.push(s);
  }
  const rows: SampledRow[] = CASES.map((c, i) => ({
    state: states[i],
    token: c.prompt.at(-1)!,
    budget: c.budget,
    sampling: validateSamplingParams(c.sampling, V),
    rng: { seed: 100 + i, counter: 0 },
    stopAtEos: c.stopAtEos,
    penalties: c.penalties ?? false,
  }));
  const tokens: number[][] = CASES.map(() => []);
  let going = rows.map((_, i) => i);
  for (let call = 0; call < calls && going.length; call++) {
    const batch = going.map((i) => ({ ...rows[i], rng: rows[i].rng }));
    const out = await b.decodeSampled(batch, steps, ahead && call < calls - 1 ? steps : 0);
    going = going.filter((i, j) => {
      const t = out[j];
      tokens[i].push(...t);
      rows[i].budget -= t.length;
      if (t.length) rows[i].token = t[t.length - 1];
      const eos = CASES[i].stopAtEos && t.at(-1) === config.eosTokenId;
      return rows[i].budget > 0 && !eos;
    });
  }
  const back = await b.readStates(states);
  for (const s of states) b.releaseState(s);
  return { tokens, rng: rows.map((r) => r.rng.counter), states: back };
}

gpuTest(
  "decodeSampled ahead: continued calls equal the same calls one after another",
  (ctx) =>
    withDefaultBackend(ctx, { maxSlots: 8, maxBatch: 4 }, async (b) => {
      assert.equal(b.decodesAhead, true);
      const plain = await generate(b, 4, 8, false);
      const ahead = await generate(b, 4, 8, true);
      assert.deepEqual(plain.tokens.map((t) => t.length), [32, 11, 32, 1]);
      assert.equal(plain.tokens[3][0], config.eosTokenId);
      assert.deepEqual(ahead.tokens, plain.tokens);
      assert.deepEqual(ahead.rng, plain.rng);
      ahead.states.forEach((s, i) => {
        assert.equal(s.position, plain.states[i].position, `row ${i} position`);
        s.layers.forEach((l, j) =>
          assert.deepEqual(
            new Uint32Array(l.buffer, l.byteOffset, l.length),
            new Uint32Array(
              plain.states[i].layers[j].buffer,
              plain.states[i].layers[j].byteOffset,
              l.length,
            ),
            `row ${i} layer ${j}`,
          )
        );
      });
    }),
);

gpuTest(
  "decodeSampled ahead: a continuation not taken fails loudly when its rows sampled",
  (ctx) =>
    withDefaultBackend(ctx, { maxSlots: 8, maxBatch: 4 }, async (b) => {
      const row = (budget: number): SampledRow => {
        const state = b.allocState();
        return {
          state,
          token: 5,
          budget,
          sampling: validateSamplingParams({ temperature: 0 }, V),
          rng: { seed: 1, counter: 0 },
          stopAtEos: false,
          penalties: false,
        };
      };
      // Its budget ends in the first call: the continuation samples nothing, so other rows may come.
      const short = row(3);
      await b.decodeSampled([short], 4, 4);
      const other = row(2);
      const [t] = await b.decodeSampled([other], 2);
      assert.equal(t.length, 2);
      assert.equal(short.state.position, 3);
      // Still going: the continuation samples, and a call with other steps is refused.
      const long = row(30);
      await b.decodeSampled([long], 4, 4);
      await assert.rejects(
        () => b.decodeSampled([long], 6),
        (e) => e instanceof TnlError && e.code === "internal" && /not taken/.test(e.message),
      );
      assert.equal(long.state.position, 8, "the positions count the continued steps");
      // A row left out of a continued call must be one the device stopped.
      const a = row(30), c = row(30);
      await b.decodeSampled([a, c], 4, 4);
      await assert.rejects(
        () => b.decodeSampled([c], 4),
        (e) => e instanceof TnlError && e.code === "internal" && /left out/.test(e.message),
      );
    }),
);
