/**
 * A small, bounds-checked protobuf reader for SentencePiece's `ModelProto` (the `tokenizer.model`
 * file). It reads only what this project needs: the piece table, a few `TrainerSpec` fields and the
 * `NormalizerSpec` flags, and skips every other field by its wire type. Malformed bytes give a
 * {@linkcode TokenizerError}; the reader never reads out of bounds and always advances, so it cannot
 * hang.
 * @module
 */

import { TokenizerError } from "../errors.ts";

/** Piece types of `ModelProto.SentencePiece.Type`. */
export const PieceType: {
  readonly NORMAL: 1;
  readonly UNKNOWN: 2;
  readonly CONTROL: 3;
  readonly USER_DEFINED: 4;
  readonly UNUSED: 5;
  readonly BYTE: 6;
} = {
  /** An ordinary piece. */
  NORMAL: 1,
  /** The unknown piece (`<unk>`); exactly one per model. */
  UNKNOWN: 2,
  /** A control piece such as `<s>` or `</s>`; it decodes to nothing. */
  CONTROL: 3,
  /** A user-defined piece, always kept whole when encoding. */
  USER_DEFINED: 4,
  /** A piece reserved but not used by the encoder. */
  UNUSED: 5,
  /** A byte-fallback piece `<0xNN>`. */
  BYTE: 6,
};

/** One of the {@linkcode PieceType} values. */
export type PieceType = typeof PieceType[keyof typeof PieceType];

/** Model types of `TrainerSpec.ModelType`. */
export const ModelType: {
  readonly UNIGRAM: 1;
  readonly BPE: 2;
  readonly WORD: 3;
  readonly CHAR: 4;
} = {
  /** Unigram language model. */
  UNIGRAM: 1,
  /** Byte-pair encoding. */
  BPE: 2,
  /** Whitespace-delimited words. */
  WORD: 3,
  /** Single characters. */
  CHAR: 4,
};

/** One of the {@linkcode ModelType} values. */
export type ModelType = typeof ModelType[keyof typeof ModelType];

/** One entry of the piece table (`ModelProto.pieces`); its index is its id. */
export interface SentencePieceEntry {
  /** The piece text, with `▁` (U+2581) standing for a space. */
  piece: string;
  /** The piece score (log probability for unigram, merge rank for BPE). */
  score: number;
  /** The piece type. */
  type: PieceType;
}

/** The `TrainerSpec` fields this project reads (defaults as in `sentencepiece_model.proto`). */
export interface TrainerSpec {
  /** Field 3: the model type (default unigram). */
  modelType: number;
  /** Field 4: the vocabulary size the model was trained for (default 8000). */
  vocabSize: number;
  /** Field 24: whitespace is a suffix rather than a prefix of pieces. */
  treatWhitespaceAsSuffix: boolean;
  /** Field 25: digits are split into single pieces. */
  splitDigits: boolean;
  /** Field 35: unknown characters are encoded as UTF-8 byte pieces. */
  byteFallback: boolean;
  /** Field 40: id of the unknown piece (default 0). */
  unkId: number;
  /** Field 41: id of the beginning-of-sentence piece (default 1). */
  bosId: number;
  /** Field 42: id of the end-of-sentence piece (default 2). */
  eosId: number;
  /** Field 43: id of the padding piece (default -1: none). */
  padId: number;
  /** Field 44: what the unknown piece decodes to (default `" ⁇ "`). */
  unkSurface: string;
  /** Field 45: the unknown piece (default `<unk>`). */
  unkPiece: string;
  /** Field 46: the beginning-of-sentence piece (default `<s>`). */
  bosPiece: string;
  /** Field 47: the end-of-sentence piece (default `</s>`). */
  eosPiece: string;
  /** Field 48: the padding piece (default `<pad>`). */
  padPiece: string;
}

/** The `NormalizerSpec` fields this project reads (defaults as in `sentencepiece_model.proto`). */
export interface NormalizerSpec {
  /** Field 1: the rule name (`identity`, `nmt_nfkc`, ...). */
  name: string;
  /** Field 2: the precompiled character map (normalization rules); empty when there is none. */
  precompiledCharsmap: Uint8Array;
  /** Field 3: a `▁` is prepended to the text when encoding (default true). */
  addDummyPrefix: boolean;
  /** Field 4: leading, trailing and repeated spaces are removed when encoding (default true). */
  removeExtraWhitespaces: boolean;
  /** Field 5: spaces are written as `▁` (default true). */
  escapeWhitespaces: boolean;
}

