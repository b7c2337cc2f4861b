/** Parity of the CPU reference with the official implementation's fixtures. */

import assert from "node:assert/strict";
import { CpuBackend } from "../../src/cpu/mod.ts";
import { loadConfig } from "../../src/model/config.ts";
import { openSafetensors } from "../../src/model/weights/safetensors.ts";
import { DEFAULT_MODEL_DIR, fixtureTest } from "../fixtures.ts";
import { loadGolden } from "../support/golden.ts";
import { checkPrefillEqualsStepwise, checkPrompt, TOL } from "../support/parity.ts";

async function backendFor(
  modelDir: string,
  block?: number,
  kernels: "js" | "wasm" = "js",
): Promise<CpuBackend> {
  const config = await loadConfig(modelDir + "config.json");
  const source = await openSafetensors(modelDir + "model.safetensors");
  try {
    return await CpuBackend.load(source, config, modelDir, { block, kernels });
  } finally {
    source.close();
  }
}

for (
  const [name, model] of [["tnl-shakespeare-6m", DEFAULT_MODEL_DIR], ["r1-f32", null]] as const
) {
  for (const [block, kernels] of [[64, "js"], [17, "js"], [64, "wasm"], [256, "wasm"]] as const) {
    fixtureTest(
      `cpu parity: ${name}, Lightning block ${block}, ${kernels} kernels`,
      async (dir, t) => {
        const modelDir = model ?? `${dir}${name}/`;
        const backend = await backendFor(modelDir, block, kernels);
        assert.equal(backend.model.kernels, kernels);
        const golden = await loadGolden(
          `${dir}${name}/golden.safetensors`,
          backend.config.numLayers,
        );
        assert.ok(golden.length >= 3);
        for (const p of golden) {
          await t.step(`${p.name} (${p.promptIds.length} tokens)`, async () => {
            const d = await checkPrompt(backend, p);
            assert.ok(d.logits < TOL.logits);
          });
        }
      },
    );
  }
  fixtureTest(`cpu: ${name} prefill equals token-by-token decode`, async (dir) => {
    const modelDir = model ?? `${dir}${name}/`;
    const backend = await backendFor(modelDir);
    const golden = await loadGolden(`${dir}${name}/golden.safetensors`, backend.config.numLayers);
    const longest = golden.reduce((a, b) => a.promptIds.length > b.promptIds.length ? a : b);
    const ids = longest.promptIds.subarray(0, 300);
    const d = await checkPrefillEqualsStepwise(backend, ids);
    assert.ok(d <= TOL.logits, `logits differ by ${d}`);
  });
}
