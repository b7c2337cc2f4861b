/**
 * The GPU's non-finite check of read-back states (`wgsl/finite_check.wgsl`, `FiniteCheck`): a state
 * read back is marked finite exactly when `stateIsFinite` says so, wherever the NaN or ±Infinity
 * sits (first value, last value of the last layer, inside an LRPE layer), and its values come back
 * bit for bit; a state captured with decoded tokens is marked too.
 */

import assert from "node:assert/strict";
import type { SampledRow } from "../../../src/engine/backend.ts";
import { validateSamplingParams } from "../../../src/engine/sampling_params.ts";
import { loadConfig } from "../../../src/model/config.ts";
import { createState, type ModelState, stateIsFinite } from "../../../src/model/state.ts";
import { DEFAULT_MODEL_DIR } from "../../fixtures.ts";
import { randomF32 } from "../harness.ts";
import { gpuTest, withDefaultBackend } from "../support.ts";

const config = await loadConfig(DEFAULT_MODEL_DIR + "config.json");

/** A random finite state with `bad` written at (layer, index) when given. */
function state(seed: number, bad?: [number, number, number]): ModelState {
  const s = createState(config);
  s.position = 10 + seed;
  s.layers.forEach((l, j) => l.set(randomF32(l.length, seed * 100 + j, 3)));
  if (bad) s.layers[bad[0]][bad[1]] = bad[2];
  return s;
}

gpuTest(
  "gpu: read-back states are marked finite by the GPU's check, values unchanged",
  (ctx) =>
    withDefaultBackend(ctx, { maxSlots: 8, maxBatch: 4 }, async (b) => {
      const L = config.numLayers;
      const lrpe = Math.max(0, config.lrpe.findIndex(Boolean));
      const last = (l: number) => createState(config).layers[l].length - 1;
      const hosts = [
        state(1),
        state(2, [0, 0, NaN]),
        state(3, [L - 1, last(L - 1), Infinity]),
        state(4, [lrpe, Math.floor(last(lrpe) / 2), -Infinity]),
        state(5),
      ];
      const slots = hosts.map(() => b.allocState());
      for (let i = 0; i < hosts.length; i++) await b.writeState(slots[i], hosts[i]);
      const back = await b.readStates(slots);
      back.forEach((s, i) => {
        assert.equal(s.finite, stateIsFinite(hosts[i]), `state ${i}`);
        assert.equal(s.position, hosts[i].position);
        s.layers.forEach((l, j) =>
          assert.deepEqual(
            new Uint32Array(l.buffer, l.byteOffset, l.length),
            new Uint32Array(hosts[i].layers[j].buffer),
            `state ${i} layer ${j}`,
          )
        );
      });
      assert.deepEqual(back.map((s) => s.finite), [true, false, false, false, true]);
      // A state captured with the tokens of its last round.
      const rows: SampledRow[] = [slots[0], slots[4]].map((st, i) => ({
        state: st,
        token: 5,
        budget: 2,
        sampling: validateSamplingParams({ temperature: 0 }, config.vocabSize),
        rng: { seed: i, counter: 0 },
        stopAtEos: false,
        penalties: false,
        capture: true,
      }));
      await b.decodeSampled(rows, 2);
      for (const r of rows) {
        assert.equal(r.captured?.finite, true);
        assert.equal(r.captured?.position, r.state.position);
        assert.equal(stateIsFinite(r.captured!), true);
      }
    }),
);
