/**
 * Streaming detokenization: turn ids into text one at a time, never emitting half a UTF-8
 * character, with the concatenation of all outputs equal to `Tokenizer.decode` of all the ids.
 * @module
 */

import { InputError } from "../errors.ts";
import { type DecodeTable, decodeUtf8At, REPLACEMENT, utf8SequenceLength } from "./decode_table.ts";
import { decodeTableOf, type Tokenizer } from "./tokenizer.ts";

/** Options of {@linkcode StreamDecoder}. */
export interface StreamDecoderOptions {
  /**
   * Whether the ids start the text (default true). SentencePiece drops the leading space of the
   * first piece of a text when the model has add_dummy_prefix; pass false when the ids continue
   * text that was decoded earlier, so that no space is dropped.
   */
  atStart?: boolean;
}

/**
 * Decodes ids one at a time. `push(id)` returns the text completed by that id: byte-fallback
 * pieces are held until they form whole characters (or are known to be invalid), everything else
 * comes out at once. `flush()` returns what is left (incomplete bytes as U+FFFD) and makes the
 * decoder ready for a new stream. For any ids, the pushes and the flush together give exactly
 * `tokenizer.decode(ids)`. O(1) work per id: nothing earlier is decoded again.
 */
export class StreamDecoder {
  #table: DecodeTable;
  #initialAtStart: boolean;
  /** True while no text has been produced in this stream. */
  #empty: boolean;
  /** True while the leading-space rule may still drop a `▁`. */
  #strip: boolean;
  /** Pending byte-fallback bytes; at most 3 are held between pushes. */
  #bytes = new Uint8Array(4);
  #count = 0;

  /** A decoder for `tokenizer`'s ids. */
  constructor(tokenizer: Tokenizer, options: StreamDecoderOptions = {}) {
    this.#table = decodeTableOf(tokenizer);
    this.#initialAtStart = options.atStart ?? true;
    this.#empty = this.#initialAtStart;
    this.#strip = this.#initialAtStart && this.#table.leadingSpaceRule !== "none";
  }

  /** Number of byte-fallback bytes held back, waiting for the rest of their character. */
  get pendingBytes(): number {
    return this.#count;
  }

  /** A copy of the byte-fallback bytes held back (at most 3). */
  heldBytes(): Uint8Array {
    return this.#bytes.slice(0, this.#count);
  }

  /**
   * Add one id; returns the newly completed text (possibly ""). Throws {@linkcode InputError} for
   * an id outside the vocabulary (the decoder's state is then unchanged).
   */
  push(id: number): string {
    const t = this.#table;
    if (!(Number.isInteger(id) && id >= 0 && id < t.size)) {
      throw new InputError("id", `id ${id} is outside the vocabulary 0..${t.size - 1}`);
    }
    const b = t.byteOf[id];
    if (b >= 0) {
      this.#bytes[this.#count++] = b;
      return this.#drain(false);
    }
    let out = this.#count > 0 ? this.#drain(true) : "";
    // #drain clears #empty when it writes text, so here #empty implies out === "".
    if (this.#strip && this.#empty && t.leadingSpace[id] === 1) {
      out = t.surface[id].slice(1);
      if (t.leadingSpaceRule === "first") this.#strip = false;
    } else out += t.surface[id];
    if (out.length > 0) this.#empty = false;
    return out;
  }

  /** Add several ids; returns the text they complete, as the pushes one by one would. */
  pushAll(ids: ArrayLike<number>): string {
    let out = "";
    for (let i = 0; i < ids.length; i++) out += this.push(ids[i]);
    return out;
  }

  /** End the stream: returns the remaining text and resets the decoder to its initial state. */
  flush(): string {
    const out = this.#drain(true);
    this.reset();
    return out;
  }

  /** Drop any pending bytes and start a new stream (as at construction). */
  reset(): void {
    this.#count = 0;
    this.#empty = this.#initialAtStart;
    this.#strip = this.#initialAtStart && this.#table.leadingSpaceRule !== "none";
  }

  /**
   * Decode the pending bytes that are settled. With `final`, the byte run has ended, so a
   * sequence still incomplete is invalid (U+FFFD per byte, as SentencePiece does); otherwise it
   * is kept unless one of its bytes already shows it invalid.
   */
  #drain(final: boolean): string {
    const buf = this.#bytes;
    const n = this.#count;
    let out = "";
    let i = 0;
    while (i < n) {
      const need = utf8SequenceLength(buf[i]);
      if (need === 0) {
        out += REPLACEMENT;
        i++;
        continue;
      }
      if (n - i < need) {
        let broken = false;
        for (let k = i + 1; k < n; k++) {
          if ((buf[k] & 0xc0) !== 0x80) broken = true;
        }
        if (!final && !broken) break;
        out += REPLACEMENT;
        i++;
        continue;
      }
      const r = decodeUtf8At(buf, i, n);
      if (r < 0) {
        out += REPLACEMENT;
        i++;
      } else {
        out += String.fromCodePoint(r >>> 3);
        i += r & 7;
      }
    }
    buf.copyWithin(0, i, n);
    this.#count = n - i;
    if (out.length > 0) this.#empty = false;
    return out;
  }
}
