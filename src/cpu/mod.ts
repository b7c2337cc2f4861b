/**
 * The CPU backend: the reference implementation of TransNormerLLM and its WebAssembly SIMD kernels.
 * Weights stay in their stored precision (f32, bf16, f16, int8 with per-row scales); kernel threads
 * are opt-in and never change a result.
 *
 * @example Next-token logits of a prompt on the CPU (the backend edge hosts without WebGPU run)
 * ```ts
 * import { CpuBackend } from "./mod.ts";
 * import { loadConfig } from "../model/config.ts";
 * import { openWeights } from "../model/weights/open.ts";
 *
 * const dir = "models/tnl-shakespeare-6m/";
 * const config = await loadConfig(dir + "config.json");
 * const weights = await openWeights(dir);
 * const cpu = await CpuBackend.load(weights, config, dir, { threads: "auto" });
 * weights.close();
 * const slot = cpu.allocState();
 * const logits = await cpu.prefill(slot, Int32Array.of(1, 2, 3), "last");
 * console.log(logits.length === config.vocabSize);
 * await cpu.dispose();
 * ```
 * @module
 */

export { CpuBackend } from "./backend.ts";
export { CpuModel, type CpuModelOptions, cpuThreads } from "./model.ts";
export { type CpuWeights, loadCpuWeights } from "./weights.ts";
export type { StoredMatrix } from "./stored.ts";
