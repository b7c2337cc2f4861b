/**
 * The edge handler as a `deno serve` module (also the entrypoint on Deno Deploy), configured from
 * environment variables (see `edgeOptionsFromEnv`):
 *
 * ```sh
 * TNL_MAX_TOKENS_PER_REQUEST=32 deno serve --allow-read --allow-env --port 8787 src/edge/serve.ts
 * ```
 *
 * The model loads on the first request of each isolate (`deno serve --parallel` runs one per CPU).
 * @module
 */

import { errorResponse, HttpError } from "../http/errors.ts";
import { createEdgeHandler, type EdgeHandler, edgeOptionsFromEnv } from "./handler.ts";

let handler: EdgeHandler | null = null;
let configError: string | null = null;

/**
 * The handler, built from the environment on the first request (importing this module reads
 * nothing and loads nothing). A malformed variable answers every request with a 500 naming it.
 */
export function fetch(req: Request): Promise<Response> {
  if (!handler && configError === null) {
    try {
      handler = createEdgeHandler(edgeOptionsFromEnv());
    } catch (e) {
      configError = (e as Error).message;
    }
  }
  if (!handler) {
    return Promise.resolve(
      errorResponse(
        new HttpError(500, `configuration: ${configError}`, { code: "config_invalid" }),
      ),
    );
  }
  return handler(req);
}

/** `deno serve` (and Deno Deploy) pick up the default export. */
const serve: Deno.ServeDefaultExport = { fetch };
export default serve;
