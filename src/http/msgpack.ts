/**
 * Session state bodies: `application/vnd.msgpack` responses with an ETag (the SHA-256 of the
 * bytes), and msgpack request bodies read under the body limit.
 * @module
 */

import { etagOf } from "../sessions/etag.ts";
import { STATE_MEDIA_TYPE } from "../state/mod.ts";
import { readBody } from "./body.ts";
import { HttpError } from "./errors.ts";

/** The msgpack media types a body may be sent as (`STATE_MEDIA_TYPE` first, the one we send). */
const MSGPACK_TYPES: ReadonlySet<string> = new Set([
  STATE_MEDIA_TYPE,
  "application/msgpack",
  "application/x-msgpack",
]);

/** Whether a media type (lower case, no parameters) is one of the msgpack ones. */
export function isMsgpackType(mediaType: string): boolean {
  return MSGPACK_TYPES.has(mediaType);
}

/** A msgpack response for state bytes, with its ETag. */
export function msgpackResponse(
  bytes: Uint8Array,
  digest: string,
  headers: HeadersInit = {},
): Response {
  const h = new Headers(headers);
  h.set("content-type", STATE_MEDIA_TYPE);
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
    if (base !== "" && !isMsgpackType(base) && base !== "application/octet-stream") {
      await req.body?.cancel().catch(() => {});
      throw new HttpError(415, `expected a ${STATE_MEDIA_TYPE} body, got ${base}`, {
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
