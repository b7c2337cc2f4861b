/**
 * `decodeSampled` with `ahead`: calls continued on the device (submitted before the call before
 * was read back) give the tokens, RNG counters, positions and states of the same calls made one
 * after another, bit for bit: rows that end (budget, end-of-sequence) are left out of the next
 * call; rows left out and continuations not taken are discarded; a row's snapshot holds its state
 * as the continuation found it.
 */

import assert from "node:assert/strict";
import type { BackendState, SampledRow } from "../../src/engine/backend.ts";
import { validateSamplingParams } from "../../src/engine/sampling_params.ts";
import type { WebGpuBackend } from "../../src/gpu/backend.ts";
import { loadConfig } from "../../src/model/config.ts";
import { DEFAULT_MODEL_DIR } from "../fixtures.ts";
import { sameStates } from "./harness.ts";
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
      sameStates(ahead.states, plain.states);
    }),
);

gpuTest(
  "decodeSampled ahead: rows left out and continuations not taken are discarded; snapshots",
  (ctx) =>
    withDefaultBackend(ctx, { maxSlots: 12, maxBatch: 4 }, async (b) => {
      const row = (budget: number): SampledRow => ({
        state: b.allocState(),
        token: 5,
        budget,
        sampling: validateSamplingParams({ temperature: 0.7 }, V),
        rng: { seed: 1, counter: 0 },
        stopAtEos: false,
        penalties: false,
      });
      // A continuation not taken (other rows, other steps) is discarded: positions unchanged.
      const short = row(3);
      await b.decodeSampled([short], 4, 4);
      const other = row(2);
      assert.equal((await b.decodeSampled([other], 2))[0].length, 2);
      assert.equal(short.state.position, 3);
      const long = row(30);
      await b.decodeSampled([long], 4, 4);
      assert.equal((await b.decodeSampled([long], 6))[0].length, 6);
      assert.equal(long.state.position, 10, "4, then 6: the 4 continued steps discarded");
      // A row left out of a continued call is discarded, and stays stopped when it continues.
      const a = row(30), c = row(30);
      await b.decodeSampled([a, c], 4, 4);
      assert.equal((await b.decodeSampled([c], 4, 4))[0].length, 4);
      const [ta, tc] = await b.decodeSampled([a, c], 4);
      assert.deepEqual([ta.length, tc.length], [0, 4], "the left-out row sampled nothing more");
      assert.deepEqual([a.state.position, c.state.position], [4, 12]);
      // The snapshot holds the row's state after the call, as the continuation found it.
      const ref = row(30), r = row(30);
      await b.decodeSampled([ref], 4);
      const want = await b.readState(ref.state);
      const snapshot = b.allocState();
      await b.decodeSampled([{ ...r, aheadSnapshot: snapshot }], 4, 4);
      assert.equal(snapshot.position, 4);
      sameStates([await b.readState(snapshot)], [want]);
      assert.equal((await b.decodeSampled([r], 4))[0].length, 4);
      assert.equal(r.state.position, 8);
    }),
);
