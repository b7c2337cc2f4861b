/**
 * Session state bodies: `application/vnd.msgpack` responses with an ETag (the SHA-256 of the
 * bytes), and msgpack request bodies read under the body limit.
 * @module
 */

import { readBody } from "./body.ts";
import { HttpError } from "./errors.ts";

/** The media type of an exported session state. */
export const MSGPACK_MEDIA_TYPE = "application/vnd.msgpack";

/** Content types accepted for a state upload (besides none at all). */
const ACCEPTED = new Set([
  MSGPACK_MEDIA_TYPE,
  "application/msgpack",
  "application/x-msgpack",
  "application/octet-stream",
]);

/** The quoted ETag of a state digest. */
export function etagOf(digest: string): string {
  return `"${digest}"`;
}

/** Whether an `If-None-Match` header value matches `etag`. */
export function matchesEtag(header: string | null, etag: string): boolean {
  if (!header) return false;
  if (header.trim() === "*") return true;
  return header.split(",").some((t) => t.trim().replace(/^W\//, "") === etag);
}

/** A msgpack response for state bytes, with its ETag. */
export function msgpackResponse(
  bytes: Uint8Array,
  digest: string,
  headers: HeadersInit = {},
): Response {
  const h = new Headers(headers);
  h.set("content-type", MSGPACK_MEDIA_TYPE);
  h.set("etag", etagOf(digest));
  h.set("cache-control", "no-store");
  return new Response(bytes as Uint8Array<ArrayBuffer>, { status: 200, headers: h });
}

/**
 * Read a msgpack request body (at most `limit` bytes, else 413). A content type other than the
 * msgpack ones or `application/octet-stream` is a 415; an empty body a 400.
 */
export async function readMsgpackBody(req: Request, limit: number): Promise<Uint8Array> {
  const ct = req.headers.get("content-type");
  if (ct !== null) {
    const base = ct.split(";")[0].trim().toLowerCase();
    if (base !== "" && !ACCEPTED.has(base)) {
      await req.body?.cancel().catch(() => {});
      throw new HttpError(415, `expected a ${MSGPACK_MEDIA_TYPE} body, got ${base}`, {
        code: "unsupported_media_type",
      });
    }
  }
  const bytes = await readBody(req, limit);
  if (bytes.length === 0) {
    throw new HttpError(400, "the request body is empty; expected a msgpack session state", {
      code: "state_invalid",
    });
  }
  return bytes;
}
