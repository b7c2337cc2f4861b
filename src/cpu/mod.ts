/**
 * The CPU backend: the f32 reference implementation of TransNormerLLM.
 * @module
 */

export { CpuBackend } from "./backend.ts";
export { CpuModel, type CpuModelOptions } from "./model.ts";
export { type CpuWeights, loadCpuWeights } from "./weights.ts";
