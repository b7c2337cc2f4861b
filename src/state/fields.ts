/**
 * Strict readers of decoded msgpack fields, for the state decoder: each checks one field's type
 * (and range) and throws a `StateError` naming the field when it is wrong. Messages start with the
 * field at fault ("rng.counter: ..."), which the error also carries as `field`.
 * @module
 */

import { StateError } from "./errors.ts";
import { isMsgMap, type MsgMap, type MsgValue } from "./msgpack.ts";
import { MAX_TIME_MS } from "./format.ts";

/** Throw a 400 `state_invalid` with `detail` (which starts with the field at fault). */
export function invalid(detail: string): never {
  const field = /^([A-Za-z][A-Za-z0-9_.[\]]*): /.exec(detail)?.[1];
  throw new StateError("state_invalid", `state: ${detail}`, { field });
}

/** Throw a 422 `state_mismatch`: a valid state for another model, tokenizer or shape. */
export function mismatch(detail: string): never {
  throw new StateError("state_mismatch", `state: ${detail}`);
}

/** Throw a 401 `state_signature`. */
export function signatureError(detail: string): never {
  throw new StateError("state_signature", `state: ${detail}`);
}

/** A short description of a decoded value for messages ("a bin of 3 bytes", "missing"). */
export function describe(v: MsgValue | undefined): string {
  if (v === undefined) return "missing";
  if (v === null) return "nil";
  if (v instanceof Uint8Array) return `a bin of ${v.length} bytes`;
  if (Array.isArray(v)) return `an array of ${v.length}`;
  if (typeof v === "object") return "a map";
  if (typeof v === "string") {
    return `the string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + "…" : v)}`;
  }
  return `${typeof v} ${String(v)}`;
}

/** Refuse a map that lacks a `required` key or has a key in neither list. */
export function checkKeys(
  m: MsgMap,
  field: string,
  required: readonly string[],
  optional: readonly string[] = [],
): void {
  for (const k of required) if (!Object.hasOwn(m, k)) invalid(`${field}: missing field "${k}"`);
  for (const k of Object.keys(m)) {
    if (!required.includes(k) && !optional.includes(k)) {
      invalid(`${field}: unknown field ${JSON.stringify(k)}`);
    }
  }
}

/** A map, or `state_invalid`. */
export function getMap(v: MsgValue | undefined, field: string): MsgMap {
  if (!isMsgMap(v)) invalid(`${field}: expected a map, got ${describe(v)}`);
  return v;
}

/** A string, or `state_invalid`. */
export function getString(v: MsgValue | undefined, field: string): string {
  if (typeof v !== "string") invalid(`${field}: expected a string, got ${describe(v)}`);
  return v;
}

/** A bin (a view into the input), or `state_invalid`. */
export function getBin(v: MsgValue | undefined, field: string): Uint8Array {
  if (!(v instanceof Uint8Array)) invalid(`${field}: expected a bin, got ${describe(v)}`);
  return v;
}

/** A safe integer in [min, max], or `state_invalid`. */
export function getInt(
  v: MsgValue | undefined,
  field: string,
  min: number,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v)) {
    invalid(`${field}: expected an integer, got ${describe(v)}`);
  }
  if (v < min || v > max) invalid(`${field}: ${v} is outside [${min}, ${max}]`);
  return v;
}

/** A time in ms since the epoch, in [0, MAX_TIME_MS], or `state_invalid`. */
export function getTime(v: MsgValue | undefined, field: string): number {
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0 || v > MAX_TIME_MS) {
    invalid(`${field}: expected a time in ms in [0, ${MAX_TIME_MS}], got ${describe(v)}`);
  }
  return v;
}

/** A plain (JSON-like) copy of a decoded sampling value: finite numbers, no bins. */
export function plainSampling(v: MsgValue, path: string): unknown {
  if (v === null || typeof v === "boolean" || typeof v === "string") return v;
  if (typeof v === "number") {
    if (!Number.isFinite(v)) invalid(`${path}: ${v} is not a finite number`);
    return v;
  }
  if (v instanceof Uint8Array) invalid(`${path}: bin values are not sampling settings`);
  if (Array.isArray(v)) return v.map((x, i) => plainSampling(x, `${path}[${i}]`));
  const o: Record<string, unknown> = {};
  for (const k of Object.keys(v)) {
    // Plain objects for the engine: a "__proto__" key would be a prototype on a normal object.
    if (k === "__proto__") invalid(`${path}: key "__proto__" is not allowed`);
    o[k] = plainSampling(v[k], `${path}.${k}`);
  }
  return o;
}
