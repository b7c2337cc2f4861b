/**
 * SentencePiece's wasm build, by full specifier (see `src/deps.ts`); imported on demand by
 * `Tokenizer.load`.
 * @module
 */

export { SentencePieceProcessor } from "npm:@sctg/sentencepiece-js@1.3.3";
