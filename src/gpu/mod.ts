/**
 * The WebGPU backend: the device (limits and features asked for explicitly, subgroups where they
 * work), the model's weights and state slots on the GPU, the per-layer dispatch plans, prefill
 * (Lightning Attention and tiled GEMMs), and the decode loop that samples on the device and reads
 * back once per round. WGSL lives in `wgsl/`; this room assembles and dispatches it.
 *
 * @example Load the default model on the GPU (when there is one) and decode a step
 * ```ts
 * import { hasWebGpu, WebGpuBackend } from "./mod.ts";
 * import { loadConfig } from "../model/config.ts";
 * import { openWeights } from "../model/weights/open.ts";
 *
 * if (hasWebGpu()) {
 *   const dir = "models/tnl-shakespeare-6m/";
 *   const config = await loadConfig(dir + "config.json");
 *   const weights = await openWeights(dir);
 *   const gpu = await WebGpuBackend.load(weights, config, dir);
 *   weights.close();
 *   const slot = gpu.allocState();
 *   const logits = await gpu.prefill(slot, Int32Array.of(1, 2, 3), "last");
 *   console.log(logits.length === config.vocabSize);
 *   await gpu.dispose();
 * }
 * ```
 * @module
 */

export { WebGpuBackend, type WebGpuBackendOptions } from "./backend.ts";
export {
  acquireDevice,
  type DeviceOptions,
  type GpuContext,
  type GpuInfo,
  type GpuLimitName,
  hasWebGpu,
} from "./device.ts";
export type { GpuModelOptions } from "./model.ts";
export type { GpuPrefillOptions } from "./prefill.ts";
export type { GemmTile } from "./gemm_tiling.ts";
