/**
 * HMAC-SHA256 of a state's payload bytes (`alg: "HS256"`), with the server's secret. Keys made from
 * string secrets are cached (a server has one), so signing does not import a key per state.
 * @module
 */

import { TnlError } from "../errors.ts";

/** A signing secret: a string (its UTF-8 bytes) or raw key bytes; never empty. */
export type StateSecret = string | Uint8Array;

/** Bytes of an HMAC-SHA256 signature. */
export const SIGNATURE_BYTES = 32;

const keyCache = new Map<string, Promise<CryptoKey>>();
const KEY_CACHE_MAX = 16;

function hmacKey(secret: StateSecret): Promise<CryptoKey> {
  const raw = typeof secret === "string" ? new TextEncoder().encode(secret) : secret;
  if (!(raw instanceof Uint8Array) || raw.length === 0) {
    throw new TnlError("invalid_input", "state secret: must be a non-empty string or byte array");
  }
  const cacheKey = typeof secret === "string" ? "s:" + secret : null;
  if (cacheKey !== null) {
    const hit = keyCache.get(cacheKey);
    if (hit) return hit;
  }
  const p = crypto.subtle.importKey(
    "raw",
    raw.slice(),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign", "verify"],
  );
  if (cacheKey !== null) {
    if (keyCache.size >= KEY_CACHE_MAX) keyCache.delete(keyCache.keys().next().value!);
    keyCache.set(cacheKey, p);
  }
  return p;
}

/** HMAC-SHA256 of `payload` with `secret` (32 bytes). */
export async function signPayload(secret: StateSecret, payload: Uint8Array): Promise<Uint8Array> {
  const key = await hmacKey(secret);
  return new Uint8Array(
    await crypto.subtle.sign("HMAC", key, payload as Uint8Array<ArrayBuffer>),
  );
}

/** Whether `sig` is the HMAC-SHA256 of `payload` with `secret` (compared in constant time). */
export async function verifyPayload(
  secret: StateSecret,
  sig: Uint8Array,
  payload: Uint8Array,
): Promise<boolean> {
  const key = await hmacKey(secret);
  return await crypto.subtle.verify("HMAC", key, sig.slice(), payload as Uint8Array<ArrayBuffer>);
}