/** The parts of a SentencePiece `ModelProto` this project reads. */
export interface ModelProto {
  /** Field 1: the piece table; a piece's index is its id. */
  pieces: SentencePieceEntry[];
  /** Field 2: the trainer settings (defaults when absent). */
  trainerSpec: TrainerSpec;
  /** Field 3: the normalizer settings (defaults when absent). */
  normalizerSpec: NormalizerSpec;
  /** Field 5: the denormalizer settings, or null when the model has none. */
  denormalizerSpec: NormalizerSpec | null;
}

/** Protobuf wire types. */
const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LEN = 2;
const WIRE_FIXED32 = 5;

// ignoreBOM: a piece may be U+FEFF itself, which must not be dropped.
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** A cursor over a byte range; every read checks its bounds against `end`. */
class Reader {
  pos: number;
  /** High 32 bits of the last varint read. */
  hi = 0;
  constructor(
    readonly bytes: Uint8Array,
    readonly view: DataView,
    start: number,
    readonly end: number,
    readonly source: string,
  ) {
    this.pos = start;
  }

  fail(detail: string): never {
    throw new TokenizerError(this.source, `not a valid SentencePiece model: ${detail}`);
  }

  /** Read a varint of at most 10 bytes; returns the low 32 bits (unsigned), sets `hi`. */
  varint(): number {
    let lo = 0;
    let hi = 0;
    const start = this.pos;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) this.fail(`truncated varint at byte ${start}`);
      const b = this.bytes[this.pos++];
      if (i < 4) lo |= (b & 0x7f) << (7 * i);
      else if (i === 4) {
        lo |= (b & 0x0f) << 28;
        hi |= (b & 0x7f) >>> 4;
      } else hi |= (b & 0x7f) << (7 * i - 32);
      if ((b & 0x80) === 0) {
        this.hi = hi >>> 0;
        return lo >>> 0;
      }
    }
    return this.fail(`varint longer than 10 bytes at byte ${start}`);
  }

  /** A varint read as a protobuf `int32` (two's complement of the low 32 bits). */
  int32(): number {
    return this.varint() | 0;
  }

  bool(): boolean {
    const lo = this.varint();
    return lo !== 0 || this.hi !== 0;
  }

  float(): number {
    if (this.end - this.pos < 4) this.fail(`truncated float at byte ${this.pos}`);
    const v = this.view.getFloat32(this.pos, true);
    this.pos += 4;
    return v;
  }

  /** Read a length prefix and return the end offset of the delimited range. */
  lengthDelimited(): number {
    const at = this.pos;
    const len = this.varint();
    if (this.hi !== 0 || len > this.end - this.pos) {
      this.fail(`length-delimited field at byte ${at} runs past the end of its message`);
    }
    return this.pos + len;
  }

  string(what: string): string {
    const end = this.lengthDelimited();
    const start = this.pos;
    this.pos = end;
    try {
      return utf8.decode(this.bytes.subarray(start, end));
    } catch {
      return this.fail(`${what} at byte ${start} is not valid UTF-8`);
    }
  }

  /** Read a tag: `field * 8 + wireType` (field number checked to be at least 1). */
  tag(): number {
    const at = this.pos;
    const t = this.varint();
    if (this.hi !== 0) this.fail(`field tag out of range at byte ${at}`);
    if (t >>> 3 === 0) this.fail(`field number 0 at byte ${at}`);
    return t;
  }

  /** Skip a field's value by its wire type. */
  skip(wireType: number, tagAt: number): void {
    switch (wireType) {
      case WIRE_VARINT:
        this.varint();
        return;
      case WIRE_FIXED64:
        if (this.end - this.pos < 8) this.fail(`truncated fixed64 at byte ${this.pos}`);
        this.pos += 8;
        return;
      case WIRE_LEN:
        this.pos = this.lengthDelimited();
        return;
      case WIRE_FIXED32:
        if (this.end - this.pos < 4) this.fail(`truncated fixed32 at byte ${this.pos}`);
        this.pos += 4;
        return;
      default:
        this.fail(`unsupported wire type ${wireType} at byte ${tagAt}`);
    }
  }

  /** Check the wire type of a known field. */
  expect(wireType: number, expected: number, field: string, tagAt: number): void {
    if (wireType !== expected) {
      this.fail(`field ${field} at byte ${tagAt} has wire type ${wireType}, expected ${expected}`);
    }
  }

  /** A reader over the sub-message that starts at the current position. */
  sub(): Reader {
    const end = this.lengthDelimited();
    const r = new Reader(this.bytes, this.view, this.pos, end, this.source);
    this.pos = end;
    return r;
  }
}

