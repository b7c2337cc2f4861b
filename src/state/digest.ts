/**
 * The digest of an encoded state: hex SHA-256 of its bytes, the value of the state's ETag.
 * @module
 */

/** Hex SHA-256 of encoded state bytes (an ETag for the state). */
export async function sessionDigest(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
  let s = "";
  for (const b of d) s += b.toString(16).padStart(2, "0");
  return s;
}
