/**
 * The tokens a sequence has seen, for the repetition, presence and frequency penalties: distinct
 * prompt and generated ids, counts of generated ids, and their plain (JSON / msgpack) form.
 * @module
 */

import { InputError } from "../errors.ts";
import { isNonNegInt } from "./sampling_fields.ts";

/** Plain (JSON / msgpack) form of a `TokenHistory`. */
export interface TokenHistoryState {
  /** Distinct token ids seen in the prompt or generated, increasing. */
  seen: number[];
  /** `[token, count]` for each generated token, by increasing token id. */
  generated: [number, number][];
}

/**
 * The tokens a sequence has seen: distinct prompt and generated ids (for the repetition penalty)
 * and counts of generated ids (for the presence and frequency penalties).
 */
export class TokenHistory {
  #seen: number[] = [];
  #seenSet = new Set<number>();
  #genIds: number[] = [];
  #genCounts: number[] = [];
  #genIndex = new Map<number, number>();

  /** A history holding `prompt` (prompt tokens) and `generated` (generated tokens), in order. */
  constructor(prompt: ArrayLike<number> = [], generated: ArrayLike<number> = []) {
    this.addPrompt(prompt);
    for (let i = 0; i < generated.length; i++) this.addGenerated(generated[i]);
  }

  /** Record prompt (or other non-generated) tokens: they count for the repetition penalty only. */
  addPrompt(tokens: ArrayLike<number>): void {
    for (let i = 0; i < tokens.length; i++) this.#see(tokens[i], "tokens");
  }

  /** Record one generated token. */
  addGenerated(token: number): void {
    this.#see(token, "token");
    const j = this.#genIndex.get(token);
    if (j === undefined) {
      this.#genIndex.set(token, this.#genIds.length);
      this.#genIds.push(token);
      this.#genCounts.push(1);
    } else {
      this.#genCounts[j]++;
    }
  }

  #see(token: number, field: string): void {
    if (!isNonNegInt(token)) {
      throw new InputError(field, `token ids must be non-negative integers, got ${String(token)}`);
    }
    if (!this.#seenSet.has(token)) {
      this.#seenSet.add(token);
      this.#seen.push(token);
    }
  }

  /** Whether `token` was seen in the prompt or generated. */
  has(token: number): boolean {
    return this.#seenSet.has(token);
  }

  /** How often `token` was generated. */
  count(token: number): number {
    const j = this.#genIndex.get(token);
    return j === undefined ? 0 : this.#genCounts[j];
  }

  /** Distinct tokens seen (prompt or generated), in first-seen order. Do not modify. */
  get seenIds(): readonly number[] {
    return this.#seen;
  }

  /** Distinct generated tokens, in first-generated order. Do not modify. */
  get generatedIds(): readonly number[] {
    return this.#genIds;
  }

  /** Counts of `generatedIds`, index for index. Do not modify. */
  get generatedCounts(): readonly number[] {
    return this.#genCounts;
  }

  /** A copy of this history. */
  clone(): TokenHistory {
    return TokenHistory.fromState(this.toState());
  }

  /** The plain form (sorted, so equal histories give equal values). */
  toState(): TokenHistoryState {
    const seen = [...this.#seen].sort((a, b) => a - b);
    const generated = this.#genIds.map((t, j): [number, number] => [t, this.#genCounts[j]]);
    generated.sort((a, b) => a[0] - b[0]);
    return { seen, generated };
  }

  /**
   * Rebuild a history from its plain form, checking it; throws `InputError` naming `field`.
   * With `vocabSize`, token ids must also be below it.
   */
  static fromState(value: unknown, vocabSize?: number, field = "history"): TokenHistory {
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      throw new InputError(field, "must be an object { seen, generated }");
    }
    const v = value as Record<string, unknown>;
    const limit = vocabSize ?? Number.MAX_SAFE_INTEGER;
    const id = (t: unknown, f: string): number => {
      if (!isNonNegInt(t) || t >= limit) {
        throw new InputError(f, `not a valid token id: ${String(t)}`);
      }
      return t;
    };
    if (!Array.isArray(v.seen)) throw new InputError(`${field}.seen`, "must be an array");
    if (!Array.isArray(v.generated)) throw new InputError(`${field}.generated`, "must be an array");
    const h = new TokenHistory();
    for (const t of v.seen) h.#see(id(t, `${field}.seen`), `${field}.seen`);
    for (const e of v.generated) {
      if (!Array.isArray(e) || e.length !== 2) {
        throw new InputError(`${field}.generated`, "entries must be [token, count]");
      }
      const t = id(e[0], `${field}.generated`);
      const c = e[1];
      if (!isNonNegInt(c) || c === 0) {
        throw new InputError(`${field}.generated`, `count must be a positive integer, got ${c}`);
      }
      if (h.#genIndex.has(t)) throw new InputError(`${field}.generated`, `duplicate token ${t}`);
      h.#see(t, `${field}.generated`);
      h.#genIndex.set(t, h.#genIds.length);
      h.#genIds.push(t);
      h.#genCounts.push(c);
    }
    return h;
  }
}
