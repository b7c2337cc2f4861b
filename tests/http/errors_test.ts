import assert from "node:assert/strict";
import { InputError, TnlError, type TnlErrorCode } from "../../src/errors.ts";
import {
  errorBody,
  errorResponse,
  HttpError,
  requestFieldName,
  STATUS_OF_CODE,
  toHttpError,
} from "../../src/http/errors.ts";
import { StateError, StoreError } from "../../src/state/errors.ts";

Deno.test("errors: every TnlError code maps to its status", () => {
  const expected: Record<TnlErrorCode, number> = {
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
  assert.deepEqual(STATUS_OF_CODE, expected);
  for (const [code, status] of Object.entries(expected)) {
    const h = toHttpError(new TnlError(code as TnlErrorCode, "detail"));
    assert.equal(h.status, status, code);
    if (status === 429 || status === 503) assert.equal(h.headers["retry-after"], "1");
    else assert.equal(h.headers["retry-after"], undefined);
    if (status === 500) assert.equal(h.message, "internal error");
  }
  // A retryable error (a session another instance holds) carries Retry-After whatever its status.
  const held = toHttpError(new TnlError("conflict", "busy", { param: "session", retryable: true }));
  assert.equal(held.status, 409);
  assert.equal(held.param, "session");
  assert.equal(held.headers["retry-after"], "1");
  assert.equal(toHttpError(new StateError("state_mismatch", "x")).status, 422);
  // A step that produced NaN or ±Infinity fails that request alone, with its message shown.
  const nf = toHttpError(new TnlError("non_finite", "decode produced NaN logits"));
  assert.equal(nf.status, 422);
  assert.equal(nf.type, "invalid_request_error");
  assert.equal(nf.message, "decode produced NaN logits");
  assert.equal(toHttpError(new StoreError("redis", "backend_unavailable", "down")).status, 503);
});

Deno.test("errors: InputError fields become request field names in param and message", () => {
  const h = toHttpError(new InputError("topK", "must be an integer ≥ 0, got -3"));
  assert.equal(h.status, 400);
  assert.equal(h.param, "top_k");
  assert.equal(h.message, "top_k: must be an integer ≥ 0, got -3");
  assert.equal(h.type, "invalid_request_error");
  assert.equal(requestFieldName("logitBias"), "logit_bias");
  assert.equal(requestFieldName("prompt"), "prompt");
});

Deno.test("errors: 500s hide the cause and name the request id", async () => {
  const e = new Error("password=hunter2");
  const h = toHttpError(e);
  assert.equal(h.status, 500);
  assert.equal(h.type, "server_error");
  assert.deepEqual(errorBody(h, "req_1"), {
    error: {
      message: "internal error (request req_1)",
      type: "server_error",
      param: null,
      code: "internal",
    },
  });
  const res = errorResponse(e, "req_1");
  assert.equal(res.status, 500);
  assert.equal(res.headers.get("content-type"), "application/json");
  assert.equal(res.headers.get("x-request-id"), "req_1");
  assert.doesNotMatch(await res.text(), /hunter2/);
});

Deno.test("errors: HttpError keeps its fields; types by status", () => {
  const h = new HttpError(401, "no", { param: "x", code: "c" });
  assert.equal(toHttpError(h), h);
  assert.equal(h.type, "authentication_error");
  assert.equal(new HttpError(429, "").type, "rate_limit_error");
  assert.equal(new HttpError(503, "").type, "server_error");
  assert.equal(new HttpError(404, "").type, "invalid_request_error");
});
