/**
 * The SentencePiece tokenizer. Encoding runs SentencePiece itself (its C++ compiled to WebAssembly,
 * the npm package `@sctg/sentencepiece-js`); decoding is done here in TypeScript from the piece
 * table read by `model_proto.ts`, byte for byte the same as SentencePiece's `DecodeIds`.
 * @module
 */

import { InputError, TnlError, TokenizerError } from "../errors.ts";
import { decodeByteRun, DecodeTable } from "./decode_table.ts";
import {
  type ModelProto,
  parseModelProto,
  PieceType,
  type PieceType as PieceTypeValue,
  validateModelProto,
} from "./model_proto.ts";

/** Options of {@linkcode Tokenizer.encode}. */
export interface TokenizerEncodeOptions {
  /** Prepend the beginning-of-sentence id (default false). */
  bos?: boolean;
  /** Append the end-of-sentence id (default false). */
  eos?: boolean;
}

// The parts of the embind API of @sctg/sentencepiece-js that are used here.
interface Deletable {
  delete(): void;
}
interface WasmStatus extends Deletable {
  ToString(): string;
}
interface WasmVectorInt extends Deletable {
  size(): number;
  get(i: number): number;
}
interface WasmStringView extends Deletable {
  getView(): Deletable;
}
interface WasmModule {
  StringView: new (s: string | Uint8Array) => WasmStringView;
}
interface WasmProcessor {
  status(): WasmStatus;
  EncodeAsIds(view: Deletable): WasmVectorInt;
  PieceToId(view: Deletable): number;
}

/** UTF-16 code units handed to SentencePiece per call when the text can be cut exactly. */
const CHUNK = 1 << 15;
/** Longest UTF-8 text handed to SentencePiece in one call when it cannot be cut exactly. */
const MAX_UNCUT_BYTES = 1 << 20;
/** Most ids checked against the wasm's PieceToId after loading. */
const PIECE_CHECKS = 512;

const encoder = new TextEncoder();

/** How a long text may be cut into independent SentencePiece calls without changing the ids. */
type CutMode = "plain" | "dummy" | "none";

const tables = new WeakMap<Tokenizer, DecodeTable>();

/** The decoding tables of a tokenizer (internal to the tokenizer room; used by `StreamDecoder`). */
export function decodeTableOf(tokenizer: Tokenizer): DecodeTable {
  const t = tables.get(tokenizer);
  if (!t) throw new TypeError("not a loaded Tokenizer");
  return t;
}

function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = new Uint8Array(
    await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>),
  );
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Find the id of a special piece: by its name (as SentencePiece does), else by the trainer id. */
function specialId(proto: ModelProto, byName: Map<string, number>, name: string, id: number) {
  const named = byName.get(name);
  if (named !== undefined && proto.pieces[named].type === PieceType.CONTROL) return named;
  if (id >= 0 && id < proto.pieces.length && proto.pieces[id].type === PieceType.CONTROL) return id;
  return -1;
}

/**
 * A SentencePiece tokenizer: `encode` through SentencePiece (WebAssembly), `decode` and the piece
 * table in TypeScript. Create one with {@linkcode Tokenizer.load}.
 */
export class Tokenizer {
  /** The file path the model came from, or a label for bytes. */
  readonly source: string;
  /** Number of pieces (ids are `0 .. vocabSize - 1`). */
  readonly vocabSize: number;
  /** Id of the beginning-of-sentence piece, or -1 when the model has none. */
  readonly bosId: number;
  /** Id of the end-of-sentence piece, or -1 when the model has none. */
  readonly eosId: number;
  /** Id of the unknown piece. */
  readonly unkId: number;
  /** Id of the padding piece, or -1 when the model has none. */
  readonly padId: number;
  /** Hex SHA-256 of the model file's bytes. */
  readonly fingerprint: string;
  /** The parsed model (piece table, trainer and normalizer settings); treat it as read-only. */
  readonly model: ModelProto;

  #module: WasmModule;
  #processor: WasmProcessor;
  #ids: Map<string, number>;
  #table: DecodeTable;
  #cutMode: CutMode;
  #escapeSpaces: boolean;
  #pairs: Set<number> | null = null;