/** The default `TrainerSpec` values of `sentencepiece_model.proto`. */
function defaultTrainerSpec(): TrainerSpec {
  return {
    modelType: ModelType.UNIGRAM,
    vocabSize: 8000,
    treatWhitespaceAsSuffix: false,
    splitDigits: false,
    byteFallback: false,
    unkId: 0,
    bosId: 1,
    eosId: 2,
    padId: -1,
    unkSurface: " \u2047 ",
    unkPiece: "<unk>",
    bosPiece: "<s>",
    eosPiece: "</s>",
    padPiece: "<pad>",
  };
}

/** The default `NormalizerSpec` values of `sentencepiece_model.proto`. */
function defaultNormalizerSpec(): NormalizerSpec {
  return {
    name: "",
    precompiledCharsmap: new Uint8Array(0),
    addDummyPrefix: true,
    removeExtraWhitespaces: true,
    escapeWhitespaces: true,
  };
}

function readPiece(r: Reader): SentencePieceEntry {
  const out: SentencePieceEntry = { piece: "", score: 0, type: PieceType.NORMAL };
  while (r.pos < r.end) {
    const at = r.pos;
    const t = r.tag();
    const field = t >>> 3;
    const wt = t & 7;
    if (field === 1) {
      r.expect(wt, WIRE_LEN, "SentencePiece.piece", at);
      out.piece = r.string("piece text");
    } else if (field === 2) {
      r.expect(wt, WIRE_FIXED32, "SentencePiece.score", at);
      out.score = r.float();
    } else if (field === 3) {
      r.expect(wt, WIRE_VARINT, "SentencePiece.type", at);
      const type = r.int32();
      if (type < PieceType.NORMAL || type > PieceType.BYTE) {
        r.fail(`piece type ${type} at byte ${at} is not a known type`);
      }
      out.type = type as PieceType;
    } else r.skip(wt, at);
  }
  return out;
}

function readTrainerSpec(r: Reader, out: TrainerSpec): void {
  while (r.pos < r.end) {
    const at = r.pos;
    const t = r.tag();
    const field = t >>> 3;
    const wt = t & 7;
    const varint = (name: string): number => {
      r.expect(wt, WIRE_VARINT, `TrainerSpec.${name}`, at);
      return r.int32();
    };
    const flag = (name: string): boolean => {
      r.expect(wt, WIRE_VARINT, `TrainerSpec.${name}`, at);
      return r.bool();
    };
    const str = (name: string): string => {
      r.expect(wt, WIRE_LEN, `TrainerSpec.${name}`, at);
      return r.string(`TrainerSpec.${name}`);
    };
    switch (field) {
      case 3:
        out.modelType = varint("model_type");
        break;
      case 4:
        out.vocabSize = varint("vocab_size");
        break;
      case 24:
        out.treatWhitespaceAsSuffix = flag("treat_whitespace_as_suffix");
        break;
      case 25:
        out.splitDigits = flag("split_digits");
        break;
      case 35:
        out.byteFallback = flag("byte_fallback");
        break;
      case 40:
        out.unkId = varint("unk_id");
        break;
      case 41:
        out.bosId = varint("bos_id");
        break;
      case 42:
        out.eosId = varint("eos_id");
        break;
      case 43:
        out.padId = varint("pad_id");
        break;
      case 44:
        out.unkSurface = str("unk_surface");
        break;
      case 45:
        out.unkPiece = str("unk_piece");
        break;
      case 46:
        out.bosPiece = str("bos_piece");
        break;
      case 47:
        out.eosPiece = str("eos_piece");
        break;
      case 48:
        out.padPiece = str("pad_piece");
        break;
      default:
        r.skip(wt, at);
    }
  }
}

