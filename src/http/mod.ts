/**
 * What the routes share: the app context (model, engine, sessions, store, metrics) and its options,
 * errors in the OpenAI shape (the one table from `TnlError` codes to statuses), request schemas,
 * the generation response (`respondOnSession`: open, prompt, generate, stream or answer, save,
 * release), SSE and msgpack bodies, middleware, metrics and the logger.
 *
 * @example Any error of the engine, a store or a state becomes an OpenAI-shaped response
 * ```ts
 * import { errorResponse, toHttpError } from "./mod.ts";
 * import { TnlError } from "../errors.ts";
 *
 * const e = new TnlError("non_finite", "the model produced a non-finite value");
 * console.log(toHttpError(e).status); // 422
 * const res = errorResponse(e, "req_1");
 * console.log(res.status, (await res.json()).error.code); // 422 "non_finite"
 * ```
 * @module
 */

export { AppContext, type AppContextInit, type AppOptions } from "./context.ts";
export {
  errorBody,
  errorResponse,
  HttpError,
  type OpenAiErrorBody,
  STATUS_OF_CODE,
  toHttpError,
} from "./errors.ts";
export { HttpMetrics } from "./metrics.ts";
export { jsonLogger, type Logger, type LogLevel } from "./logger.ts";
export { respondOnNewSessions, respondOnSession, respondWithGeneration } from "./generation.ts";
