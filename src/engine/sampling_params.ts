/**
 * Sampling parameters: what a caller gives (`SamplingParams`), their defaults, and the checked form
 * the sampler runs on (`validateSamplingParams` → `ResolvedSamplingParams`), with the plain form
 * saved with a session (`toPlainSamplingParams`).
 * @module
 */

import { InputError } from "../errors.ts";
import { isNonNegInt } from "./token_history.ts";

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

/** Parameters checked against a vocabulary by `validateSamplingParams`, with defaults filled in. */
export interface ResolvedSamplingParams {
  /** Marks a checked parameter set. */
  readonly resolved: true;
  /** The vocabulary size these parameters were checked against. */
  readonly vocabSize: number;
  /** Temperature (0 = greedy). */
  readonly temperature: number;
  /** Top-k (0 = off). */
  readonly topK: number;
  /** Top-p (1 = off). */
  readonly topP: number;
  /** Min-p (0 = off). */
  readonly minP: number;
  /** Repetition penalty (1 = off). */
  readonly repetitionPenalty: number;
  /** Presence penalty (0 = off). */
  readonly presencePenalty: number;
  /** Frequency penalty (0 = off). */
  readonly frequencyPenalty: number;
  /** Token ids with a logit bias, increasing. */
  readonly biasIds: Int32Array;
  /** The bias of each id in `biasIds`. */
  readonly biasValues: Float64Array;
  /** The seed, when one was given. */
  readonly seed: number | undefined;
}

/** Default values of every sampling parameter. */
export const DEFAULT_SAMPLING: Readonly<Required<Omit<SamplingParams, "logitBias" | "seed">>> = {
  temperature: 1,
  topK: 0,
  topP: 1,
  minP: 0,
  repetitionPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0,
};

function readNumber(
  p: Record<string, unknown>,
  key: keyof typeof DEFAULT_SAMPLING,
  ok: (v: number) => boolean,
  range: string,
): number {
  const v = p[key];
  if (v === undefined || v === null) return DEFAULT_SAMPLING[key];
  if (typeof v !== "number" || !ok(v)) {
    throw new InputError(key, `must be ${range}, got ${typeof v === "number" ? v : typeof v}`);
  }
  return v;
}

const TOKEN_KEY = /^(0|[1-9][0-9]*)$/;

/**
 * Check sampling parameters against a vocabulary and fill in defaults. Throws `InputError` naming
 * the field for an out-of-range or mistyped value: temperature < 0 or not finite, topP outside
 * (0, 1], topK negative or not an integer, minP outside [0, 1], repetitionPenalty ≤ 0 or not
 * finite, presence / frequency penalties outside [-2, 2], logit bias keys that are not token ids
 * below `vocabSize` or values outside [-100, 100], a seed that is not a non-negative safe integer.
 */
export function validateSamplingParams(
  p: SamplingParams | ResolvedSamplingParams,
  vocabSize: number,
): ResolvedSamplingParams {
  if (!Number.isSafeInteger(vocabSize) || vocabSize <= 0) {
    throw new InputError("vocabSize", `must be a positive integer, got ${vocabSize}`);
  }
  if (typeof p !== "object" || p === null || Array.isArray(p)) {
    throw new InputError("sampling", "must be an object");
  }
  if ((p as ResolvedSamplingParams).resolved === true) {
    const r = p as ResolvedSamplingParams;
    if (r.vocabSize === vocabSize) return r;
    return validateSamplingParams(toPlainSamplingParams(r), vocabSize);
  }
  const o = p as Record<string, unknown>;
  const temperature = readNumber(o, "temperature", (v) => Number.isFinite(v) && v >= 0, "≥ 0");
  const topK = readNumber(o, "topK", (v) => Number.isSafeInteger(v) && v >= 0, "an integer ≥ 0");
  const topP = readNumber(o, "topP", (v) => v > 0 && v <= 1, "in (0, 1]");
  const minP = readNumber(o, "minP", (v) => v >= 0 && v <= 1, "in [0, 1]");
  const repetitionPenalty = readNumber(
    o,
    "repetitionPenalty",
    (v) => Number.isFinite(v) && v > 0,
    "a finite number > 0",
  );
  const inPm2 = (v: number) => v >= -2 && v <= 2;
  const presencePenalty = readNumber(o, "presencePenalty", inPm2, "in [-2, 2]");
  const frequencyPenalty = readNumber(o, "frequencyPenalty", inPm2, "in [-2, 2]");

  let seed: number | undefined;
  if (o.seed !== undefined && o.seed !== null) {
    if (!isNonNegInt(o.seed)) {
      throw new InputError("seed", `must be a non-negative safe integer, got ${String(o.seed)}`);
    }
    seed = o.seed;
  }

  const bias = new Map<number, number>();
  const lb = o.logitBias;
  if (lb !== undefined && lb !== null) {
    if (typeof lb !== "object" || Array.isArray(lb)) {
      throw new InputError("logitBias", "must be an object mapping token ids to biases");
    }
    const entries: Iterable<[unknown, unknown]> = lb instanceof Map
      ? lb.entries()
      : Object.entries(lb);
    for (const [k, v] of entries) {
      let id: number;
      if (typeof k === "number") id = k;
      else if (typeof k === "string" && TOKEN_KEY.test(k)) id = Number(k);
      else id = NaN;
      if (!isNonNegInt(id) || id >= vocabSize) {
        throw new InputError(
          "logitBias",
          `key ${JSON.stringify(String(k))} is not a token id in [0, ${vocabSize})`,
        );
      }
      if (typeof v !== "number" || !(v >= -100 && v <= 100)) {
        throw new InputError("logitBias", `bias of token ${id} must be in [-100, 100], got ${v}`);
      }
      bias.set(id, v);
    }
  }
  const biasIds = Int32Array.from([...bias.keys()].sort((a, b) => a - b));
  const biasValues = Float64Array.from(biasIds, (id) => bias.get(id)!);

  return Object.freeze({
    resolved: true,
    vocabSize,
    temperature,
    topK,
    topP,
    minP,
    repetitionPenalty,
    presencePenalty,
    frequencyPenalty,
    biasIds,
    biasValues,
    seed,
  });
}

/** The plain (JSON / msgpack) form of checked parameters, for saving with a session. */
export function toPlainSamplingParams(r: ResolvedSamplingParams): SamplingParams {
  const out: SamplingParams = {
    temperature: r.temperature,
    topK: r.topK,
    topP: r.topP,
    minP: r.minP,
    repetitionPenalty: r.repetitionPenalty,
    presencePenalty: r.presencePenalty,
    frequencyPenalty: r.frequencyPenalty,
  };
  if (r.biasIds.length > 0) {
    const b: Record<string, number> = {};
    for (let i = 0; i < r.biasIds.length; i++) b[String(r.biasIds[i])] = r.biasValues[i];
    out.logitBias = b;
  }
  if (r.seed !== undefined) out.seed = r.seed;
  return out;
}
