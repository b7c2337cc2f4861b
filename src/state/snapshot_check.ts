/**
 * The checks `encodeSession` makes before writing a snapshot: whatever `decodeSession` would
 * refuse, the encoder refuses first, with a `TnlError` coded `internal` (a bug of the caller, not
 * of a client). Also the plain copy of the sampling settings that goes on the wire.
 *
 * History invariant (from `SessionSnapshot`): the state has consumed every history token but the
 * pending one, so with a history `tokens.length - (pending >= 0 ? 1 : 0) === position` and the last
 * token is `pending`; `pending === -1` only for an empty session (`position === 0`).
 * @module
 */

import type { ModelConfig } from "../model/config.ts";
import { stateLayerSize } from "../model/config.ts";
import { isValidSessionId, type SessionSnapshot } from "../model/snapshot.ts";
import { firstNonFinite } from "../model/state.ts";
import { TnlError } from "../errors.ts";
import { MAX_HELD_STOP_BYTES, MAX_PENDING_TEXT_BYTES } from "./format.ts";

/** Throw the encoder's `internal` error. */
export function encodeFail(detail: string): never {
  throw new TnlError("internal", `encodeSession: ${detail}`);
}

/** Check the fields, counters, array types and sizes of a snapshot for the model `config`. */
export function checkSnapshot(
  s: SessionSnapshot,
  config: ModelConfig,
  fingerprints: { modelFingerprint: string; tokenizerFingerprint: string },
): void {
  if (!isValidSessionId(s.id)) encodeFail(`invalid session id ${JSON.stringify(s.id)}`);
  for (const [k, v] of Object.entries(fingerprints)) {
    if (typeof v !== "string" || v.length === 0) encodeFail(`${k} must be a non-empty string`);
  }
  const ints = {
    generation: s.generation,
    position: s.state.position,
    "rng.seed": s.rng.seed,
    "rng.counter": s.rng.counter,
  };
  for (const [k, v] of Object.entries(ints)) {
    if (!Number.isSafeInteger(v) || v < 0) {
      encodeFail(`${k} must be a non-negative integer, got ${v}`);
    }
  }
  if (!Number.isSafeInteger(s.pending) || s.pending < -1) encodeFail(`pending ${s.pending}`);
  if (s.tokens !== null && !(s.tokens instanceof Int32Array)) {
    encodeFail("tokens: not an Int32Array");
  }
  if (s.generated !== null && !(s.generated instanceof Uint8Array)) {
    encodeFail("generated: not a Uint8Array");
  }
  if (!(s.text.pendingBytes instanceof Uint8Array)) {
    encodeFail("text.pendingBytes: not a Uint8Array");
  }
  checkHistory(s, config);
  checkLayers(s, config);
}

/** The history checks `decodeSession` makes. */
function checkHistory(s: SessionSnapshot, config: ModelConfig): void {
  const { position } = s.state;
  if (s.pending >= config.vocabSize) encodeFail(`pending ${s.pending} is outside the vocabulary`);
  if (s.pending === -1 && position !== 0) encodeFail(`position ${position} with no pending token`);
  if (s.tokens !== null) {
    const consumed = s.tokens.length - (s.pending >= 0 ? 1 : 0);
    if (consumed !== position) {
      encodeFail(
        `position ${position} but ${s.tokens.length} history tokens (${consumed} consumed)`,
      );
    }
    if (s.pending >= 0 && s.tokens[s.tokens.length - 1] !== s.pending) {
      encodeFail(`pending ${s.pending} is not the last history token`);
    }
    for (let i = 0; i < s.tokens.length; i++) {
      if (s.tokens[i] < 0 || s.tokens[i] >= config.vocabSize) {
        encodeFail(`tokens[${i}] out of range`);
      }
    }
  }
  if (s.generated !== null) {
    if (s.tokens === null || s.generated.length !== s.tokens.length) {
      encodeFail("generated: needs one flag per history token");
    }
    if (s.generated.some((g) => g > 1)) encodeFail("generated: flags must be 0 or 1");
  }
  if (s.text.pendingBytes.length > MAX_PENDING_TEXT_BYTES) encodeFail("text.pendingBytes too long");
  if (typeof s.text.heldStop !== "string") encodeFail("text.heldStop: not a string");
  if (new TextEncoder().encode(s.text.heldStop).length > MAX_HELD_STOP_BYTES) {
    encodeFail("text.heldStop too long");
  }
  if (!Number.isFinite(s.createdAt) || s.createdAt < 0) encodeFail(`createdAt ${s.createdAt}`);
  if (!Number.isFinite(s.updatedAt) || s.updatedAt < 0) encodeFail(`updatedAt ${s.updatedAt}`);
}

/** One finite f32 array per layer, each of the model's state size. */
function checkLayers(s: SessionSnapshot, config: ModelConfig): void {
  if (s.state.layers.length !== config.numLayers) {
    encodeFail(`${s.state.layers.length} layers for a model of ${config.numLayers}`);
  }
  s.state.layers.forEach((l, i) => {
    if (!(l instanceof Float32Array)) encodeFail(`layer ${i}: not a Float32Array`);
    if (l.length !== stateLayerSize(config, i)) {
      encodeFail(
        `layer ${i}: ${l.length} values, the model's state has ${stateLayerSize(config, i)}`,
      );
    }
    // A state its backend already checked when it read it back (`ModelState.finite`, on the GPU
    // or in the backend's worker) is not scanned again: 13 MB per 385M save.
    if (s.state.finite === true) return;
    const bad = firstNonFinite(l);
    if (bad >= 0) encodeFail(`layer ${i}: non-finite value ${l[bad]} at index ${bad}`);
  });
}

/** Plain (msgpack-portable) copy of the sampling settings: drops `undefined`, maps Map to a map. */
export function plainValue(v: unknown, path: string, depth: number): unknown {
  if (depth > 4) encodeFail(`${path}: nested too deeply`);
  if (v === null || typeof v === "boolean" || typeof v === "string") return v;
  if (typeof v === "number") {
    if (!Number.isFinite(v)) encodeFail(`${path}: ${v} is not a finite number`);
    return v;
  }
  if (Array.isArray(v)) return v.map((x, i) => plainValue(x, `${path}[${i}]`, depth + 1));
  if (v instanceof Map) {
    const o: Record<string, unknown> = {};
    for (const [k, x] of v) {
      if (x !== undefined) o[String(k)] = plainValue(x, `${path}.${String(k)}`, depth + 1);
    }
    return o;
  }
  if (typeof v === "object" && !ArrayBuffer.isView(v)) {
    const proto = Object.getPrototypeOf(v);
    if (proto !== Object.prototype && proto !== null) encodeFail(`${path}: not a plain object`);
    const o: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
      if (x !== undefined) o[k] = plainValue(x, `${path}.${k}`, depth + 1);
    }
    return o;
  }
  return encodeFail(`${path}: cannot be stored (${typeof v})`);
}
