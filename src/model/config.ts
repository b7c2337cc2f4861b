/**
 * TransNormerLLM `config.json` (Hugging Face layout) parsed into a typed, validated config.
 *
 * Every field the official modeling code reads is checked; an error names the field and the file.
 * @module
 */

import { ConfigError } from "../errors.ts";

/** Activation applied to q and k (`linear_act_fun`), as the official `get_activation_fn` maps it. */
export type Activation = "silu" | "relu" | "elu" | "1+elu" | "2+elu" | "sigmoid" | "gelu" | "none";

/** Normalization layers: SimpleRMSNorm (no weight) or LayerNorm (weight and bias). */
export type NormType = "simplermsnorm" | "layernorm";

/** A validated TransNormerLLM configuration, with the derived sizes every backend needs. */
export interface ModelConfig {
  /** Vocabulary size (rows of the embedding). */
  readonly vocabSize: number;
  /** Model width `decoder_embed_dim` (D). */
  readonly embedDim: number;
  /** Token-mixer width `hidden_dim` (H): q, k, v, u are each H wide. */
  readonly hiddenDim: number;
  /** Number of decoder layers (L). */
  readonly numLayers: number;
  /** Attention heads (h). */
  readonly numHeads: number;
  /** Head width H / h. */
  readonly headDim: number;
  /** SGLU inner width (`glu_dim`, -1 resolved to D). */
  readonly gluDim: number;
  /** Per layer: LRPE on (q and k widen to 2·headDim). */
  readonly lrpe: readonly boolean[];
  /** Embedding scale: sqrt(D), or 1 with `no_scale_embedding`. */
  readonly embedScale: number;
  /** Activation on q and k. */
  readonly activation: Activation;
  /** Normalization type. */
  readonly normType: NormType;
  /** Linear layers carry a bias. */
  readonly bias: boolean;
  /** Token ids. */
  readonly padTokenId: number;
  /** Beginning-of-sequence id. */
  readonly bosTokenId: number;
  /** End-of-sequence id. */
  readonly eosTokenId: number;
  /** The output head is the embedding (always true for released models). */
  readonly tieWordEmbeddings: boolean;
  /** ALiBi slopes s_h, one per head (official `_build_slope_tensor`). */
  readonly slopes: readonly number[];
  /** Per layer, per head: decay λ = exp(-s_h·(1 - l/(L-1) + 1e-5)). */
  readonly decay: readonly (readonly number[])[];
  /** The parsed JSON as given (for fingerprints). */
  readonly raw: Readonly<Record<string, unknown>>;
}

const ACTIVATIONS: Record<string, Activation> = {
  silu: "silu",
  swish: "silu",
  relu: "relu",
  elu: "elu",
  "1+elu": "1+elu",
  "2+elu": "2+elu",
  sigmoid: "sigmoid",
  gelu: "gelu",
  none: "none",
  identity: "none",
};

/** ALiBi slopes as the official code builds them, including head counts that are not powers of 2. */
export function alibiSlopes(n: number): number[] {
  const powerOf2 = (m: number): number[] => {
    const start = 2 ** -(2 ** -(Math.log2(m) - 3));
    return Array.from({ length: m }, (_, i) => start * start ** i);
  };
  if (Number.isInteger(Math.log2(n))) return powerOf2(n);
  const closest = 2 ** Math.floor(Math.log2(n));
  const extra = alibiSlopes(2 * closest).filter((_, i) => i % 2 === 0).slice(0, n - closest);
  return [...powerOf2(closest), ...extra];
}

/**
 * Per-layer decay rates: the official model scales the slopes by (1 - l/(L-1) + 1e-5), and the
 * recurrence multiplies the state by exp(-rate). With a single layer (the official code divides by
 * zero there) the factor is taken as 1 + 1e-5.
 */
export function layerDecay(slopes: readonly number[], layer: number, numLayers: number): number[] {
  const factor = numLayers > 1 ? 1 - layer / (numLayers - 1) + 1e-5 : 1 + 1e-5;
  return slopes.map((s) => Math.exp(-s * factor));
}

/** The per-layer decay *rate* s_h·factor (λ = exp(-rate)); used where exp(-rate·n) is needed. */
export function layerDecayRate(
  slopes: readonly number[],
  layer: number,
  numLayers: number,
): number[] {
  const factor = numLayers > 1 ? 1 - layer / (numLayers - 1) + 1e-5 : 1 + 1e-5;
  return slopes.map((s) => s * factor);
}

/** Rows of the recurrent state of `layer`: 2·headDim with LRPE, headDim otherwise. */
export function stateKeyDim(config: ModelConfig, layer: number): number {
  return config.lrpe[layer] ? 2 * config.headDim : config.headDim;
}

/** Number of f32 values in the state of `layer` ([heads, dk, dv]). */
export function stateLayerSize(config: ModelConfig, layer: number): number {
  return config.numHeads * stateKeyDim(config, layer) * config.headDim;
}

