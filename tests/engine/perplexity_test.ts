import assert from "node:assert/strict";
import { CpuBackend } from "../../src/cpu/mod.ts";
import { heldOutNll } from "../../src/engine/perplexity.ts";
import { InputError } from "../../src/errors.ts";
import { loadConfig } from "../../src/model/config.ts";
import { openWeights } from "../../src/model/weights/open.ts";
import { Tokenizer } from "../../src/tokenizer/tokenizer.ts";
import { DEFAULT_MODEL_DIR } from "../fixtures.ts";

const HELD_OUT = new URL("../../bench/data/shakespeare_heldout.txt", import.meta.url);

async function backend(quantize: "none" | "int8") {
  const config = await loadConfig(DEFAULT_MODEL_DIR + "config.json");
  const src = await openWeights(DEFAULT_MODEL_DIR);
  try {
    return await CpuBackend.load(src, config, "default", { quantize });
  } finally {
    src.close();
  }
}

Deno.test("heldOutNll: int8 weights keep the default model's held-out log-likelihood", async () => {
  const tok = await Tokenizer.load(DEFAULT_MODEL_DIR + "tokenizer.model");
  const ids = tok.encode(await Deno.readTextFile(HELD_OUT));
  const bf16 = await heldOutNll(await backend("none"), ids, { maxWindows: 4 });
  const int8 = await heldOutNll(await backend("int8"), ids, { maxWindows: 4 });
  assert.equal(bf16.tokens, 4 * 255);
  assert.equal(int8.tokens, bf16.tokens);
  // The model card gives 4.53 nats/token on its held-out split (this text is part of it).
  assert.ok(bf16.nll > 3.5 && bf16.nll < 5.5, `bf16 NLL ${bf16.nll}`);
  const delta = int8.nll - bf16.nll;
  assert.ok(delta !== 0, "int8 must be a different model");
  assert.ok(Math.abs(delta) < 0.05, `int8 NLL ${int8.nll} vs bf16 ${bf16.nll}`);
});

Deno.test("heldOutNll: scores every token after a window's first; rejects what it cannot score", async () => {
  const b = await backend("none");
  const ids = Int32Array.from({ length: 10 }, (_, i) => 100 + i);
  const r = await heldOutNll(b, ids, { window: 4 });
  // Windows [0,4) [4,8) [8,10): 3 + 3 + 1 scored tokens.
  assert.equal(r.tokens, 7);
  assert.equal(r.windows, 3);
  assert.ok(Math.abs(r.windowSums.reduce((a, x) => a + x, 0) / 7 - r.nll) < 1e-12);
  await assert.rejects(() => heldOutNll(b, Int32Array.of(5)), InputError);
  await assert.rejects(() => heldOutNll(b, ids, { window: 1 }), InputError);
});
