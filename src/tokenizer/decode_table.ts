/**
 * Per-id decoding tables built from a SentencePiece piece table, and SentencePiece's own UTF-8
 * decoding of byte-fallback runs. Shared by `Tokenizer.decode` and `StreamDecoder`; internal to the
 * tokenizer room.
 * @module
 */

import { type ModelProto, pieceToByte, PieceType } from "./model_proto.ts";

/** The space symbol `▁` (U+2581) that stands for a space in pieces. */
export const SPACE_SYMBOL = "\u2581";

/** The replacement character SentencePiece writes for each byte of an invalid UTF-8 sequence. */
export const REPLACEMENT = "\uFFFD";

/** What each id decodes to, precomputed once per model. */
export class DecodeTable {
  /** Number of pieces. */
  readonly size: number;
  /** Text of each non-byte id: `▁` turned into spaces, "" for control pieces, the unk surface. */
  readonly surface: string[];
  /** The byte a byte-fallback piece stands for; -1 for every other id. */
  readonly byteOf: Int16Array;
  /** 1 where the piece starts with `▁`, which is dropped when it starts the text. */
  readonly leadingSpace: Uint8Array;
  /**
   * How SentencePiece's decoder drops the `▁` that starts a piece at the start of the text:
   * `"none"` never (neither add_dummy_prefix nor remove_extra_whitespaces); `"first"` (only
   * add_dummy_prefix) once, from the first piece that has one, while the text is still empty;
   * `"while-empty"` (remove_extra_whitespaces) from every piece met while the text is still empty.
   */
  readonly leadingSpaceRule: "none" | "first" | "while-empty";

  /** Build the tables of a parsed (and validated) model. */
  constructor(proto: ModelProto) {
    const n = proto.pieces.length;
    this.size = n;
    this.surface = new Array<string>(n);
    this.byteOf = new Int16Array(n).fill(-1);
    this.leadingSpace = new Uint8Array(n);
    const ns = proto.normalizerSpec;
    this.leadingSpaceRule = ns.removeExtraWhitespaces
      ? "while-empty"
      : ns.addDummyPrefix
      ? "first"
      : "none";
    for (let id = 0; id < n; id++) {
      const { piece, type } = proto.pieces[id];
      if (type === PieceType.CONTROL) {
        this.surface[id] = "";
      } else if (type === PieceType.UNKNOWN) {
        this.surface[id] = proto.trainerSpec.unkSurface;
      } else if (type === PieceType.BYTE) {
        this.surface[id] = "";
        this.byteOf[id] = pieceToByte(piece);
      } else {
        this.surface[id] = piece.replaceAll(SPACE_SYMBOL, " ");
        if (piece.startsWith(SPACE_SYMBOL)) this.leadingSpace[id] = 1;
      }
    }
  }
}

function isTrail(b: number): boolean {
  return (b & 0xc0) === 0x80;
}

function validCodepoint(cp: number): boolean {
  return cp < 0xd800 || (cp >= 0xe000 && cp <= 0x10ffff);
}

/**
 * Number of bytes the UTF-8 sequence led by `b` needs (1 to 4), or 0 when `b` cannot lead one.
 */
export function utf8SequenceLength(b: number): number {
  if (b < 0x80) return 1;
  if ((b & 0xe0) === 0xc0) return 2;
  if ((b & 0xf0) === 0xe0) return 3;
  if ((b & 0xf8) === 0xf0) return 4;
  return 0;
}

/**
 * Decode one character from `bytes[i..end)` the way SentencePiece does (`DecodeUTF8`): returns
 * `codepoint * 8 + length` for a valid, shortest-form, non-surrogate sequence, or -1 when the byte
 * at `i` does not start one (the caller then writes U+FFFD and moves on by one byte).
 */
export function decodeUtf8At(bytes: ArrayLike<number>, i: number, end: number): number {
  const b0 = bytes[i];
  if (b0 < 0x80) return b0 * 8 + 1;
  const avail = end - i;
  if (avail >= 2 && (b0 & 0xe0) === 0xc0) {
    const b1 = bytes[i + 1];
    const cp = ((b0 & 0x1f) << 6) | (b1 & 0x3f);
    if (isTrail(b1) && cp >= 0x80 && validCodepoint(cp)) return cp * 8 + 2;
  } else if (avail >= 3 && (b0 & 0xf0) === 0xe0) {
    const b1 = bytes[i + 1];
    const b2 = bytes[i + 2];
    const cp = ((b0 & 0x0f) << 12) | ((b1 & 0x3f) << 6) | (b2 & 0x3f);
    if (isTrail(b1) && isTrail(b2) && cp >= 0x800 && validCodepoint(cp)) return cp * 8 + 3;
  } else if (avail >= 4 && (b0 & 0xf8) === 0xf0) {
    const b1 = bytes[i + 1];
    const b2 = bytes[i + 2];
    const b3 = bytes[i + 3];
    const cp = ((b0 & 0x07) << 18) | ((b1 & 0x3f) << 12) | ((b2 & 0x3f) << 6) | (b3 & 0x3f);
    if (isTrail(b1) && isTrail(b2) && isTrail(b3) && cp >= 0x10000 && validCodepoint(cp)) {
      return cp * 8 + 4;
    }
  }
  return -1;
}

/** Decode a whole run of byte-fallback bytes as SentencePiece does (one U+FFFD per bad byte). */
export function decodeByteRun(bytes: ArrayLike<number>, end: number): string {
  let out = "";
  let i = 0;
  while (i < end) {
    const r = decodeUtf8At(bytes, i, end);
    if (r < 0) {
      out += REPLACEMENT;
      i += 1;
    } else {
      out += String.fromCodePoint(r >>> 3);
      i += r & 7;
    }
  }
  return out;
}
