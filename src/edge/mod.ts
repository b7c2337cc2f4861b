/**
 * The edge room: a stateless `fetch` handler whose sessions travel with each request (inline
 * state) or live in a shared store (Deno KV, Redis), and the client loop that continues a
 * generation over several capped requests. `./serve.ts` is the `deno serve` / Deno Deploy module.
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
