/**
 * The envelope around a state's payload: `{ format, version, alg, sig?, payload: bin }`. Writing
 * it directly (it is small and fixed) copies the payload once; reading it checks the signature
 * policy before anything reads the payload:
 *
 * With a secret, only `HS256` states with a valid signature are read (else 401). Without a secret,
 * unsigned states are read and *signed states are refused* (401): a signed state says its issuer
 * wanted integrity, and a replica that cannot check it (a missing secret is a deployment mistake)
 * should say so rather than silently skip the check.
 * @module
 */

import { checkKeys, describe, getBin, invalid, signatureError } from "./fields.ts";
import { STATE_FORMAT, STATE_READ_VERSIONS, STATE_VERSION } from "./format.ts";
import { SIGNATURE_BYTES, signPayload, type StateSecret, verifyPayload } from "./hmac.ts";
import { binHeader, type MsgParts } from "./msgpack_parts.ts";
import { isMsgMap, type MsgMap, type MsgReadLimits, readMsgpack } from "./msgpack.ts";

/** Limits of the envelope read: one flat map of short strings and two bins. */
export const ENVELOPE_LIMITS: MsgReadLimits = { maxDepth: 1, maxNodes: 16, maxStringBytes: 64 };

/** msgpack fixstr bytes of a short ASCII string. */
function fixstr(s: string): number[] {
  return [0xa0 | s.length, ...Array.from(s, (c) => c.charCodeAt(0))];
}

/**
 * The envelope bytes around the payload (written into the output once), signed with HMAC-SHA256
 * when `secret` is given.
 */
export async function writeEnvelope(
  payload: MsgParts,
  secret: StateSecret | undefined,
): Promise<Uint8Array> {
  const signed = secret !== undefined;
  const head: number[] = [
    signed ? 0x85 : 0x84,
    ...fixstr("format"),
    ...fixstr(STATE_FORMAT),
    ...fixstr("version"),
    STATE_VERSION,
    ...fixstr("alg"),
    ...fixstr(signed ? "HS256" : "none"),
  ];
  // The signature's place: filled once the payload is in the output.
  const sigAt = head.length + fixstr("sig").length + 2;
  if (signed) {
    head.push(...fixstr("sig"), 0xc4, SIGNATURE_BYTES, ...new Array(SIGNATURE_BYTES).fill(0));
  }
  head.push(...fixstr("payload"), ...binHeader(payload.byteLength));
  const out = new Uint8Array(head.length + payload.byteLength);
  out.set(head, 0);
  payload.copyInto(out, head.length);
  if (signed) out.set(await signPayload(secret, out.subarray(head.length)), sigAt);
  return out;
}

/** The envelope map of `bytes`, with its format checked (no version or signature check). */
export function readEnvelopeMap(bytes: Uint8Array): MsgMap {
  const env = readMsgpack(bytes, ENVELOPE_LIMITS, "state envelope");
  if (!isMsgMap(env)) invalid(`envelope: expected a map, got ${describe(env)}`);
  if (env.format !== STATE_FORMAT) {
    invalid(
      `envelope: format is ${
        describe(env.format)
      }, not "${STATE_FORMAT}" (not a TNL Edge session state)`,
    );
  }
  return env;
}

/** An opened envelope: its format version and the payload bytes (a view into the input). */
export interface OpenedEnvelope {
  /** One of `STATE_READ_VERSIONS`. */
  version: number;
  /** The payload bytes, signature checked. */
  payload: Uint8Array;
}

/**
 * Read an envelope and check its version and signature (see the module doc for the policy).
 */
export async function openEnvelope(
  bytes: Uint8Array,
  secret: StateSecret | undefined,
): Promise<OpenedEnvelope> {
  const env = readEnvelopeMap(bytes);
  const version = env.version;
  if (typeof version !== "number" || !STATE_READ_VERSIONS.includes(version)) {
    invalid(
      `envelope: unsupported version ${describe(version)} (this server reads versions ${
        STATE_READ_VERSIONS.join(", ")
      })`,
    );
  }
  checkKeys(env, "envelope", ["format", "version", "alg", "payload"], ["sig"]);
  const alg = env.alg;
  if (alg !== "none" && alg !== "HS256") {
    invalid(`envelope: alg ${describe(alg)}, expected "none" or "HS256"`);
  }
  const payload = getBin(env.payload, "envelope.payload");
  if (alg === "none") {
    if (env.sig !== undefined) invalid(`envelope: alg "none" with a signature`);
    if (secret !== undefined) signatureError("not signed; this server only accepts signed states");
    return { version, payload };
  }
  if (secret === undefined) {
    signatureError("signed (HS256) but this server has no state secret configured to verify it");
  }
  const sig = env.sig;
  if (!(sig instanceof Uint8Array)) signatureError(`signature is ${describe(sig)}, expected a bin`);
  if (sig.length !== SIGNATURE_BYTES) {
    signatureError(`signature is ${sig.length} bytes, expected ${SIGNATURE_BYTES}`);
  }
  if (!(await verifyPayload(secret, sig, payload))) {
    signatureError("signature does not match (tampered with, or signed with another secret)");
  }
  return { version, payload };
}
