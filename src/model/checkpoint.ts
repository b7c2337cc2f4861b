/**
 * The tensors of a TransNormerLLM checkpoint: their names as the official code saves them, the
 * shapes the config implies, and validated reads.
 * @module
 */

import { WeightsError } from "../errors.ts";
import type { ModelConfig } from "./config.ts";
import { type FloatDType, isFloatDType, toFloat32 } from "./weights/dtype.ts";
import type { TensorInfo, TensorSource } from "./weights/source.ts";

/** Per-layer tensor roles. */
export type LayerTensor =
  | "qkvu"
  | "qkvuBias"
  | "out"
  | "outBias"
  | "theta"
  | "l1"
  | "l1Bias"
  | "l2"
  | "l2Bias"
  | "l3"
  | "l3Bias"
  | "tokenNormW"
  | "tokenNormB"
  | "mixerNormW"
  | "mixerNormB"
  | "channelNormW"
  | "channelNormB";

/** Model-level tensor roles. */
export type GlobalTensor = "embed" | "head" | "finalNormW" | "finalNormB";

/** One expected tensor. */
export interface TensorSpec {
  /** Name in the checkpoint (with the detected prefix). */
  readonly name: string;
  /** Expected shape. */
  readonly shape: readonly number[];
}

/** The expected tensors, by role, for a config; `prefix` is "model." for HF checkpoints. */
export interface CheckpointSpec {
  /** Model-level tensors present for this config. */
  readonly global: Partial<Record<GlobalTensor, TensorSpec>>;
  /** Per layer, the tensors present for this config. */
  readonly layers: readonly Partial<Record<LayerTensor, TensorSpec>>[];
}

const LAYER_NAMES: Record<LayerTensor, string> = {
  qkvu: "token_mixer.qkvu_proj.weight",
  qkvuBias: "token_mixer.qkvu_proj.bias",
  out: "token_mixer.out_proj.weight",
  outBias: "token_mixer.out_proj.bias",
  theta: "token_mixer.lrpe.theta",
  l1: "channel_mixer.l1.weight",
  l1Bias: "channel_mixer.l1.bias",
  l2: "channel_mixer.l2.weight",
  l2Bias: "channel_mixer.l2.bias",
  l3: "channel_mixer.l3.weight",
  l3Bias: "channel_mixer.l3.bias",
  tokenNormW: "token_norm.weight",
  tokenNormB: "token_norm.bias",
  mixerNormW: "token_mixer.norm.weight",
  mixerNormB: "token_mixer.norm.bias",
  channelNormW: "channel_norm.weight",
  channelNormB: "channel_norm.bias",
};

/** Detect the name prefix ("model." in Hugging Face checkpoints, "" in bare state dicts). */
export function detectPrefix(source: TensorSource, label: string): string {
  if (source.tensors.has("model.embed_tokens.weight")) return "model.";
  if (source.tensors.has("embed_tokens.weight")) return "";
  throw new WeightsError(
    label,
    "model.embed_tokens.weight",
    "missing (no embedding in the checkpoint)",
  );
}

/** The tensors a config needs. */
export function checkpointSpec(config: ModelConfig, prefix = "model."): CheckpointSpec {
  const { vocabSize: V, embedDim: D, hiddenDim: H, gluDim: G, numHeads: h, headDim: hd } = config;
  const ln = config.normType === "layernorm";
  const global: Partial<Record<GlobalTensor, TensorSpec>> = {
    embed: { name: `${prefix}embed_tokens.weight`, shape: [V, D] },
  };
  if (!config.tieWordEmbeddings) global.head = { name: "lm_head.weight", shape: [V, D] };
  if (ln) {
    global.finalNormW = { name: `${prefix}final_norm.weight`, shape: [D] };
    global.finalNormB = { name: `${prefix}final_norm.bias`, shape: [D] };
  }
  const layers = Array.from({ length: config.numLayers }, (_, l) => {
    const shapes: Partial<Record<LayerTensor, number[]>> = {
      qkvu: [4 * H, D],
      out: [D, H],
      l1: [G, D],
      l2: [G, D],
      l3: [D, G],
    };
    if (config.bias) {
      Object.assign(shapes, {
        qkvuBias: [4 * H],
        outBias: [D],
        l1Bias: [G],
        l2Bias: [G],
        l3Bias: [D],
      });
    }
    if (config.lrpe[l]) shapes.theta = [h, 1, hd];
    if (ln) {
      Object.assign(shapes, {
        tokenNormW: [D],
        tokenNormB: [D],
        mixerNormW: [H],
        mixerNormB: [H],
        channelNormW: [D],
        channelNormB: [D],
      });
    }
    const out: Partial<Record<LayerTensor, TensorSpec>> = {};
    for (const [role, shape] of Object.entries(shapes) as [LayerTensor, number[]][]) {
      out[role] = { name: `${prefix}layers.${l}.${LAYER_NAMES[role]}`, shape };
    }
    return out;
  });
  return { global, layers };
}

/** Every spec of a checkpoint spec, flattened. */
export function allSpecs(spec: CheckpointSpec): TensorSpec[] {
  return [
    ...Object.values(spec.global),
    ...spec.layers.flatMap((l) => Object.values(l)),
  ] as TensorSpec[];
}

/** Check that `info` exists with the expected shape and a float dtype. */
export function checkTensor(
  source: TensorSource,
  spec: TensorSpec,
  label: string,
): TensorInfo & { dtype: FloatDType } {
  const info = source.tensors.get(spec.name);
  if (!info) throw new WeightsError(label, spec.name, `missing (expected shape [${spec.shape}])`);
  const same = info.shape.length === spec.shape.length &&
    info.shape.every((d, i) => d === spec.shape[i]);
  if (!same) {
    throw new WeightsError(info.file, spec.name, `shape [${info.shape}], expected [${spec.shape}]`);
  }
  if (!isFloatDType(info.dtype)) {
    throw new WeightsError(
      info.file,
      spec.name,
      `dtype ${info.dtype} is not a weight dtype (F32, F16, BF16)`,
    );
  }
  return info as TensorInfo & { dtype: FloatDType };
}

/** Validate the whole checkpoint against the config before reading any data. */
export function validateCheckpoint(
  source: TensorSource,
  config: ModelConfig,
  label: string,
): CheckpointSpec {
  const spec = checkpointSpec(config, detectPrefix(source, label));
  for (const s of allSpecs(spec)) checkTensor(source, s, label);
  return spec;
}

/** Read a tensor's bytes in its stored dtype, after checking its shape and byte length. */
export async function readTensorBytes(
  source: TensorSource,
  spec: TensorSpec,
  label: string,
): Promise<{ bytes: Uint8Array; info: TensorInfo & { dtype: FloatDType } }> {
  const info = checkTensor(source, spec, label);
  const bytes = await source.read(spec.name);
  if (bytes.byteLength !== info.byteLength) {
    throw new WeightsError(
      info.file,
      spec.name,
      `read ${bytes.byteLength} bytes, expected ${info.byteLength}`,
    );
  }
  return { bytes, info };
}

/** Read a tensor widened to f32, after checking its shape. */
export async function readFloat32(
  source: TensorSource,
  spec: TensorSpec,
  label: string,
): Promise<Float32Array> {
  const { bytes, info } = await readTensorBytes(source, spec, label);
  return toFloat32(bytes, info.dtype);
}
