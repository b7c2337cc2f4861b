/**
 * The WebGPU backend against the official fixtures (same tolerances as the CPU reference) with
 * f32 and bf16 weights, and against the CPU reference with f16 and int8 weights.
 */

import assert from "node:assert/strict";
import { CpuBackend } from "../../src/cpu/mod.ts";
import { WebGpuBackend } from "../../src/gpu/backend.ts";
import { loadConfig } from "../../src/model/config.ts";
import { f32ToF16 } from "../../src/model/weights/dtype.ts";
import { openSafetensors } from "../../src/model/weights/safetensors.ts";
import type { TensorSource } from "../../src/model/weights/source.ts";
import { cloneState, createState } from "../../src/model/state.ts";
import { toFloat32 } from "../../src/model/weights/dtype.ts";
import { DEFAULT_MODEL_DIR, fixturesDir } from "../fixtures.ts";
import { loadGolden } from "../support/golden.ts";
import { checkPrompt, maxAbsDiff, relDiff, TOL } from "../support/parity.ts";
import { gpuTest } from "./support.ts";

const fixtures = fixturesDir();

async function gpuBackend(
  ctx: Parameters<Parameters<typeof gpuTest>[1]>[0],
  dir: string,
  source?: TensorSource,
  extra = {},
) {
  const config = await loadConfig(dir + "config.json");
  const src = source ?? await openSafetensors(dir + "model.safetensors");
  try {
    return await WebGpuBackend.load(src, config, dir, {
      context: ctx,
      maxSlots: 4,
      maxBatch: 8,
      ...extra,
    });
  } finally {
    src.close();
  }
}

for (
  const [name, model, dtype] of [["tnl-shakespeare-6m", DEFAULT_MODEL_DIR, "bf16"], [
    "r1-f32",
    null,
    "f32",
  ]] as const
) {
  gpuTest(
    `gpu parity: ${name} (${dtype} weights) against the official fixtures`,
    async (ctx, t) => {
      if (!fixtures && Deno.env.get("TNL_REQUIRE_FIXTURES") !== "1") return;
      assert.ok(fixtures, "fixtures missing");
      const dir = model ?? `${fixtures}${name}/`;
      // A tiny binding limit splits every matrix into several chunks, exercising split tensors.
      for (const split of [false, true]) {
        const backend = await gpuBackend(
          ctx,
          dir,
          undefined,
          split ? { maxBindingBytes: 64 * 1024, prefillChunk: 96 } : {},
        );
        try {
          const golden = await loadGolden(
            `${fixtures}${name}/golden.safetensors`,
            backend.config.numLayers,
          );
          for (const p of golden) {
            if (split && p.promptIds.length > 400) continue;
            await t.step(
              `${p.name} (${p.promptIds.length} tokens${
                split ? ", split bindings, chunked prefill" : ""
              })`,
              async () => {
                const d = await checkPrompt(backend, p);
                assert.ok(d.logits < TOL.logits);
              },
            );
          }
        } finally {
          await backend.dispose();
        }
      }
    },
  );
}

/** The default model's bf16 weights re-encoded as f16. */
async function asF16(dir: string): Promise<TensorSource> {
  const src = await openSafetensors(dir + "model.safetensors");
  const out = new Map<string, Uint8Array>();
  for (const [name, info] of src.tensors) {
    const f = toFloat32(await src.read(name), info.dtype as "BF16");
    const h = new Uint16Array(f.length);
    for (let i = 0; i < f.length; i++) h[i] = f32ToF16(f[i]);
    out.set(name, new Uint8Array(h.buffer));
  }
  const tensors = new Map([...src.tensors].map(([k, v]) => [k, { ...v, dtype: "F16" as const }]));
  src.close();
  return { tensors, read: (n) => Promise.resolve(out.get(n)!), close: () => {} };
}

gpuTest("gpu parity: f16 weights equal the CPU reference on the same weights", async (ctx) => {
  const config = await loadConfig(DEFAULT_MODEL_DIR + "config.json");
  const cpu = await CpuBackend.load(await asF16(DEFAULT_MODEL_DIR), config, "f16");
  const gpu = await gpuBackend(ctx, DEFAULT_MODEL_DIR, await asF16(DEFAULT_MODEL_DIR));
  try {
    const ids = Int32Array.from({ length: 80 }, (_, i) => (i * 131 + 7) % config.vocabSize);
    const a = createState(config), b = createState(config);
    const la = await cpu.forward(a, ids, "all");
    const lb = await gpu.forward(b, ids, "all");
    assert.ok(maxAbsDiff(la, lb) < TOL.logits, `logits differ by ${maxAbsDiff(la, lb)}`);
    for (let l = 0; l < config.numLayers; l++) {
      assert.ok(relDiff(b.layers[l], a.layers[l]) < TOL.state);
    }
  } finally {
    await gpu.dispose();
  }
});

gpuTest(
  "gpu parity: int8 weights equal the CPU reference running the same int8 model",
  async (ctx, t) => {
    const config = await loadConfig(DEFAULT_MODEL_DIR + "config.json");
    const open = () => openSafetensors(DEFAULT_MODEL_DIR + "model.safetensors");
    const cpu = await CpuBackend.load(await open(), config, "int8", { quantize: "int8" });
    const bf16 = await CpuBackend.load(await open(), config, "bf16");
    const ids = Int32Array.from({ length: 80 }, (_, i) => (i * 131 + 7) % config.vocabSize);
    const ref = createState(config);
    const refLogits = await cpu.forward(ref, ids, "all");
    // The int8 model is a different model: its logits move away from bf16's (but not far).
    const plain = await bf16.forward(createState(config), ids, "all");
    const moved = maxAbsDiff(refLogits, plain);
    assert.ok(moved > 1e-3 && moved < 1, `int8 logits moved ${moved} from bf16`);
    const refPrompt = cloneState(ref);
    const steps = [5, 9, 13, 17];
    const refSteps: Float32Array[] = [];
    for (const tok of steps) refSteps.push(await cpu.forward(ref, Int32Array.of(tok), "last"));
    for (const split of [false, true]) {
      await t.step(
        split ? "split bindings (row scales by global row)" : "whole bindings",
        async () => {
          const gpu = await gpuBackend(ctx, DEFAULT_MODEL_DIR, await open(), {
            quantize: "int8",
            ...(split ? { maxBindingBytes: 64 * 1024, prefillChunk: 32 } : {}),
          });
          try {
            assert.ok(gpu.model.weights.embed.dtype === "q8");
            const s = gpu.allocState();
            const logits = await gpu.prefill(s, ids, "all");
            assert.ok(
              maxAbsDiff(logits, refLogits) < TOL.logits,
              `prefill ${maxAbsDiff(logits, refLogits)}`,
            );
            const host = await gpu.readState(s);
            for (let l = 0; l < config.numLayers; l++) {
              const d = relDiff(host.layers[l], refPrompt.layers[l]);
              assert.ok(d < TOL.state, `state layer ${l} differs by ${d} (relative)`);
            }
            for (let i = 0; i < steps.length; i++) {
              const lg = await gpu.decode([s], Int32Array.of(steps[i]));
              const d = maxAbsDiff(lg, refSteps[i]);
              assert.ok(d < TOL.logits, `decode step ${i}: logits differ by ${d}`);
            }
            gpu.releaseState(s);
          } finally {
            await gpu.dispose();
          }
        },
      );
    }
  },
);
