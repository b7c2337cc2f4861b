/**
 * GPU test helpers: tests run on whatever adapter Deno finds (lavapipe through Vulkan, llvmpipe
 * through GL in CI). Without an adapter they are skipped, unless `TNL_REQUIRE_GPU=1` makes that a
 * failure (CI sets it).
 * @module
 */

import { acquireDevice, type GpuContext } from "../../src/gpu/device.ts";
import { WebGpuBackend } from "../../src/gpu/backend.ts";
import { TnlError } from "../../src/errors.ts";
import { loadConfig } from "../../src/model/config.ts";
import { openSafetensors } from "../../src/model/weights/safetensors.ts";
import { DEFAULT_MODEL_DIR } from "../fixtures.ts";

let shared: Promise<GpuContext | null> | null = null;

/** One device per test process (null when there is no adapter). */
export function gpuContext(): Promise<GpuContext | null> {
  shared ??= acquireDevice().then((ctx) => {
    console.error(
      `[gpu tests] adapter: ${ctx.info.description} (features: ${ctx.info.features.join(", ")})`,
    );
    return ctx;
  }).catch((e) => {
    if (e instanceof TnlError && e.code === "backend_unavailable") return null;
    throw e;
  });
  return shared;
}

const required = Deno.env.get("TNL_REQUIRE_GPU") === "1";
const available = await gpuContext() !== null;

/** Register a test that needs a WebGPU adapter; `fn` gets the shared device context. */
export function gpuTest(
  name: string,
  fn: (ctx: GpuContext, t: Deno.TestContext) => Promise<void>,
): void {
  Deno.test({
    name,
    ignore: !available && !required,
    // The shared device outlives single tests; its resources are not leaks.
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async (t) => {
      const ctx = await gpuContext();
      if (!ctx) throw new Error("no WebGPU adapter, and TNL_REQUIRE_GPU=1");
      if (ctx.lost) throw ctx.lost;
      await fn(ctx, t);
    },
  });
}

/**
 * Run `fn` with a WebGPU backend of the default test model on the shared device, disposed after.
 */
export async function withDefaultBackend(
  ctx: GpuContext,
  options: { maxSlots: number; maxBatch: number; readback?: "auto" | "map" },
  fn: (b: WebGpuBackend) => Promise<void>,
): Promise<void> {
  const config = await loadConfig(DEFAULT_MODEL_DIR + "config.json");
  const src = await openSafetensors(DEFAULT_MODEL_DIR + "model.safetensors");
  const b = await WebGpuBackend.load(src, config, "default", { context: ctx, ...options })
    .finally(() => src.close());
  try {
    await fn(b);
  } finally {
    await b.dispose();
  }
}
