/**
 * A session frozen as plain data: everything needed to resume generation exactly where it stopped.
 * The engine produces and consumes it; the state codec (`src/state/`) serializes it. Invariant: the
 * model state has consumed every token of `tokens` except `pending`, which is fed first on resume,
 * so the first token after a resume is the one an uninterrupted run would produce.
 * @module
 */

import type { ModelState } from "./state.ts";

/** Plain sampling settings (validated by the engine's sampler). */
export type PlainSampling = Record<string, unknown>;

/** A whole session as data. */
export interface SessionSnapshot {
  /** Session id (validated: 1-128 of [A-Za-z0-9_-]). */
  id: string;
  /** Monotonic generation, incremented each time the session is saved (replays are detectable). */
  generation: number;
  /** Recurrent state; `state.position` tokens consumed. */
  state: ModelState;
  /** Token history (prompts and generations), when kept; its last entry is `pending`. */
  tokens: Int32Array | null;
  /** Per history token: 1 when the model generated it, 0 when it came from a prompt. */
  generated: Uint8Array | null;
  /** The next token to feed (not yet consumed), or -1 for an empty session. */
  pending: number;
  /** Sampling settings of the session's last request. */
  sampling: PlainSampling;
  /** RNG state: the seed and the draws made so far. */
  rng: { seed: number; counter: number };
  /** Text held back at the end of the last request: incomplete UTF-8 bytes and a partial stop match. */
  text: { pendingBytes: Uint8Array; heldStop: string };
  /** Creation and last update (ms since the epoch). */
  createdAt: number;
  /** Last update (ms since the epoch). */
  updatedAt: number;
  /**
   * The lossy encoding (`"q8+deflate"`, ...) a state this one continues from was stored in, or
   * null (absent) when every state it descends from was exact: its values then only approximate
   * those of an uninterrupted run, whatever encoding it is saved in next.
   */
  lossy?: string | null;
}

/** Session ids: 1-128 characters of letters, digits, '-' and '_'. */
export const SESSION_ID_PATTERN: RegExp = /^[A-Za-z0-9_-]{1,128}$/;

/** Whether `id` is a valid session id. */
export function isValidSessionId(id: unknown): id is string {
  return typeof id === "string" && SESSION_ID_PATTERN.test(id);
}

/** A fresh random session id (URL-safe, 22 characters). */
export function newSessionId(): string {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return "s_" + b.toBase64({ alphabet: "base64url", omitPadding: true });
}
