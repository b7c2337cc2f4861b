/**
 * The prefill's short chunks (at most `SHORT_CHUNK` tokens) run GEMM ops with their own tile,
 * tuned at that length on hardware adapters. Every tile gives the same bits, so a prompt's logits
 * and state must not depend on which set ran: here a short chunk's tile is forced to another one
 * and compared with the default, bit for bit.
 */

import assert from "node:assert/strict";
import { WebGpuBackend } from "../../src/gpu/backend.ts";
import { GEMM_TILES, gemmTilesFor, tileName } from "../../src/gpu/gemm_tiling.ts";
import { SHORT_CHUNK } from "../../src/gpu/prefill.ts";
import { loadConfig } from "../../src/model/config.ts";
import { openSafetensors } from "../../src/model/weights/safetensors.ts";
import { DEFAULT_MODEL_DIR } from "../fixtures.ts";
import { GL, sameBits, sameStates } from "./harness.ts";
import { gpuTest } from "./support.ts";

const config = await loadConfig(DEFAULT_MODEL_DIR + "config.json");

gpuTest("gpu prefill: short chunks run their own GEMM tile, with the same bits", async (ctx) => {
  // Another tile with the default's 4×4 register block (GL compiles larger blocks for minutes).
  const other = gemmTilesFor(ctx.device.limits).find((t) =>
    t !== GEMM_TILES[0] && t.tm === 4 && t.tn === 4 && (!GL || t.bk <= 16)
  ) ?? gemmTilesFor(ctx.device.limits).find((t) =>
    t !== GEMM_TILES[0] && !GL
  );
  if (!other) return; // this adapter runs the default tile alone
  const load = async (options: { shortChunkTile?: typeof other }) => {
    const src = await openSafetensors(DEFAULT_MODEL_DIR + "model.safetensors");
    return await WebGpuBackend.load(src, config, "default", { context: ctx, ...options })
      .finally(() => src.close());
  };
  const plain = await load({});
  const forced = await load({ shortChunkTile: other });
  try {
    const cap = forced.prefiller.capacity;
    assert.ok(cap > SHORT_CHUNK, `capacity ${cap} leaves no short chunks`);
    for (const label of ["qkvu", "out_proj", "glu", "down_proj"]) {
      assert.equal(tileName(forced.prefiller.tileFor(label, SHORT_CHUNK)!), tileName(other));
      assert.equal(
        tileName(forced.prefiller.tileFor(label, SHORT_CHUNK + 1)!),
        tileName(plain.prefiller.tileFor(label, SHORT_CHUNK + 1)!),
      );
    }
    // 150 tokens (not a whole Lightning block) then one more for the last logits.
    const tokens = Int32Array.from({ length: 151 }, (_, i) => (i * 53 + 7) % config.vocabSize);
    const run = async (b: WebGpuBackend) => {
      const s = b.allocState();
      await b.prefill(s, tokens.subarray(0, 150), "none");
      const logits = await b.prefill(s, tokens.subarray(150), "last");
      return { logits, state: await b.readState(s) };
    };
    const [p, f] = [await run(plain), await run(forced)];
    sameBits(f.logits, p.logits, `logits, short chunks on ${tileName(other)}`);
    sameStates([f.state], [p.state]);
  } finally {
    await plain.dispose();
    await forced.dispose();
  }
});
