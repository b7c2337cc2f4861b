/**
 * The state encoding a request asks for: the `state_encoding` field of a request that keeps state,
 * and, on `GET /v1/sessions/:id/state`, the `encoding` parameter of an `Accept` media range
 * (`application/vnd.msgpack; encoding=q8+deflate`) or the `?encoding=` query. An unknown name is
 * a 400 naming where it came from and listing the valid ones; a lossy one is only ever used when
 * asked for here.
 * @module
 */

import { isStateEncoding, STATE_ENCODINGS, type StateEncoding } from "../state/encodings.ts";
import { badRequest } from "./errors.ts";
import { isMsgpackType } from "./msgpack.ts";

/** `v` as a state encoding, or a 400 naming `field` that lists the valid ones. */
export function checkStateEncoding(v: unknown, field: string): StateEncoding {
  if (isStateEncoding(v)) return v;
  const got = typeof v === "string" ? JSON.stringify(v.slice(0, 40)) : `a ${typeof v}`;
  throw badRequest(
    field,
    `${field}: ${got} is not a state encoding (one of ${STATE_ENCODINGS.join(", ")})`,
  );
}

/**
 * The `encoding` parameter of the first msgpack media range of an `Accept` header that has one
 * (`application/vnd.msgpack; encoding=q8+deflate`, quotes allowed), else undefined.
 */
export function acceptedStateEncoding(accept: string | null): StateEncoding | undefined {
  if (!accept) return undefined;
  for (const range of accept.split(",")) {
    const [type, ...params] = range.split(";").map((p) => p.trim());
    if (!isMsgpackType(type.toLowerCase())) continue;
    for (const p of params) {
      const eq = p.indexOf("=");
      if (eq < 0 || p.slice(0, eq).trim().toLowerCase() !== "encoding") continue;
      const value = p.slice(eq + 1).trim().replace(/^"(.*)"$/, "$1");
      return checkStateEncoding(value, "Accept");
    }
  }
  return undefined;
}

/**
 * The encoding a state download asks for: `?encoding=` or the `Accept` header's parameter (400
 * when both are given and differ), or undefined (the stored bytes as they are).
 */
export function requestedStateEncoding(req: Request): StateEncoding | undefined {
  const q = new URL(req.url).searchParams.get("encoding");
  const fromQuery = q === null ? undefined : checkStateEncoding(q, "encoding");
  const fromAccept = acceptedStateEncoding(req.headers.get("accept"));
  if (fromQuery && fromAccept && fromQuery !== fromAccept) {
    throw badRequest(
      "encoding",
      `encoding: the query asks for ${fromQuery} and Accept for ${fromAccept}; give one`,
    );
  }
  return fromQuery ?? fromAccept;
}
