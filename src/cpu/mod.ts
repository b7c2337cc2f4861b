/**
 * The CPU backend: the reference implementation of TransNormerLLM and its WebAssembly SIMD kernels.
 * @module
 */

export { CpuBackend } from "./backend.ts";
export { CpuModel, type CpuModelOptions, cpuThreads } from "./model.ts";
export { type CpuWeights, loadCpuWeights } from "./weights.ts";
export type { StoredMatrix } from "./stored.ts";
