/**
 * The prefix-state cache on WebGPU: a request that starts from a cached boundary state runs the
 * cold request's chunks and decode-path remainder, so it gives the same tokens and the same final
 * state bit for bit. The cold prompts here prefill several chunks in one round and end with a
 * remainder of at most `recurrentPrefill` tokens, which goes through the decode path in both.
 */

import { loadModel } from "../../src/load.ts";
import { DEFAULT_MODEL_DIR } from "../fixtures.ts";
import { checkCachedEqualsCold } from "../sessions/prefix_support.ts";
import { gpuTest } from "./support.ts";

gpuTest("gpu: cached and cold continuations are identical, states bit for bit", async (ctx) => {
  const model = await loadModel(DEFAULT_MODEL_DIR, {
    backend: "webgpu",
    webgpu: { context: ctx, maxSlots: 4, maxBatch: 4 },
    engine: { prefillChunk: 64 },
  });
  try {
    await checkCachedEqualsCold(model, model.engine(), { prefix: 130, tails: [5, 70] }, true, 3);
  } finally {
    await model.dispose();
  }
});
