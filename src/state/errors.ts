/**
 * Errors of the state room: a state that cannot be read (`StateError`) and a store that cannot serve
 * a request (`StoreError`). They carry codes, not HTTP statuses: the HTTP layer maps codes to
 * statuses in one table (`src/http/errors.ts`).
 *
 * | code                  | meaning                                                       |
 * |-----------------------|---------------------------------------------------------------|
 * | `state_invalid`       | malformed, truncated, oversized or inconsistent state bytes   |
 * | `state_signature`     | signature missing, wrong, or present with no secret to check  |
 * | `state_mismatch`      | a valid state for another model, tokenizer or shape           |
 * | `invalid_input`       | a bad session id or store spec given to a store               |
 * | `conflict`            | a compare-and-set write found another generation              |
 * | `payload_too_large`   | a state larger than the store accepts                         |
 * | `backend_unavailable` | the store's backend (Redis, KV, disk) cannot be reached       |
 * | `internal`            | a stored entry is corrupt, or the caller broke a contract     |
 * @module
 */

import { TnlError } from "../errors.ts";

/** The codes a state decode can fail with. */
export type StateErrorCode = "state_invalid" | "state_mismatch" | "state_signature";

/** A session state that is malformed, unsigned or tampered with, or not for this model. */
export class StateError extends TnlError {
  /** The state field at fault (`generation`, `rng.counter`, `tokens[3]`), when one is. */
  readonly field?: string;
  /** `code` is one of the three state codes; the message says what is wrong. */
  constructor(
    code: StateErrorCode,
    message: string,
    options?: { cause?: unknown; field?: string },
  ) {
    super(code, message, options);
    this.name = "StateError";
    if (options?.field) this.field = options.field;
  }
}

/** The codes a session store can fail with. */
export type StoreErrorCode =
  | "invalid_input"
  | "conflict"
  | "payload_too_large"
  | "backend_unavailable"
  | "internal";

/** A store operation that failed; `store` names the store ("memory", "fs", "kv", "redis"). */
export class StoreError extends TnlError {
  /** `store` labels the message; `code` is one of `StoreErrorCode`. */
  constructor(
    readonly store: string,
    code: StoreErrorCode,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(code, `session store (${store}): ${detail}`, options);
    this.name = "StoreError";
  }
}

/**
 * A compare-and-set write that lost: the stored generation was `actual` (null: no entry) where the
 * writer expected `expected` (null: no entry). Code `conflict` (409).
 */
export class StoreConflictError extends StoreError {
  /** `id` is the session; `expected` and `actual` the generations (null: absent). */
  constructor(
    store: string,
    readonly id: string,
    readonly expected: number | null,
    readonly actual: number | null,
  ) {
    super(
      store,
      "conflict",
      `session "${id}": expected ${
        expected === null ? "no stored state" : `stored generation ${expected}`
      }, found ${actual === null ? "none" : `generation ${actual}`}`,
    );
    this.name = "StoreConflictError";
  }
}
