/**
 * Stop sequences, matched on generated TEXT across token boundaries and never emitted.
 *
 * A `StopMatcher` holds back only the longest suffix of the text so far that could still be the
 * start of a stop string (plus a trailing high surrogate, so a surrogate pair is never split in
 * emitted text), and emits everything else. Its state is a plain value, so a session resumed in
 * another request continues matching across the request boundary.
 * @module
 */

import { InputError } from "../errors.ts";

/** Most stop strings accepted (OpenAI allows 4). */
export const MAX_STOP_SEQUENCES = 16;
/** Longest stop string accepted, in UTF-16 code units. */
export const MAX_STOP_LENGTH = 256;

/** Plain (JSON / msgpack) state of a `StopMatcher`. */
export interface StopMatcherState {
  /** Text received but not yet emitted. */
  held: string;
  /** Whether a stop string has matched (further text is dropped). */
  stopped: boolean;
}

/** What one `push` releases. */
export interface StopPushResult {
  /** Text safe to emit now (never part of a stop string). */
  emit: string;
  /** Whether a stop string has matched; generation should end. */
  stopped: boolean;
  /** The stop string that matched, when `stopped` became true in this push. */
  matched?: string;
}

/**
 * Check stop strings: at most 16, each a non-empty well-formed string (no lone surrogates) of at
 * most 256 UTF-16 code units. Returns them without duplicates. Throws `InputError` ("stop").
 */
export function validateStopSequences(stops: readonly string[]): string[] {
  if (!Array.isArray(stops)) throw new InputError("stop", "must be an array of strings");
  if (stops.length > MAX_STOP_SEQUENCES) {
    throw new InputError(
      "stop",
      `at most ${MAX_STOP_SEQUENCES} stop sequences, got ${stops.length}`,
    );
  }
  const out: string[] = [];
  for (let i = 0; i < stops.length; i++) {
    const s: unknown = stops[i];
    if (typeof s !== "string") throw new InputError("stop", `entry ${i} is not a string`);
    if (s.length === 0) throw new InputError("stop", `entry ${i} is empty`);
    if (s.length > MAX_STOP_LENGTH) {
      throw new InputError("stop", `entry ${i} is longer than ${MAX_STOP_LENGTH} characters`);
    }
    if (!s.isWellFormed()) throw new InputError("stop", `entry ${i} has a lone surrogate`);
    if (!out.includes(s)) out.push(s);
  }
  return out;
}

function isHighSurrogate(c: number): boolean {
  return c >= 0xd800 && c <= 0xdbff;
}

/** Matches stop strings on streamed text; see the module doc. */
export class StopMatcher {
  /** The (deduplicated) stop strings. */
  readonly stops: readonly string[];
  #held = "";
  #stopped = false;
  #maxLen = 0;

  /**
   * A matcher for `stops` (checked by `validateStopSequences`), starting fresh or from a saved
   * `state`. Throws `InputError` for bad stop strings or a malformed state.
   */
  constructor(stops: readonly string[], state?: StopMatcherState) {
    this.stops = validateStopSequences(stops);
    for (const s of this.stops) this.#maxLen = Math.max(this.#maxLen, s.length);
    if (state !== undefined) {
      if (typeof state !== "object" || state === null) {
        throw new InputError("stopState", "must be an object { held, stopped }");
      }
      if (typeof state.held !== "string" || typeof state.stopped !== "boolean") {
        throw new InputError("stopState", "held must be a string and stopped a boolean");
      }
      if (state.held.length > Math.max(this.#maxLen, 1)) {
        throw new InputError("stopState", "held text is longer than any stop string");
      }
      this.#held = state.held;
      this.#stopped = state.stopped;
    }
  }

  /** Whether a stop string has matched. */
  get stopped(): boolean {
    return this.#stopped;
  }

  /** The plain state to save with a session. */
  get state(): StopMatcherState {
    return { held: this.#held, stopped: this.#stopped };
  }

  /**
   * Feed generated text. Returns the text that can be emitted now: everything before a full match
   * (then `stopped` is true and the rest is dropped), or everything except the held-back suffix.
   * When several stop strings match, the one that ends first wins (ties: the longer one).
   */
  push(textDelta: string): StopPushResult {
    if (this.#stopped) return { emit: "", stopped: true };
    const buf = this.#held + textDelta;
    if (buf.length === 0) return { emit: "", stopped: false };

    // The match that completes first wins (then the one starting first), so the result does not
    // depend on how the text is split into deltas.
    let at = -1;
    let end = Infinity;
    let matched = "";
    for (const s of this.stops) {
      // Only a match ending in the new text is new; the held text alone never contains one.
      const from = Math.max(0, this.#held.length - s.length + 1);
      const i = buf.indexOf(s, from);
      if (i >= 0 && (i + s.length < end || (i + s.length === end && i < at))) {
        at = i;
        end = i + s.length;
        matched = s;
      }
    }
    if (at >= 0) {
      this.#held = "";
      this.#stopped = true;
      return { emit: buf.slice(0, at), stopped: true, matched };
    }

    let keep = this.#holdLength(buf);
    if (keep < buf.length && isHighSurrogate(buf.charCodeAt(buf.length - keep - 1))) keep++;
    this.#held = buf.slice(buf.length - keep);
    return { emit: buf.slice(0, buf.length - keep), stopped: false };
  }

  /** Release the held-back text (at the end of generation) and clear it. */
  flush(): string {
    const out = this.#held;
    this.#held = "";
    return out;
  }

  /** Length of the longest suffix of `buf` that is a proper prefix of some stop string. */
  #holdLength(buf: string): number {
    const n = buf.length;
    let best = 0;
    for (const s of this.stops) {
      const first = s.charCodeAt(0);
      for (let k = Math.min(s.length - 1, n); k > best; k--) {
        const start = n - k;
        if (buf.charCodeAt(start) !== first) continue;
        let j = 1;
        while (j < k && buf.charCodeAt(start + j) === s.charCodeAt(j)) j++;
        if (j === k) {
          best = k;
          break;
        }
      }
    }
    return best;
  }
}
