/**
 * The Redis client package, by full specifier (see `src/deps.ts`); a module of its own so that it
 * is loaded, and fetched, only with the Redis store.
 * @module
 */

export { createClient, RESP_TYPES } from "npm:@redis/client@6.3.1";