  private constructor(
    source: string,
    model: ModelProto,
    ids: Map<string, number>,
    fingerprint: string,
    module: WasmModule,
    processor: WasmProcessor,
  ) {
    this.source = source;
    this.model = model;
    this.#ids = ids;
    this.fingerprint = fingerprint;
    this.#module = module;
    this.#processor = processor;
    this.vocabSize = model.pieces.length;
    const ts = model.trainerSpec;
    this.unkId = model.pieces.findIndex((p) => p.type === PieceType.UNKNOWN);
    this.bosId = specialId(model, ids, ts.bosPiece, ts.bosId);
    this.eosId = specialId(model, ids, ts.eosPiece, ts.eosId);
    this.padId = specialId(model, ids, ts.padPiece, ts.padId);
    this.#table = new DecodeTable(model);
    tables.set(this, this.#table);
    const ns = model.normalizerSpec;
    this.#escapeSpaces = ns.escapeWhitespaces;
    if (ns.precompiledCharsmap.length > 0 || ns.removeExtraWhitespaces) this.#cutMode = "none";
    else if (!ns.addDummyPrefix) this.#cutMode = "plain";
    else if (!ts.treatWhitespaceAsSuffix && ns.escapeWhitespaces) this.#cutMode = "dummy";
    else this.#cutMode = "none";
  }

  /**
   * Load a SentencePiece `tokenizer.model` from a file path or from its bytes. The model is parsed
   * and checked here before SentencePiece sees it. Throws {@linkcode TokenizerError} naming the
   * source when the file cannot be read or is not a valid SentencePiece model.
   */
  static async load(pathOrBytes: string | Uint8Array): Promise<Tokenizer> {
    let source: string;
    let bytes: Uint8Array;
    if (typeof pathOrBytes === "string") {
      source = pathOrBytes;
      try {
        bytes = await Deno.readFile(pathOrBytes);
      } catch (e) {
        throw new TokenizerError(source, `cannot read the tokenizer file: ${describe(e)}`);
      }
    } else if (pathOrBytes instanceof Uint8Array) {
      source = "tokenizer model bytes";
      bytes = pathOrBytes;
    } else {
      throw new TokenizerError("tokenizer", "expected a file path or a Uint8Array");
    }
    const model = parseModelProto(bytes, source);
    validateModelProto(model, source);
    const ids = new Map<string, number>();
    model.pieces.forEach((p, id) => ids.set(p.piece, id));
    const fingerprint = await sha256Hex(bytes);

    try {
      const { SentencePieceProcessor } = await import("./sentencepiece.ts");
      const sp = new SentencePieceProcessor();
      await sp.loadFromB64StringModel(toBase64(bytes));
      const module = sp.sentencepiece as WasmModule;
      const processor = sp.processor as WasmProcessor;
      const status = processor.status();
      const message = status.ToString();
      status.delete();
      if (message !== "OK") {
        throw new TokenizerError(source, `SentencePiece rejected the model: ${message}`);
      }
      const tok = new Tokenizer(source, model, ids, fingerprint, module, processor);
      tok.#checkAgainstWasm();
      return tok;
    } catch (e) {
      if (e instanceof TokenizerError) throw e;
      throw new TokenizerError(source, `SentencePiece could not load the model: ${describe(e)}`);
    }
  }

  /** Check that SentencePiece sees the same piece table (a sample of ids, all special ones). */
  #checkAgainstWasm(): void {
    const n = this.vocabSize;
    const step = Math.max(1, Math.floor(n / PIECE_CHECKS));
    for (let id = 0; id < n; id++) {
      if (id % step !== 0 && this.model.pieces[id].type === PieceType.NORMAL) continue;
      const got = this.#wasmPieceToId(this.model.pieces[id].piece);
      if (got !== id) {
        throw new TokenizerError(
          this.source,
          `SentencePiece maps piece ${id} ${JSON.stringify(this.model.pieces[id].piece)} to ${got}`,
        );
      }
    }
  }

