/**
 * The one table of sampling fields. Request validation (`src/http/schemas.ts`), the request field
 * names in error messages (`src/http/errors.ts`), the edge client (`src/edge/client.ts`), the CLI
 * flags (`main.ts generate`), the engine's checks and defaults (`sampling_params.ts`) and the GPU
 * sampling row (`src/gpu/layout.ts`) are all derived from it. A new field is one row here, one line
 * in `SamplingParams` / `ResolvedSamplingParams`, and its CPU (`sampler.ts`) and kernel code.
 *
 * Plain data, imported by rooms below the engine too (`src/gpu` reads it for its layout).
 * @module
 */

/** Sampling parameters as a caller gives them; every field is optional (`null` reads as absent). */
export interface SamplingParams {
  /** Softmax temperature, ≥ 0; 0 = greedy (arg-max). Default 1. */
  temperature?: number;
  /** Keep the k most probable tokens (ties at the boundary kept); 0 = off. Default 0. */
  topK?: number;
  /** Nucleus sampling mass, in (0, 1]; 1 = off. Default 1. */
  topP?: number;
  /** Keep tokens with probability ≥ minP · (largest probability), in [0, 1]; 0 = off. Default 0. */
  minP?: number;
  /** Hugging Face repetition penalty over prompt and generated tokens, > 0; 1 = off. Default 1. */
  repetitionPenalty?: number;
  /** OpenAI presence penalty over generated tokens, in [-2, 2]. Default 0. */
  presencePenalty?: number;
  /** OpenAI frequency penalty over generated tokens, in [-2, 2]. Default 0. */
  frequencyPenalty?: number;
  /** Added to the logits of the given token ids; values in [-100, 100]. Keys may be strings (JSON). */
  logitBias?: Record<number, number> | Record<string, number> | ReadonlyMap<number, number>;
  /** Seed of the session's random stream (a non-negative safe integer); random when absent. */
  seed?: number;
}

/** Whether `v` is a non-negative safe integer (a token id, a count, a seed). */
export function isNonNegInt(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/** One sampling field: its names, type and range, default, CLI flag and GPU word. */
export interface SamplingField {
  /** Engine name: the key in `SamplingParams` (camelCase). */
  readonly key: keyof SamplingParams;
  /** Request (wire) name, OpenAI or vLLM style (snake_case); the CLI flag is it with dashes. */
  readonly wire: string;
  /**
   * `number`: a finite number on the wire; `integer`: an integer; `seed`: a non-negative integer
   * (a session's random stream); `bias`: an object of token ids to biases.
   */
  readonly type: "number" | "integer" | "seed" | "bias";
  /** Values the engine accepts (for `bias`: each bias), and how an error message says so. */
  readonly range: { readonly ok: (v: number) => boolean; readonly text: string };
  /** The default, which turns the filter off (number and integer fields). */
  readonly default?: number;
  /** `integer` only: least value a request may send; values below 0 read as 0 (vLLM's -1 = off). */
  readonly wireMin?: number;
  /** Placeholder of the CLI flag in `generate --help` (`--top-k N`); absent: no CLI flag. */
  readonly cli?: string;
  /**
   * The field's word in each row of the GPU `sampling` buffer, in table order (slot 0, 1, ...):
   * its name in `SAMPLING` and how it is stored (a `bias` field stores its entry count).
   */
  readonly gpu?: { readonly name: string; readonly word: "f32" | "u32" };
}

const inPm2: SamplingField["range"] = { ok: (v: number) => v >= -2 && v <= 2, text: "in [-2, 2]" };

/**
 * Every sampling field, in the order they are checked (the first bad one is reported) and laid out
 * on the GPU.
 */
export const SAMPLING_FIELDS: readonly SamplingField[] = [
  {
    key: "temperature",
    wire: "temperature",
    type: "number",
    range: { ok: (v) => Number.isFinite(v) && v >= 0, text: "≥ 0" },
    default: 1,
    cli: "T",
    gpu: { name: "temperature", word: "f32" },
  },
  {
    key: "topK",
    wire: "top_k",
    type: "integer",
    range: { ok: (v) => Number.isSafeInteger(v) && v >= 0, text: "an integer ≥ 0" },
    default: 0,
    wireMin: -1,
    cli: "N",
    gpu: { name: "topK", word: "u32" },
  },
  {
    key: "topP",
    wire: "top_p",
    type: "number",
    range: { ok: (v) => v > 0 && v <= 1, text: "in (0, 1]" },
    default: 1,
    cli: "P",
    gpu: { name: "topP", word: "f32" },
  },
  {
    key: "minP",
    wire: "min_p",
    type: "number",
    range: { ok: (v) => v >= 0 && v <= 1, text: "in [0, 1]" },
    default: 0,
    cli: "P",
    gpu: { name: "minP", word: "f32" },
  },
  {
    key: "repetitionPenalty",
    wire: "repetition_penalty",
    type: "number",
    range: { ok: (v) => Number.isFinite(v) && v > 0, text: "a finite number > 0" },
    default: 1,
    cli: "R",
    gpu: { name: "repetition", word: "f32" },
  },
  {
    key: "presencePenalty",
    wire: "presence_penalty",
    type: "number",
    range: inPm2,
    default: 0,
    gpu: { name: "presence", word: "f32" },
  },
  {
    key: "frequencyPenalty",
    wire: "frequency_penalty",
    type: "number",
    range: inPm2,
    default: 0,
    gpu: { name: "frequency", word: "f32" },
  },
  {
    key: "logitBias",
    wire: "logit_bias",
    type: "bias",
    range: { ok: (v) => v >= -100 && v <= 100, text: "in [-100, 100]" },
    gpu: { name: "biasCount", word: "u32" },
  },
  {
    key: "seed",
    wire: "seed",
    type: "seed",
    range: { ok: isNonNegInt, text: "a non-negative safe integer" },
    cli: "S",
  },
];
