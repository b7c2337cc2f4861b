/**
 * Request bodies read under a size limit. The limit is enforced while reading: a declared
 * `Content-Length` over the limit is refused before reading anything, and a body without one (or
 * lying about it) is counted chunk by chunk and abandoned as soon as it passes the limit, so an
 * oversized upload is never buffered whole.
 * @module
 */

import { badRequest, HttpError } from "./errors.ts";

/** Default request body limit: 64 MiB (a large model's session state fits). */
export const DEFAULT_MAX_BODY_BYTES: number = 64 * 1024 * 1024;

function tooLarge(limit: number): HttpError {
  return new HttpError(413, `request body exceeds the limit of ${limit} bytes`, {
    code: "payload_too_large",
  });
}

/** Read the whole body of `req`, at most `limit` bytes (else a 413 `HttpError`). */
export async function readBody(req: Request, limit: number): Promise<Uint8Array> {
  const declared = req.headers.get("content-length");
  if (declared !== null && /^\d+$/.test(declared.trim()) && Number(declared) > limit) {
    await req.body?.cancel().catch(() => {});
    throw tooLarge(limit);
  }
  if (!req.body) return new Uint8Array(0);
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > limit) {
        await reader.cancel().catch(() => {});
        throw tooLarge(limit);
      }
      chunks.push(value);
    }
  } catch (e) {
    if (e instanceof HttpError) throw e;
    throw badRequest(null, `could not read the request body: ${(e as Error)?.message ?? e}`);
  } finally {
    reader.releaseLock();
  }
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.byteLength;
  }
  return out;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Read a JSON object body under `limit` bytes. Throws a 400 `HttpError` for an empty body (unless
 * `allowEmpty`: then `{}`), bad UTF-8, bad JSON or a value that is not an object; 413 over the limit.
 */
export async function readJsonObject(
  req: Request,
  limit: number,
  options: { allowEmpty?: boolean } = {},
): Promise<Record<string, unknown>> {
  const bytes = await readBody(req, limit);
  if (bytes.length === 0) {
    if (options.allowEmpty) return {};
    throw badRequest(null, "the request body is empty; expected JSON");
  }
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    throw badRequest(null, "the request body is not valid UTF-8", "invalid_json");
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw badRequest(
      null,
      `the request body is not valid JSON: ${(e as Error).message}`,
      "invalid_json",
    );
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw badRequest(null, "the request body must be a JSON object", "invalid_json");
  }
  return value as Record<string, unknown>;
}
