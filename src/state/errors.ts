/**
 * Errors of the state room: a state that cannot be read (`StateError`) and a store that cannot serve
 * a request (`StoreError`). Each carries the HTTP status the server answers with.
 *
 * | code                  | status | meaning                                                       |
 * |-----------------------|--------|---------------------------------------------------------------|
 * | `state_invalid`       | 400    | malformed, truncated, oversized or inconsistent state bytes   |
 * | `state_signature`     | 401    | signature missing, wrong, or present with no secret to check  |
 * | `state_mismatch`      | 422    | a valid state for another model, tokenizer or shape           |
 * | `invalid_input`       | 400    | a bad session id or store spec given to a store               |
 * | `conflict`            | 409    | a compare-and-set write found another generation              |
 * | `payload_too_large`   | 413    | a state larger than the store accepts                         |
 * | `backend_unavailable` | 503    | the store's backend (Redis, KV, disk) cannot be reached       |
 * | `internal`            | 500    | a stored entry is corrupt, or the caller broke a contract     |
 * @module
 */

import { TnlError, type TnlErrorCode } from "../errors.ts";

/** The codes a state decode can fail with. */
export type StateErrorCode = "state_invalid" | "state_mismatch" | "state_signature";

/** The HTTP status of each state error code. */
export const STATE_ERROR_STATUS: Readonly<Record<StateErrorCode, 400 | 401 | 422>> = {
  state_invalid: 400,
  state_signature: 401,
  state_mismatch: 422,
};

/** A session state that is malformed (400), unsigned or tampered with (401), or not for this model (422). */
export class StateError extends TnlError {
  /** The HTTP status this error maps to. */
  readonly status: 400 | 401 | 422;
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
    this.status = STATE_ERROR_STATUS[code];
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

/** The HTTP status of each store error code. */
export const STORE_ERROR_STATUS: Readonly<Record<StoreErrorCode, number>> = {
  invalid_input: 400,
  conflict: 409,
  payload_too_large: 413,
  backend_unavailable: 503,
  internal: 500,
};

/** A store operation that failed; `store` names the store ("memory", "fs", "kv", "redis"). */
export class StoreError extends TnlError {
  /** The HTTP status this error maps to. */
  readonly status: number;
  /** `store` labels the message; `code` is one of `StoreErrorCode`. */
  constructor(
    readonly store: string,
    code: StoreErrorCode,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(code, `session store (${store}): ${detail}`, options);
    this.name = "StoreError";
    this.status = STORE_ERROR_STATUS[code];
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

/** The HTTP status of any TnlError code this room throws (500 for codes of other rooms). */
export function stateHttpStatus(code: TnlErrorCode): number {
  return (STATE_ERROR_STATUS as Record<string, number>)[code] ??
    (STORE_ERROR_STATUS as Record<string, number>)[code] ?? 500;
}
