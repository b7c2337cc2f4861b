/**
 * The model room, below every other: the typed and validated configuration (`config.ts`), weight
 * files (safetensors, torch zip + pickle, sharded indexes; `weights/`), Hugging Face-layout sources
 * (`hub.ts`), weight-only int8 (`quantize.ts`), the recurrent state and its snapshots, the model
 * fingerprint, and random weights at the released shapes for benchmarks.
 *
 * @example Read the default model's configuration and state size, and a released shape's
 * ```ts
 * import { loadConfig, openWeights, shapeConfig, stateBytes } from "./mod.ts";
 *
 * const dir = "models/tnl-shakespeare-6m/";
 * const config = await loadConfig(dir + "config.json");
 * const weights = await openWeights(dir);
 * console.log(config.numLayers, weights.tensors.size, stateBytes(config));
 * weights.close();
 * console.log(stateBytes(shapeConfig("385m")) / 2 ** 20, "MiB per 385M session");
 * ```
 * @module
 */

export {
  type Activation,
  loadConfig,
  type ModelConfig,
  type NormType,
  parseConfig,
} from "./config.ts";
export { openWeights } from "./weights/open.ts";
export type { TensorInfo, TensorSource } from "./weights/source.ts";
export {
  consoleProgress,
  type ConsoleProgressOptions,
  type DownloadProgress,
  resolveModelSource,
  type ResolveOptions,
} from "./hub.ts";
export {
  dequantizeInt8,
  type Int8Matrix,
  quantizeInt8,
  WEIGHT_QUANTIZATIONS,
  type WeightQuantization,
} from "./quantize.ts";
export { cloneState, createState, type ModelState, stateBytes } from "./state.ts";
export type { PlainSampling, SessionSnapshot } from "./snapshot.ts";
export { FingerprintingSource } from "./fingerprint.ts";
export { randomSource, RELEASED_SHAPES, shapeConfig } from "./random_weights.ts";
