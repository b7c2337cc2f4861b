/**
 * A live session: the host copy of its state, its token history, the pending token, sampling
 * settings, RNG and held-back text. Converts to and from the plain `SessionSnapshot`.
 * @module
 */

import { InputError } from "../errors.ts";
import type { ModelConfig } from "../model/config.ts";
import { isValidSessionId, newSessionId, type SessionSnapshot } from "../model/snapshot.ts";
import { createState, type ModelState } from "../model/state.ts";
import { newRngState, type RngState } from "./rng.ts";
import { TokenHistory } from "./sampler.ts";

/** A resumable conversation with the model. */
export class Session {
  /** Session id. */
  readonly id: string;
  /** Saved generation (incremented on every save). */
  generation: number;
  readonly #config: ModelConfig;
  #state: ModelState | null = null;
  /** Token history. */
  #tokens: Int32Array;
  #generated: Uint8Array;
  #length = 0;
  /** Next token to feed, or -1 when the session is empty. */
  pending: number;
  /** Sampling settings of the last request (plain). */
  sampling: Record<string, unknown>;
  /** RNG state. */
  rng: RngState;
  /** Text held back at the end of the last request. */
  text: { pendingBytes: Uint8Array; heldStop: string };
  /** Creation time (ms). */
  readonly createdAt: number;
  /** Last update (ms). */
  updatedAt: number;
  /** True while a request generates for this session. */
  busy = false;

  /** A new empty session. */
  constructor(config: ModelConfig, id: string = newSessionId()) {
    if (!isValidSessionId(id)) {
      throw new InputError("session", `invalid session id ${JSON.stringify(id)}`);
    }
    this.id = id;
    this.#config = config;
    this.generation = 0;
    this.#tokens = new Int32Array(64);
    this.#generated = new Uint8Array(64);
    this.pending = -1;
    this.sampling = {};
    this.rng = newRngState();
    this.text = { pendingBytes: new Uint8Array(0), heldStop: "" };
    this.createdAt = Date.now();
    this.updatedAt = this.createdAt;
  }

  /** Restore from a snapshot (already validated by the codec). */
  static fromSnapshot(config: ModelConfig, s: SessionSnapshot): Session {
    const session = new Session(config, s.id);
    session.generation = s.generation;
    session.state = s.state;
    if (s.tokens) {
      session.#append(s.tokens, s.generated ?? new Uint8Array(s.tokens.length));
    }
    session.pending = s.pending;
    session.sampling = { ...s.sampling };
    session.rng = { seed: s.rng.seed, counter: s.rng.counter };
    session.text = { pendingBytes: s.text.pendingBytes.slice(), heldStop: s.text.heldStop };
    (session as { createdAt: number }).createdAt = s.createdAt;
    session.updatedAt = s.updatedAt;
    return session;
  }

  /**
   * Host state: everything in `tokens` but `pending` consumed. Made on first use (a state is 13 MB
   * at 385M: a request that never keeps its session never allocates one).
   */
  get state(): ModelState {
    return this.#state ??= createState(this.#config);
  }

  /**
   * Replace the host state. Replace it rather than writing into its arrays: an engine that keeps
   * the session's state resident on its backend notices a new state, not edited values.
   */
  set state(s: ModelState) {
    this.#state = s;
    this.#stateVersion++;
  }

  #stateVersion = 0;

  /** Counts replacements of the state (a resident copy is current while this is unchanged). */
  get stateVersion(): number {
    return this.#stateVersion;
  }

  /** Tokens consumed (the state's position), without making the state. */
  get position(): number {
    return this.#state?.position ?? 0;
  }

  /** Plain data of the session (shares the state arrays; copy before mutating). */
  toSnapshot(): SessionSnapshot {
    return {
      id: this.id,
      generation: this.generation,
      state: this.state,
      tokens: this.#tokens.slice(0, this.#length),
      generated: this.#generated.slice(0, this.#length),
      pending: this.pending,
      sampling: { ...this.sampling },
      rng: { ...this.rng },
      text: { pendingBytes: this.text.pendingBytes.slice(), heldStop: this.text.heldStop },
      createdAt: this.createdAt,
      updatedAt: this.updatedAt,
    };
  }

  /** Number of history tokens. */
  get length(): number {
    return this.#length;
  }

  /** The history tokens (a view; do not keep across appends). */
  get tokens(): Int32Array {
    return this.#tokens.subarray(0, this.#length);
  }

  /** Per history token: 1 when generated. */
  get generatedFlags(): Uint8Array {
    return this.#generated.subarray(0, this.#length);
  }

  #append(ids: ArrayLike<number>, flags: ArrayLike<number> | number): void {
    const need = this.#length + ids.length;
    if (need > this.#tokens.length) {
      const cap = Math.max(need, this.#tokens.length * 2);
      const t = new Int32Array(cap);
      t.set(this.#tokens.subarray(0, this.#length));
      const g = new Uint8Array(cap);
      g.set(this.#generated.subarray(0, this.#length));
      this.#tokens = t;
      this.#generated = g;
    }
    for (let i = 0; i < ids.length; i++) {
      this.#tokens[this.#length + i] = ids[i];
      this.#generated[this.#length + i] = typeof flags === "number" ? flags : flags[i];
    }
    this.#length = need;
  }

  /** Drop history tokens beyond `length` (to undo what a failed or cancelled request added). */
  truncate(length: number): void {
    this.#length = Math.min(this.#length, Math.max(0, length));
  }

  /** Record prompt tokens. */
  appendPrompt(ids: ArrayLike<number>): void {
    this.#append(ids, 0);
  }

  /** Record one generated token. */
  appendGenerated(id: number): void {
    this.#append([id], 1);
  }

  /** A sampler history (prompt tokens seen; generated tokens counted). */
  history(): TokenHistory {
    const prompt: number[] = [], generated: number[] = [];
    for (let i = 0; i < this.#length; i++) {
      (this.#generated[i] ? generated : prompt).push(this.#tokens[i]);
    }
    return new TokenHistory(prompt, generated);
  }
}
