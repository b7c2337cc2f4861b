/**
 * The edge room: a stateless `fetch` handler whose sessions travel with each request (inline
 * state) or live in a shared store (Deno KV, Redis), and the client loop that continues a
 * generation over several capped requests. `./serve.ts` is the `deno serve` / Deno Deploy module.
 *
 * @example A handler and its client in one process (inline sessions: nothing is stored)
 * ```ts
 * import { continueSession, createEdgeHandler } from "./mod.ts";
 *
 * const handler = createEdgeHandler({ maxTokensPerRequest: 32 });
 * const fetch = (req: Request) => handler(req);
 * for await (const c of continueSession("http://edge/", "ROMEO:", { maxTokens: 64, fetch })) {
 *   console.log(c.text, c.continue);
 * }
 * ```
 * @module
 */

export {
  createEdgeHandler,
  edgeBackend,
  type EdgeHandler,
  type EdgeOptions,
  edgeOptionsFromEnv,
  hasNavigatorGpu,
} from "./handler.ts";
export {
  continueSession,
  type ContinueSessionOptions,
  EdgeClientError,
  samplingFields,
  type SessionChunk,
} from "./client.ts";
export {
  EDGE_DEFAULT_MAX_TOKENS,
  type EdgeFormat,
  type EdgeGenerateRequest,
  type EdgeGenerateResponse,
} from "./protocol.ts";