function readNormalizerSpec(r: Reader, out: NormalizerSpec, name: string): void {
  while (r.pos < r.end) {
    const at = r.pos;
    const t = r.tag();
    const field = t >>> 3;
    const wt = t & 7;
    switch (field) {
      case 1:
        r.expect(wt, WIRE_LEN, `${name}.name`, at);
        out.name = r.string(`${name}.name`);
        break;
      case 2: {
        r.expect(wt, WIRE_LEN, `${name}.precompiled_charsmap`, at);
        const end = r.lengthDelimited();
        out.precompiledCharsmap = r.bytes.subarray(r.pos, end);
        r.pos = end;
        break;
      }
      case 3:
        r.expect(wt, WIRE_VARINT, `${name}.add_dummy_prefix`, at);
        out.addDummyPrefix = r.bool();
        break;
      case 4:
        r.expect(wt, WIRE_VARINT, `${name}.remove_extra_whitespaces`, at);
        out.removeExtraWhitespaces = r.bool();
        break;
      case 5:
        r.expect(wt, WIRE_VARINT, `${name}.escape_whitespaces`, at);
        out.escapeWhitespaces = r.bool();
        break;
      default:
        r.skip(wt, at);
    }
  }
}

/**
 * Parse the bytes of a SentencePiece `tokenizer.model` into a {@linkcode ModelProto}. Only the
 * protobuf structure is checked here; {@linkcode validateModelProto} checks what SentencePiece
 * requires of the contents. `source` names the file in error messages.
 */
export function parseModelProto(bytes: Uint8Array, source = "tokenizer model"): ModelProto {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const r = new Reader(bytes, view, 0, bytes.length, source);
  const proto: ModelProto = {
    pieces: [],
    trainerSpec: defaultTrainerSpec(),
    normalizerSpec: defaultNormalizerSpec(),
    denormalizerSpec: null,
  };
  while (r.pos < r.end) {
    const at = r.pos;
    const t = r.tag();
    const field = t >>> 3;
    const wt = t & 7;
    if (field === 1) {
      r.expect(wt, WIRE_LEN, "ModelProto.pieces", at);
      proto.pieces.push(readPiece(r.sub()));
    } else if (field === 2) {
      r.expect(wt, WIRE_LEN, "ModelProto.trainer_spec", at);
      readTrainerSpec(r.sub(), proto.trainerSpec);
    } else if (field === 3) {
      r.expect(wt, WIRE_LEN, "ModelProto.normalizer_spec", at);
      readNormalizerSpec(r.sub(), proto.normalizerSpec, "NormalizerSpec");
    } else if (field === 5) {
      r.expect(wt, WIRE_LEN, "ModelProto.denormalizer_spec", at);
      proto.denormalizerSpec ??= defaultNormalizerSpec();
      readNormalizerSpec(r.sub(), proto.denormalizerSpec, "denormalizer NormalizerSpec");
    } else r.skip(wt, at);
  }
  return proto;
}

/** The byte a piece `<0xNN>` (two upper-case hex digits) stands for, or -1 for any other text. */
export function pieceToByte(piece: string): number {
  if (piece.length !== 6 || !piece.startsWith("<0x") || piece[5] !== ">") return -1;
  const hex = piece.slice(3, 5);
  if (!/^[0-9A-F]{2}$/.test(hex)) return -1;
  return parseInt(hex, 16);
}

/**
 * Check what SentencePiece requires of a model before it is handed to the encoder: a non-empty
 * piece table of non-empty, distinct pieces, exactly one unknown piece, a known model type,
 * well-formed byte pieces (all 256 present when `byte_fallback` is on, none when it is off), and
 * no denormalization map (decoding would then not be plain piece concatenation). Throws
 * {@linkcode TokenizerError} naming `source`.
 */
