/**
 * Errors in the OpenAI shape: `{"error": {"message", "type", "param", "code"}}`, and the mapping
 * from the project's `TnlError` codes to HTTP statuses.
 *
 * | code                                  | status | type                    |
 * |---------------------------------------|--------|-------------------------|
 * | `invalid_input`, `state_invalid`, `context_length_exceeded` | 400 | `invalid_request_error` |
 * | `state_signature`                     | 401    | `authentication_error`  |
 * | `not_found`, `session_not_found`      | 404    | `invalid_request_error` |
 * | `conflict`, `state_replayed`          | 409    | `invalid_request_error` |
 * | `precondition_failed`                 | 412    | `invalid_request_error` |
 * | `payload_too_large`                   | 413    | `invalid_request_error` |
 * | `state_mismatch`, `non_finite`        | 422    | `invalid_request_error` |
 * | `overloaded`                          | 429    | `rate_limit_error`      |
 * | `not_implemented`                     | 501    | `server_error`          |
 * | `backend_unavailable`, `device_lost`, `download_failed` | 503 | `server_error` |
 * | anything else                         | 500    | `server_error`          |
 *
 * This is the one place where codes become statuses: the rooms below throw codes only. 429 and 503
 * carry a `Retry-After` header, and so does an error marked `retryable` (a 409 for a session that
 * another instance holds). A 500 never shows the underlying message or stack: the
 * body says "internal error" and names the request id, and the log has the details.
 * @module
 */

import { InputError, TnlError, type TnlErrorCode } from "../errors.ts";
import { StateError } from "../state/errors.ts";
import { SAMPLING_FIELDS } from "../engine/sampling_fields.ts";

/** The OpenAI error body. */
export interface OpenAiErrorBody {
  /** The error. */
  error: {
    /** Human-readable message (names the offending field). */
    message: string;
    /** Error class: `invalid_request_error`, `authentication_error`, `rate_limit_error`, `server_error`. */
    type: string;
    /** The request field at fault, or null. */
    param: string | null;
    /** A stable machine-readable code, or null. */
    code: string | null;
  };
}

/** An error that knows its HTTP status and OpenAI error fields. */
export class HttpError extends Error {
  /** HTTP status. */
  readonly status: number;
  /** OpenAI error type. */
  readonly type: string;
  /** The request field at fault. */
  readonly param: string | null;
  /** Stable code. */
  readonly code: string | null;
  /** Extra response headers (`Retry-After`, ...). */
  readonly headers: Record<string, string>;

  /** An error answered with `status`; `type` defaults from the status. */
  constructor(
    status: number,
    message: string,
    options: {
      param?: string | null;
      code?: string | null;
      type?: string;
      headers?: Record<string, string>;
      cause?: unknown;
    } = {},
  ) {
    super(message, { cause: options.cause });
    this.name = "HttpError";
    this.status = status;
    this.type = options.type ?? typeForStatus(status);
    this.param = options.param ?? null;
    this.code = options.code ?? null;
    this.headers = options.headers ?? {};
  }
}

/** Seconds a client should wait after a 429 or 503 (the `Retry-After` value). */
export const RETRY_AFTER_SECONDS = 1;

/** The HTTP status of each `TnlError` code. */
export const STATUS_OF_CODE: Readonly<Record<TnlErrorCode, number>> = {
  invalid_input: 400,
  state_invalid: 400,
  context_length_exceeded: 400,
  state_signature: 401,
  not_found: 404,
  session_not_found: 404,
  conflict: 409,
  state_replayed: 409,
  precondition_failed: 412,
  payload_too_large: 413,
  state_mismatch: 422,
  non_finite: 422,
  overloaded: 429,
  not_implemented: 501,
  backend_unavailable: 503,
  device_lost: 503,
  download_failed: 503,
  config_invalid: 500,
  weights_invalid: 500,
  tokenizer_invalid: 500,
  model_source_invalid: 500,
  internal: 500,
};

/** The OpenAI error `type` for a status. */
export function typeForStatus(status: number): string {
  if (status === 401) return "authentication_error";
  if (status === 429) return "rate_limit_error";
  if (status >= 500) return "server_error";
  return "invalid_request_error";
}

/** Engine (camelCase) field names and the request fields they come from. */
const REQUEST_FIELD: Readonly<Record<string, string>> = {
  ...Object.fromEntries(SAMPLING_FIELDS.map((f) => [f.key, f.wire])),
  maxTokens: "max_tokens",
};

/** The request field name for an engine field name (`topK` → `top_k`). */
export function requestFieldName(field: string): string {
  return REQUEST_FIELD[field] ?? field;
}

/** Replace a leading `engineField:` in an InputError message with the request field name. */
function renameInMessage(message: string, from: string, to: string): string {
  return from !== to && message.startsWith(from + ":") ? to + message.slice(from.length) : message;
}

/**
 * Turn any thrown value into an `HttpError`: `HttpError` as is, `TnlError` by its code (an
 * `InputError` names its field in `param`), anything else a 500 with a generic message.
 */
export function toHttpError(e: unknown): HttpError {
  if (e instanceof HttpError) return e;
  if (e instanceof TnlError) {
    const status = STATUS_OF_CODE[e.code] ?? 500;
    if (status >= 500 && status !== 503 && status !== 501) {
      return new HttpError(500, "internal error", { code: "internal", cause: e });
    }
    const headers: Record<string, string> = status === 429 || status === 503 || e.retryable
      ? { "retry-after": String(RETRY_AFTER_SECONDS) }
      : {};
    let param: string | null = e.param ?? null;
    let message = e.message;
    if (e instanceof InputError) {
      param = requestFieldName(e.field);
      message = renameInMessage(message, e.field, param);
    } else if (e instanceof StateError && e.field) param = `state.${e.field}`;
    return new HttpError(status, message, { code: e.code, param, headers, cause: e });
  }
  return new HttpError(500, "internal error", { code: "internal", cause: e });
}

/** The OpenAI error body of an `HttpError`; a 500 mentions the request id instead of details. */
export function errorBody(e: HttpError, requestId?: string): OpenAiErrorBody {
  const message = e.status === 500 && requestId
    ? `internal error (request ${requestId})`
    : e.message;
  return { error: { message, type: e.type, param: e.param, code: e.code } };
}

/** A JSON `Response` in the OpenAI error shape for any thrown value. */
export function errorResponse(e: unknown, requestId?: string): Response {
  const h = toHttpError(e);
  const headers = new Headers({ "content-type": "application/json", ...h.headers });
  if (requestId) headers.set("x-request-id", requestId);
  return new Response(JSON.stringify(errorBody(h, requestId)), { status: h.status, headers });
}

/** A 400 naming the request field at fault (`param`). */
export function badRequest(
  param: string | null,
  message: string,
  code = "invalid_input",
): HttpError {
  return new HttpError(400, message, { param, code });
}

/** A 404 in the OpenAI shape. */
export function notFound(
  message: string,
  param: string | null = null,
  code = "not_found",
): HttpError {
  return new HttpError(404, message, { param, code });
}

/** A 503 with `Retry-After` (model loading, backend or store unavailable). */
export function unavailable(message: string, code = "backend_unavailable"): HttpError {
  return new HttpError(503, message, {
    code,
    headers: { "retry-after": String(RETRY_AFTER_SECONDS) },
  });
}