/** Parse and validate a config object; `file` labels errors (a path or "config.json"). */
export function parseConfig(json: unknown, file = "config.json"): ModelConfig {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new ConfigError(file, "(root)", "expected a JSON object");
  }
  const o = json as Record<string, unknown>;
  const int = (field: string, opts: { min?: number; fallback?: number } = {}): number => {
    const v = o[field];
    if (v === undefined && opts.fallback !== undefined) return opts.fallback;
    if (v === undefined) throw new ConfigError(file, field, "missing");
    if (typeof v !== "number" || !Number.isSafeInteger(v)) {
      throw new ConfigError(file, field, `expected an integer, got ${JSON.stringify(v)}`);
    }
    if (opts.min !== undefined && v < opts.min) {
      throw new ConfigError(file, field, `must be at least ${opts.min}, got ${v}`);
    }
    return v;
  };
  const bool = (field: string, fallback: boolean): boolean => {
    const v = o[field];
    if (v === undefined) return fallback;
    if (typeof v !== "boolean") {
      throw new ConfigError(file, field, `expected true or false, got ${JSON.stringify(v)}`);
    }
    return v;
  };
  const str = (field: string, fallback: string): string => {
    const v = o[field];
    if (v === undefined) return fallback;
    if (typeof v !== "string") {
      throw new ConfigError(file, field, `expected a string, got ${JSON.stringify(v)}`);
    }
    return v;
  };

  if (o.model_type !== undefined && o.model_type !== "transnormer") {
    throw new ConfigError(
      file,
      "model_type",
      `expected "transnormer", got ${JSON.stringify(o.model_type)}`,
    );
  }
  const vocabSize = int("vocab_size", { min: 1 });
  const embedDim = int("decoder_embed_dim", { min: 1 });
  const hiddenDim = int("hidden_dim", { min: 1 });
  const numLayers = int("decoder_layers", { min: 1 });
  const numHeads = int("decoder_attention_heads", { min: 1 });
  if (hiddenDim % numHeads !== 0) {
    throw new ConfigError(
      file,
      "decoder_attention_heads",
      `hidden_dim ${hiddenDim} is not divisible by ${numHeads} heads`,
    );
  }
  if (embedDim % numHeads !== 0) {
    throw new ConfigError(
      file,
      "decoder_attention_heads",
      `decoder_embed_dim ${embedDim} is not divisible by ${numHeads} heads`,
    );
  }
  const gluRaw = int("glu_dim");
  if (gluRaw !== -1 && gluRaw < 1) {
    throw new ConfigError(file, "glu_dim", `must be -1 (the width) or positive, got ${gluRaw}`);
  }
  const gluDim = gluRaw === -1 ? embedDim : gluRaw;

  const lrpeRaw = o.linear_use_lrpe_list ?? [];
  if (!Array.isArray(lrpeRaw)) {
    throw new ConfigError(file, "linear_use_lrpe_list", "expected a list of 0/1 per layer");
  }
  let lrpe: boolean[];
  if (lrpeRaw.length === 0) {
    // The official model then uses `linear_use_lrpe` for every layer (default off).
    const all = o.linear_use_lrpe === undefined ? false : Boolean(o.linear_use_lrpe);
    lrpe = Array.from({ length: numLayers }, () => all);
  } else {
    if (lrpeRaw.length !== numLayers) {
      throw new ConfigError(
        file,
        "linear_use_lrpe_list",
        `has ${lrpeRaw.length} entries for ${numLayers} layers`,
      );
    }
    lrpe = lrpeRaw.map((v, i) => {
      if (v === 0 || v === 1 || v === false || v === true) return Boolean(v);
      throw new ConfigError(
        file,
        "linear_use_lrpe_list",
        `entry ${i} must be 0 or 1, got ${JSON.stringify(v)}`,
      );
    });
  }

  const actName = str("linear_act_fun", "silu");
  const activation = ACTIVATIONS[actName];
  if (activation === undefined) {
    throw new ConfigError(
      file,
      "linear_act_fun",
      `unknown activation ${JSON.stringify(actName)} (known: ${
        Object.keys(ACTIVATIONS).join(", ")
      })`,
    );
  }
  const normName = str("norm_type", "simplermsnorm");
  // The official get_norm_fn: "simplermsnorm" → SimpleRMSNorm, anything else → nn.LayerNorm.
  const normType: NormType = normName === "simplermsnorm" ? "simplermsnorm" : "layernorm";

  const padTokenId = int("pad_token_id", { min: 0, fallback: 0 });
  const bosTokenId = int("bos_token_id", { min: 0, fallback: 1 });
  const eosTokenId = int("eos_token_id", { min: 0, fallback: 2 });
  for (
    const [field, id] of [["pad_token_id", padTokenId], ["bos_token_id", bosTokenId], [
      "eos_token_id",
      eosTokenId,
    ]] as const
  ) {
    if (id >= vocabSize) {
      throw new ConfigError(file, field, `${id} is outside the vocabulary of ${vocabSize}`);
    }
  }
  const tieWordEmbeddings = bool("tie_word_embeddings", true);
  const slopes = alibiSlopes(numHeads);
  const decay = Array.from({ length: numLayers }, (_, l) => layerDecay(slopes, l, numLayers));

  return Object.freeze({
    vocabSize,
    embedDim,
    hiddenDim,
    numLayers,
    numHeads,
    headDim: hiddenDim / numHeads,
    gluDim,
    lrpe: Object.freeze(lrpe),
    embedScale: bool("no_scale_embedding", false) ? 1 : Math.sqrt(embedDim),
    activation,
    normType,
    bias: bool("bias", false),
    padTokenId,
    bosTokenId,
    eosTokenId,
    tieWordEmbeddings,
    slopes: Object.freeze(slopes),
    decay: Object.freeze(decay.map((d) => Object.freeze(d))),
    raw: Object.freeze({ ...o }),
  });
}

/** Read and parse `config.json` from a path. */
export async function loadConfig(path: string): Promise<ModelConfig> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new ConfigError(path, "(file)", `cannot read: ${(e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(path, "(file)", `not valid JSON: ${(e as Error).message}`);
  }
  return parseConfig(json, path);
}
