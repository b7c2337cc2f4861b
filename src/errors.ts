/**
 * Typed errors shared by every room. Each has a stable `code` that the HTTP layer maps to a status
 * and an OpenAI-shaped error body; the message names the offending file, field, tensor or value.
 * @module
 */

/** Stable machine-readable error codes. */
export type TnlErrorCode =
  | "config_invalid"
  | "weights_invalid"
  | "tokenizer_invalid"
  | "model_source_invalid"
  | "download_failed"
  | "invalid_input"
  | "state_invalid"
  | "state_mismatch"
  | "state_signature"
  | "non_finite"
  | "backend_unavailable"
  | "device_lost"
  | "not_found"
  | "conflict"
  | "overloaded"
  | "payload_too_large"
  | "context_length_exceeded"
  | "session_not_found"
  | "state_replayed"
  | "precondition_failed"
  | "not_implemented"
  | "internal";

/** Options of a `TnlError`. */
export interface TnlErrorOptions {
  /** The underlying error, if any. */
  cause?: unknown;
  /** The request field, header or argument at fault (`session`, `If-Match`), when one is. */
  param?: string;
  /** The failure is temporary (another instance holds the session): the caller may retry soon. */
  retryable?: boolean;
}

/** Base class of every error this project throws on purpose. */
export class TnlError extends Error {
  /** Stable code naming the kind of failure. */
  readonly code: TnlErrorCode;
  /** The request field, header or argument at fault, when one is. */
  readonly param?: string;
  /** Whether the caller may retry after a short wait. */
  readonly retryable: boolean;
  /** Create an error with a stable `code`; `cause` keeps the underlying error, if any. */
  constructor(code: TnlErrorCode, message: string, options?: TnlErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "TnlError";
    this.code = code;
    if (options?.param !== undefined) this.param = options.param;
    this.retryable = options?.retryable ?? false;
  }
}

/** A `config.json` that is missing a field, has a wrong type, or is inconsistent. */
export class ConfigError extends TnlError {
  /** `file` is the config path (or a label), `field` the offending key. */
  constructor(readonly file: string, readonly field: string, detail: string) {
    super("config_invalid", `${file}: field "${field}": ${detail}`);
    this.name = "ConfigError";
  }
}

/** A weights file that is malformed, truncated, or lacks or misshapes a tensor. */
export class WeightsError extends TnlError {
  /** `file` is the weights file, `tensor` the tensor concerned (empty when none). */
  constructor(readonly file: string, readonly tensor: string, detail: string) {
    super(
      "weights_invalid",
      tensor ? `${file}: tensor "${tensor}": ${detail}` : `${file}: ${detail}`,
    );
    this.name = "WeightsError";
  }
}

/** A tokenizer model that cannot be read. */
export class TokenizerError extends TnlError {
  /** `source` names the tokenizer file or a label. */
  constructor(readonly source: string, detail: string) {
    super("tokenizer_invalid", `${source}: ${detail}`);
    this.name = "TokenizerError";
  }
}

/** Bad input from a caller: token out of range, empty prompt, wrong option value. */
export class InputError extends TnlError {
  /** `field` names the offending argument or request field. */
  constructor(readonly field: string, detail: string) {
    super("invalid_input", `${field}: ${detail}`);
    this.name = "InputError";
  }
}
