/**
 * Batched feeding of several sequences (issue 20): `prefillMany` gives the same states as one
 * `prefill` per sequence, and `replayMany` (the decode path, sequences of different lengths batched)
 * the same states as one `replay` per sequence, bit for bit: only the number of round trips
 * differs. `readStates` reads several slots in one readback.
 */

import assert from "node:assert/strict";
import { WebGpuBackend } from "../../src/gpu/backend.ts";
import type { BackendState } from "../../src/engine/backend.ts";
import { loadConfig } from "../../src/model/config.ts";
import type { ModelState } from "../../src/model/state.ts";
import { openSafetensors } from "../../src/model/weights/safetensors.ts";
import { DEFAULT_MODEL_DIR } from "../fixtures.ts";
import { gpuTest } from "./support.ts";

const config = await loadConfig(DEFAULT_MODEL_DIR + "config.json");
const prompts = [
  [5, 9, 300, 41],
  [77],
  [12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22],
  [1000, 2000, 3000, 40, 50, 60, 70],
].map((p) => Int32Array.from(p));

function sameStates(a: ModelState[], b: ModelState[]): void {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) {
    assert.equal(a[i].position, b[i].position, `sequence ${i} position`);
    a[i].layers.forEach((l, j) =>
      assert.deepEqual(
        new Uint32Array(l.buffer),
        new Uint32Array(b[i].layers[j].buffer),
        `${i}/${j}`,
      )
    );
  }
}

gpuTest(
  "gpu: prefillMany and replayMany give one-sequence prefill's and replay's states",
  async (ctx) => {
    const src = await openSafetensors(DEFAULT_MODEL_DIR + "model.safetensors");
    const b = await WebGpuBackend.load(src, config, "default", {
      context: ctx,
      maxSlots: 16,
      maxBatch: 3, // fewer than the sequences: replayMany splits the batch
    }).finally(() => src.close());
    try {
      const alloc = () => prompts.map(() => b.allocState());
      const release = (s: BackendState[]) => s.forEach((x) => b.releaseState(x));
      for (const [many, one] of [["prefillMany", "prefill"], ["replayMany", "replay"]] as const) {
        const batched = alloc(), alone = alloc();
        await b[many](prompts.map((tokens, i) => ({ state: batched[i], tokens })));
        for (let i = 0; i < prompts.length; i++) {
          if (one === "prefill") await b.prefill(alone[i], prompts[i], "none");
          else await b.replay(alone[i], prompts[i]);
        }
        const x = await b.readStates(batched);
        const y = await Promise.all(alone.map((s) => b.readState(s)));
        sameStates(x, y);
        assert.deepEqual(x.map((s) => s.position), prompts.map((p) => p.length));
        release(batched);
        release(alone);
      }
    } finally {
      await b.dispose();
    }
  },
);