  #wasmPieceToId(piece: string): number {
    const sv = new this.#module.StringView(encoder.encode(piece));
    try {
      const view = sv.getView();
      try {
        return this.#processor.PieceToId(view);
      } finally {
        view.delete();
      }
    } finally {
      sv.delete();
    }
  }

  /**
   * Encode text to ids with SentencePiece. No BOS or EOS unless asked for. Any JS string is
   * accepted: lone surrogates become U+FFFD (as `TextEncoder` does), NUL is an ordinary character,
   * and long texts (over 32K UTF-16 units) are handed to SentencePiece in parts cut where no
   * vocabulary piece can span the cut, so the ids are the same as for one call, while the wasm
   * heap stays small (it never shrinks). Two limits: a window of 16K-32K characters with no such
   * cut point (one enormous repeated "word") is cut at its end anyway, which may change the ids
   * around that cut; and a model whose normalization cannot be cut (a precompiled normalization
   * map, or remove_extra_whitespaces) takes at most 1 MiB of UTF-8 per call, beyond which
   * {@linkcode InputError} is thrown.
   */
  encode(text: string, opts: TokenizerEncodeOptions = {}): Int32Array {
    if (typeof text !== "string") throw new InputError("text", "must be a string");
    if (opts.bos && this.bosId < 0) throw new InputError("bos", "this tokenizer has no BOS piece");
    if (opts.eos && this.eosId < 0) throw new InputError("eos", "this tokenizer has no EOS piece");
    const out: number[] = [];
    if (opts.bos) out.push(this.bosId);
    if (text.length <= CHUNK) {
      this.#encodeBytes(encoder.encode(text), out);
    } else if (this.#cutMode === "none") {
      const bytes = encoder.encode(text);
      if (bytes.length > MAX_UNCUT_BYTES) {
        throw new InputError(
          "text",
          `${bytes.length} bytes is too long for one call with this tokenizer's normalization ` +
            `(limit ${MAX_UNCUT_BYTES}); split the text`,
        );
      }
      this.#encodeBytes(bytes, out);
    } else {
      const wellFormed = text.toWellFormed();
      let start = 0;
      while (start < wellFormed.length) {
        const [end, next] = this.#cut(wellFormed, start);
        this.#encodeBytes(encoder.encode(wellFormed.slice(start, end)), out);
        start = next;
      }
    }
    if (opts.eos) out.push(this.eosId);
    return Int32Array.from(out);
  }

  #encodeBytes(bytes: Uint8Array, out: number[]): void {
    if (bytes.length === 0) return;
    let sv: WasmStringView | undefined;
    let view: Deletable | undefined;
    let vec: WasmVectorInt | undefined;
    try {
      sv = new this.#module.StringView(bytes);
      view = sv.getView();
      vec = this.#processor.EncodeAsIds(view);
      const n = vec.size();
      for (let i = 0; i < n; i++) out.push(vec.get(i));
    } catch (e) {
      throw new TnlError(
        "internal",
        `${this.source}: SentencePiece failed to encode: ${describe(e)}`,
        {
          cause: e,
        },
      );
    } finally {
      vec?.delete();
      view?.delete();
      sv?.delete();
    }
  }

  /** The normalized form of a code point as SentencePiece's identity normalizer writes it. */
  #norm(cp: number): number {
    return cp === 0x20 && this.#escapeSpaces ? 0x2581 : cp;
  }

  /** Code point pairs that occur inside some (non-byte) piece: a cut between them is unsafe. */
  #piecePairs(): Set<number> {
    if (this.#pairs) return this.#pairs;
    const pairs = new Set<number>();
    for (const { piece, type } of this.model.pieces) {
      if (type === PieceType.BYTE) continue;
      let prev = -1;
      for (const ch of piece) {
        const cp = ch.codePointAt(0)!;
        if (prev >= 0) pairs.add(prev * 0x110000 + cp);
        prev = cp;
      }
    }
    this.#pairs = pairs;
    return pairs;
  }

  /**
   * Where to end the SentencePiece call that starts at `start`, and where the next one starts.
   * "plain" (no dummy prefix): cut between two characters that no piece holds side by side.
   * "dummy" (dummy prefix): cut at a space that no piece joins to the character before it; the
   * next call starts after the space, which its own dummy prefix puts back. When a window has no
   * such point (a pathological run of one repeated word), it is cut at its end.
   */
  #cut(text: string, start: number): [number, number] {
    const n = text.length;
    if (n - start <= CHUNK) return [n, n];
    const pairs = this.#piecePairs();
    const limit = start + CHUNK;
    const lowest = start + (CHUNK >> 1);
    for (let p = limit; p > lowest; p--) {
      const c = text.charCodeAt(p);
      if (c >= 0xdc00 && c <= 0xdfff) continue; // inside a surrogate pair
      let before = text.charCodeAt(p - 1);
      if (before >= 0xdc00 && before <= 0xdfff) before = text.codePointAt(p - 2)!;
      if (this.#cutMode === "plain") {
        const after = text.codePointAt(p)!;
        if (!pairs.has(this.#norm(before) * 0x110000 + this.#norm(after))) return [p, p];
      } else if (c === 0x20 && p + 1 < n) {
        if (!pairs.has(this.#norm(before) * 0x110000 + 0x2581)) return [p, p + 1];
      }
    }
    let p = limit;
    const c = text.charCodeAt(p);
    if (c >= 0xdc00 && c <= 0xdfff) p--;
    return [p, p];
  }

  /**
   * Decode ids to text exactly as SentencePiece's `DecodeIds` does: byte-fallback pieces are
   * joined into UTF-8 (each byte of an invalid sequence becomes U+FFFD), `▁` becomes a space,
   * control pieces vanish, the unknown piece becomes its surface (`" ⁇ "` by default), and with
   * add_dummy_prefix or remove_extra_whitespaces the space that starts the text is dropped (see
   * `leadingSpaceRule` in `decode_table.ts` for SentencePiece's exact rule). Throws {@linkcode InputError} for an
   * id outside the vocabulary.
   */
  decode(ids: ArrayLike<number>): string {
    const t = this.#table;
    const n = ids.length;
    let out = "";
    let run: number[] = [];
    let strip = t.leadingSpaceRule !== "none";
    for (let i = 0; i < n; i++) {
      const id = ids[i];
      if (!(Number.isInteger(id) && id >= 0 && id < t.size)) {
        throw new InputError(
          "ids",
          `id ${id} at index ${i} is outside the vocabulary 0..${t.size - 1}`,
        );
      }
      const b = t.byteOf[id];
      if (b >= 0) {
        run.push(b);
        continue;
      }
      if (run.length > 0) {
        out += decodeByteRun(run, run.length);
        run = [];
      }
      if (strip && out.length === 0 && t.leadingSpace[id] === 1) {
        out += t.surface[id].slice(1);
        if (t.leadingSpaceRule === "first") strip = false;
      } else out += t.surface[id];
    }
    if (run.length > 0) out += decodeByteRun(run, run.length);
    return out;
  }

  #checkId(id: number, field: string): void {
    if (!(Number.isInteger(id) && id >= 0 && id < this.vocabSize)) {
      throw new InputError(field, `id ${id} is outside the vocabulary 0..${this.vocabSize - 1}`);
    }
  }

  /** The piece text of an id (with `▁` for spaces). Throws {@linkcode InputError} when out of range. */
  idToPiece(id: number): string {
    this.#checkId(id, "id");
    return this.model.pieces[id].piece;
  }

  /** The id of a piece, or `unkId` when the vocabulary has no such piece (as in SentencePiece). */
  pieceToId(piece: string): number {
    return this.#ids.get(piece) ?? this.unkId;
  }

  /** The type of an id's piece. Throws {@linkcode InputError} when out of range. */
  pieceType(id: number): PieceTypeValue {
    this.#checkId(id, "id");
    return this.model.pieces[id].type;
  }

  /**
   * Whether an id is a special piece: a control piece (`<s>`, `</s>`, padding) or the unknown
   * piece. Throws {@linkcode InputError} when out of range.
   */
  isSpecial(id: number): boolean {
    const type = this.pieceType(id);
    return type === PieceType.CONTROL || type === PieceType.UNKNOWN;
  }
}