export function validateModelProto(proto: ModelProto, source = "tokenizer model"): void {
  const fail = (detail: string): never => {
    throw new TokenizerError(source, `not a valid SentencePiece model: ${detail}`);
  };
  const { pieces, trainerSpec } = proto;
  if (pieces.length === 0) fail("the piece table is empty");
  const mt = trainerSpec.modelType;
  if (mt < ModelType.UNIGRAM || mt > ModelType.CHAR) fail(`unknown model type ${mt}`);
  const seen = new Map<string, number>();
  const bytes = new Int32Array(256).fill(-1);
  let unk = -1;
  for (let id = 0; id < pieces.length; id++) {
    const { piece, type } = pieces[id];
    if (piece.length === 0) fail(`piece ${id} is empty`);
    const prev = seen.get(piece);
    if (prev !== undefined) {
      fail(`piece ${JSON.stringify(piece)} is defined twice (${prev}, ${id})`);
    }
    seen.set(piece, id);
    if (type === PieceType.UNKNOWN) {
      if (unk >= 0) fail(`two unknown pieces (${unk}, ${id})`);
      unk = id;
    } else if (type === PieceType.BYTE) {
      if (!trainerSpec.byteFallback) fail(`byte piece ${id} but byte_fallback is off`);
      const b = pieceToByte(piece);
      if (b < 0) fail(`byte piece ${id} ${JSON.stringify(piece)} is not of the form <0xNN>`);
      bytes[b] = id;
    }
  }
  if (unk < 0) fail("no unknown piece");
  if (trainerSpec.byteFallback) {
    const missing = bytes.indexOf(-1);
    if (missing >= 0) {
      const hex = missing.toString(16).toUpperCase().padStart(2, "0");
      fail(`byte_fallback is on but byte piece <0x${hex}> is missing`);
    }
  }
  if (proto.denormalizerSpec && proto.denormalizerSpec.precompiledCharsmap.length > 0) {
    fail("denormalization maps are not supported");
  }
  const problem = checkCharsmap(proto.normalizerSpec.precompiledCharsmap);
  if (problem) fail(`precompiled_charsmap: ${problem}`);
}

/**
 * Check that SentencePiece can use a precompiled character map without reading out of bounds: a
 * little-endian u32 trie size, a darts-clone double-array trie of that many bytes, then the
 * NUL-terminated replacement strings. Every trie state reachable from the root is visited, and
 * for each of the 256 possible next bytes the unit SentencePiece would read must be inside the
 * trie, and every value must point at a NUL-terminated string inside the map. Returns a problem
 * description, or null when the map is sound (or empty).
 */
export function checkCharsmap(blob: Uint8Array): string | null {
  if (blob.length === 0) return null;
  if (blob.length < 4) return "shorter than its 4-byte header";
  const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  const trieBytes = view.getUint32(0, true);
  if (trieBytes === 0 || trieBytes % 4 !== 0) {
    return `trie size ${trieBytes} is not a multiple of 4`;
  }
  if (trieBytes >= blob.length - 4) return `trie size ${trieBytes} exceeds the map`;
  const n = trieBytes / 4;
  const unit = (i: number): number => view.getUint32(4 + 4 * i, true);
  const offset = (u: number): number => (u >>> 10) << ((u & 0x200) >>> 6);
  const strings = blob.subarray(4 + trieBytes);
  const lastNul = strings.lastIndexOf(0);
  const seen = new Uint8Array(n);
  const stack: number[] = [offset(unit(0))];
  while (stack.length > 0) {
    const pos = stack.pop()!;
    // SentencePiece reads unit[pos ^ c] for the next input byte c, whatever it is.
    if ((pos | 0xff) >= n) return `a trie state at ${pos} leads outside the trie (${n} units)`;
    if (seen[pos]) continue;
    seen[pos] = 1;
    for (let c = 0; c < 256; c++) {
      const child = pos ^ c;
      const u = unit(child);
      if (((u & 0x800000ff) >>> 0) !== c) continue; // no transition on c
      const next = child ^ offset(u);
      if ((u >>> 8) & 1) {
        if (next >= n) return `a trie value at ${next} is outside the trie`;
        const value = unit(next) & 0x7fffffff;
        if (value > lastNul) return `a trie value points past the last string (${value})`;
      }
      stack.push(next);
    }
  }
  return null;
}
