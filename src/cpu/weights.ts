/**
 * The model's weights on the CPU, widened to f32 from whatever the checkpoint stores.
 * @module
 */

import type { ModelConfig } from "../model/config.ts";
import { type CheckpointSpec, readFloat32, validateCheckpoint } from "../model/checkpoint.ts";
import type { TensorSource } from "../model/weights/source.ts";
import { dequantizeInt8, quantizeInt8, type WeightQuantization } from "../model/quantize.ts";

/** One decoder layer's f32 weights (biases and norm weights null when the config has none). */
export interface CpuLayerWeights {
  /** [4H, D] fused q,k,v,u projection. */
  qkvu: Float32Array;
  /** [4H] or null. */
  qkvuBias: Float32Array | null;
  /** [D, H] output projection. */
  out: Float32Array;
  /** [D] or null. */
  outBias: Float32Array | null;
  /** [h, hd] LRPE angles per head (null without LRPE). */
  theta: Float32Array | null;
  /** SGLU [G, D], [G, D], [D, G] and their biases. */
  l1: Float32Array;
  /** [G, D]. */
  l2: Float32Array;
  /** [D, G]. */
  l3: Float32Array;
  /** [G] or null. */
  l1Bias: Float32Array | null;
  /** [G] or null. */
  l2Bias: Float32Array | null;
  /** [D] or null. */
  l3Bias: Float32Array | null;
  /** LayerNorm weights (null with SimpleRMSNorm). */
  tokenNorm: { w: Float32Array; b: Float32Array } | null;
  /** LayerNorm of the token mixer output over H. */
  mixerNorm: { w: Float32Array; b: Float32Array } | null;
  /** LayerNorm before the channel mixer. */
  channelNorm: { w: Float32Array; b: Float32Array } | null;
}

/** All f32 weights of a model. */
export interface CpuWeights {
  /** [V, D] token embedding (also the output head when tied). */
  embed: Float32Array;
  /** [V, D] output head (the embedding when tied). */
  head: Float32Array;
  /** Final LayerNorm (null with SimpleRMSNorm). */
  finalNorm: { w: Float32Array; b: Float32Array } | null;
  /** Per layer. */
  layers: CpuLayerWeights[];
}

/**
 * Read and widen every tensor the config needs; validates names and shapes first. With `int8`
 * quantization every matrix is replaced by its int8 reconstruction q·s (see `quantizeInt8`), so
 * this reference runs exactly the model the GPU kernels run from int8 weights.
 */
export async function loadCpuWeights(
  source: TensorSource,
  config: ModelConfig,
  label: string,
  quantize: WeightQuantization = "none",
): Promise<CpuWeights> {
  const spec: CheckpointSpec = validateCheckpoint(source, config, label);
  type Spec = { name: string; shape: readonly number[] };
  const read = (s: Spec | undefined) => s ? readFloat32(source, s, label) : Promise.resolve(null);
  const matrix = async (s: Spec | undefined): Promise<Float32Array> => {
    const v = (await read(s))!;
    if (quantize === "none") return v;
    return dequantizeInt8(quantizeInt8(v, s!.shape[0], s!.shape[1], s!.name));
  };
  const pair = async (w: typeof spec.global.finalNormW, b: typeof spec.global.finalNormB) =>
    w && b ? { w: (await read(w))!, b: (await read(b))! } : null;

  const embed = await matrix(spec.global.embed);
  const head = spec.global.head ? await matrix(spec.global.head) : embed;
  const finalNorm = await pair(spec.global.finalNormW, spec.global.finalNormB);
  const layers: CpuLayerWeights[] = [];
  for (const t of spec.layers) {
    layers.push({
      qkvu: await matrix(t.qkvu),
      qkvuBias: await read(t.qkvuBias),
      out: await matrix(t.out),
      outBias: await read(t.outBias),
      theta: await read(t.theta),
      l1: await matrix(t.l1),
      l2: await matrix(t.l2),
      l3: await matrix(t.l3),
      l1Bias: await read(t.l1Bias),
      l2Bias: await read(t.l2Bias),
      l3Bias: await read(t.l3Bias),
      tokenNorm: await pair(t.tokenNormW, t.tokenNormB),
      mixerNorm: await pair(t.mixerNormW, t.mixerNormB),
      channelNorm: await pair(t.channelNormW, t.channelNormB),
    });
  }
  return { embed, head, finalNorm, layers };
}
