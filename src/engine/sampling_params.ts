/**
 * Sampling parameters: their defaults and the checked form the sampler runs on
 * (`validateSamplingParams` → `ResolvedSamplingParams`), with the plain form saved with a session
 * (`toPlainSamplingParams`), all read from the table of fields (`sampling_fields.ts`).
 * @module
 */

import { InputError } from "../errors.ts";
import {
  isNonNegInt,
  SAMPLING_FIELDS,
  type SamplingField,
  type SamplingParams,
} from "./sampling_fields.ts";

export type { SamplingParams } from "./sampling_fields.ts";

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

/** The fields with a default: every sampling parameter but the logit bias and the seed. */
type DefaultedKey = Exclude<keyof SamplingParams, "logitBias" | "seed">;

/** Default values of every sampling parameter (from `SAMPLING_FIELDS`). */
export const DEFAULT_SAMPLING: Readonly<Required<Pick<SamplingParams, DefaultedKey>>> = Object
  .freeze(
    Object.fromEntries(
      SAMPLING_FIELDS.flatMap((f) => f.default !== undefined ? [[f.key, f.default]] : []),
    ) as Required<Pick<SamplingParams, DefaultedKey>>,
  );

function readNumber(p: Record<string, unknown>, f: SamplingField): number {
  const v = p[f.key];
  if (v === undefined || v === null) return DEFAULT_SAMPLING[f.key as DefaultedKey];
  if (typeof v !== "number" || !f.range.ok(v)) {
    throw new InputError(
      f.key,
      `must be ${f.range.text}, got ${typeof v === "number" ? v : typeof v}`,
    );
  }
  return v;
}

function readSeed(o: Record<string, unknown>, f: SamplingField): number | undefined {
  const v = o[f.key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !f.range.ok(v)) {
    throw new InputError(f.key, `must be ${f.range.text}, got ${String(v)}`);
  }
  return v;
}

const TOKEN_KEY = /^(0|[1-9][0-9]*)$/;

function readBias(o: Record<string, unknown>, f: SamplingField, vocabSize: number) {
  const bias = new Map<number, number>();
  const lb = o[f.key];
  if (lb !== undefined && lb !== null) {
    if (typeof lb !== "object" || Array.isArray(lb)) {
      throw new InputError(f.key, "must be an object mapping token ids to biases");
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
          f.key,
          `key ${JSON.stringify(String(k))} is not a token id in [0, ${vocabSize})`,
        );
      }
      if (typeof v !== "number" || !f.range.ok(v)) {
        throw new InputError(f.key, `bias of token ${id} must be ${f.range.text}, got ${v}`);
      }
      bias.set(id, v);
    }
  }
  const biasIds = Int32Array.from([...bias.keys()].sort((a, b) => a - b));
  const biasValues = Float64Array.from(biasIds, (id) => bias.get(id)!);
  return { biasIds, biasValues };
}

/**
 * Check sampling parameters against a vocabulary and fill in defaults, field by field in the
 * order of `SAMPLING_FIELDS`. Throws `InputError` naming the field for an out-of-range or mistyped
 * value: temperature < 0 or not finite, topP outside (0, 1], topK negative or not an integer, minP
 * outside [0, 1], repetitionPenalty ≤ 0 or not finite, presence / frequency penalties outside
 * [-2, 2], logit bias keys that are not token ids below `vocabSize` or values outside [-100, 100],
 * a seed that is not a non-negative safe integer.
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
  const out: Record<string, unknown> = { resolved: true, vocabSize };
  for (const f of SAMPLING_FIELDS) {
    if (f.type === "seed") out[f.key] = readSeed(o, f);
    else if (f.type === "bias") Object.assign(out, readBias(o, f, vocabSize));
    else out[f.key] = readNumber(o, f);
  }
  return Object.freeze(out as unknown as ResolvedSamplingParams);
}

/** The plain (JSON / msgpack) form of checked parameters, for saving with a session. */
export function toPlainSamplingParams(r: ResolvedSamplingParams): SamplingParams {
  const out: Record<string, unknown> = {};
  for (const f of SAMPLING_FIELDS) {
    if (f.type === "bias") {
      if (r.biasIds.length === 0) continue;
      const b: Record<string, number> = {};
      for (let i = 0; i < r.biasIds.length; i++) b[String(r.biasIds[i])] = r.biasValues[i];
      out[f.key] = b;
    } else {
      const v = (r as unknown as Record<string, unknown>)[f.key];
      if (v !== undefined) out[f.key] = v;
    }
  }
  return out as SamplingParams;
}
