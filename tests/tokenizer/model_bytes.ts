/**
 * Test helpers: write protobuf bytes to build variants of a SentencePiece model (other normalizer
 * flags, other piece types, another unk surface) and to break one on purpose.
 * @module
 */

/** Path of the demo model's tokenizer, inside the repository. */
export const MODEL_PATH: string = new URL(
  "../../models/tnl-shakespeare-6m/tokenizer.model",
  import.meta.url,
).pathname;

/** The demo model's tokenizer bytes. */
export function modelBytes(): Uint8Array<ArrayBuffer> {
  return Deno.readFileSync(MODEL_PATH);
}

/** A protobuf varint; negative numbers as 10-byte two's complement (int32 fields). */
export function varint(value: number | bigint): number[] {
  let v = BigInt.asUintN(64, BigInt(value));
  const out: number[] = [];
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) b |= 0x80;
    out.push(b);
  } while (v > 0n);
  return out;
}

/** Tag bytes of a field. */
export function tag(field: number, wireType: number): number[] {
  return varint(field * 8 + wireType);
}

/** A varint field. */
export function varintField(field: number, value: number | boolean): number[] {
  return [...tag(field, 0), ...varint(typeof value === "boolean" ? (value ? 1 : 0) : value)];
}

/** A length-delimited field. */
export function bytesField(field: number, payload: ArrayLike<number>): number[] {
  return [...tag(field, 2), ...varint(payload.length), ...Array.from(payload)];
}

/** A string field. */
export function stringField(field: number, text: string): number[] {
  return bytesField(field, new TextEncoder().encode(text));
}

/** A float (fixed32) field. */
export function floatField(field: number, value: number): number[] {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setFloat32(0, value, true);
  return [...tag(field, 5), ...b];
}

/** One `SentencePiece` message (piece, score, type) as a `ModelProto.pieces` field. */
export function pieceField(piece: string, score: number, type: number): number[] {
  return bytesField(1, [
    ...stringField(1, piece),
    ...floatField(2, score),
    ...varintField(3, type),
  ]);
}

/** Concatenate byte arrays. */
export function concat(...parts: ArrayLike<number>[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Normalizer flags to merge into a model. */
export interface NormalizerFlags {
  /** Field 3. */
  addDummyPrefix?: boolean;
  /** Field 4. */
  removeExtraWhitespaces?: boolean;
  /** Field 5. */
  escapeWhitespaces?: boolean;
}

/** Append a `normalizer_spec` message; protobuf merges it into the existing one. */
export function withNormalizer(model: Uint8Array, flags: NormalizerFlags): Uint8Array {
  const body: number[] = [];
  if (flags.addDummyPrefix !== undefined) body.push(...varintField(3, flags.addDummyPrefix));
  if (flags.removeExtraWhitespaces !== undefined) {
    body.push(...varintField(4, flags.removeExtraWhitespaces));
  }
  if (flags.escapeWhitespaces !== undefined) body.push(...varintField(5, flags.escapeWhitespaces));
  return concat(model, bytesField(3, body));
}

/** Append raw `trainer_spec` fields; protobuf merges them into the existing message. */
export function withTrainerFields(model: Uint8Array, ...fields: number[][]): Uint8Array {
  return concat(model, bytesField(2, fields.flat()));
}

/** A raw top-level field of a message: its number, wire type and its bytes (tag included). */
export interface RawField {
  /** Field number. */
  field: number;
  /** Wire type. */
  wireType: number;
  /** All bytes of the field, tag included. */
  raw: Uint8Array;
  /** The payload of a length-delimited field. */
  payload: Uint8Array;
}

/** Split a well-formed message into its top-level fields (only for test inputs known good). */
export function splitFields(bytes: Uint8Array): RawField[] {
  const out: RawField[] = [];
  let pos = 0;
  const readVarint = (): bigint => {
    let v = 0n;
    let shift = 0n;
    for (;;) {
      const b = bytes[pos++];
      v |= BigInt(b & 0x7f) << shift;
      shift += 7n;
      if ((b & 0x80) === 0) return v;
    }
  };
  while (pos < bytes.length) {
    const start = pos;
    const t = Number(readVarint());
    const wireType = t & 7;
    let payload: Uint8Array = new Uint8Array(0);
    if (wireType === 0) readVarint();
    else if (wireType === 1) pos += 8;
    else if (wireType === 5) pos += 4;
    else if (wireType === 2) {
      const len = Number(readVarint());
      payload = bytes.subarray(pos, pos + len);
      pos += len;
    } else throw new Error(`wire type ${wireType}`);
    out.push({ field: t >>> 3, wireType, raw: bytes.subarray(start, pos), payload });
  }
  return out;
}

/** Rebuild a model with some pieces given another type (and optionally another text). */
export function withPieces(
  model: Uint8Array,
  change: (id: number, piece: string, type: number) => { piece?: string; type?: number } | null,
): Uint8Array {
  const parts: ArrayLike<number>[] = [];
  let id = 0;
  for (const f of splitFields(model)) {
    if (f.field !== 1) {
      parts.push(f.raw);
      continue;
    }
    let piece = "";
    let score = 0;
    let type = 1;
    for (const g of splitFields(f.payload)) {
      if (g.field === 1) piece = new TextDecoder().decode(g.payload);
      else if (g.field === 2) {
        score = new DataView(g.raw.buffer, g.raw.byteOffset + 1).getFloat32(0, true);
      } else if (g.field === 3) type = g.raw[1];
    }
    const c = change(id, piece, type);
    parts.push(c ? pieceField(c.piece ?? piece, score, c.type ?? type) : f.raw);
    id++;
  }
  return concat(...parts);
}
