/**
 * The runtime's third-party packages, by full specifier, so the module works when imported by path
 * or URL from another project (whose import map does not know ours) as well as from JSR. Versions
 * here and in `deno.json`'s import map (which the tests use) are kept equal by `tests/deps_test.ts`.
 * Packages used on some paths only are imported by full specifier where they are used
 * (`@redis/client` in `state/redis_client.ts`, SentencePiece in `tokenizer/sentencepiece.ts`),
 * each a module of its own loaded on demand.
 * @module
 */

export { Hono } from "npm:hono@4.13.19";
export type { Context, MiddlewareHandler } from "npm:hono@4.13.19";
export { routePath } from "npm:hono@4.13.19/route";
export { cors } from "npm:hono@4.13.19/cors";
export { Packr } from "npm:msgpackr@2.1.3/pack";
export { fromFileUrl, SEPARATOR } from "npm:deno-std@1.4.0/path/mod.js";
