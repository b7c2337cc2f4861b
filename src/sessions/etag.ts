/**
 * Entity tags of session states: the quoted SHA-256 of the encoded bytes, as the state routes send
 * it in `ETag` and the session manager checks it in `If-Match` (an import that replaces a state).
 * @module
 */

/** The quoted ETag of a state digest. */
export function etagOf(digest: string): string {
  return `"${digest}"`;
}

/** Whether an `If-None-Match` or `If-Match` header value matches `etag` (`*` matches any). */
export function matchesEtag(header: string | null, etag: string): boolean {
  if (!header) return false;
  if (header.trim() === "*") return true;
  return header.split(",").some((t) => t.trim().replace(/^W\//, "") === etag);
}
