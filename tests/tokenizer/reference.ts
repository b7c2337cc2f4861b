/**
 * Test helper: SentencePiece itself (the wasm build, through the package's own API) as the
 * reference that the TypeScript decoder and the encode wrapper are checked against.
 * @module
 */

import { SentencePieceProcessor } from "sentencepiece";

/** What the tests ask of the reference. */
export interface Reference {
  /** SentencePiece's `EncodeAsIds` of a (well-formed) string. */
  encodeIds(text: string): number[];
  /** SentencePiece's `DecodeIds`. */
  decodeIds(ids: number[]): string;
}

/** Load the reference processor from model bytes. */
export async function reference(bytes: Uint8Array): Promise<Reference> {
  const sp = new SentencePieceProcessor();
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  await sp.loadFromB64StringModel(btoa(s));
  return {
    encodeIds: (text) => sp.encodeIds(text),
    decodeIds: (ids) => sp.decodeIds(Int32Array.from(ids)) as string,
  };
}
