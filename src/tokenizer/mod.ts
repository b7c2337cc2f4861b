/**
 * The tokenizer room: SentencePiece models (`tokenizer.model`), encoding through SentencePiece's
 * WebAssembly build, decoding and streaming decoding in TypeScript.
 *
 * ```ts ignore
 * const tok = await loadTokenizer("models/tnl-shakespeare-6m/tokenizer.model");
 * const ids = tok.encode("ROMEO:", { bos: true });
 * const text = tok.decode(ids);
 * ```
 *
 * @example Encode and decode with the default model's tokenizer
 * ```ts
 * import { loadTokenizer } from "./mod.ts";
 *
 * const tok = await loadTokenizer("models/tnl-shakespeare-6m/tokenizer.model");
 * const ids = tok.encode("ROMEO: But soft!");
 * console.log(ids.length, tok.decode(ids));
 * ```
 * @module
 */

import { Tokenizer } from "./tokenizer.ts";

export { Tokenizer, type TokenizerEncodeOptions } from "./tokenizer.ts";
export { StreamDecoder, type StreamDecoderOptions } from "./stream.ts";
export {
  type ModelProto,
  ModelType,
  type NormalizerSpec,
  parseModelProto,
  PieceType,
  type SentencePieceEntry,
  type TrainerSpec,
  validateModelProto,
} from "./model_proto.ts";

/**
 * Load a SentencePiece tokenizer from a `tokenizer.model` path or its bytes; the same as
 * {@linkcode Tokenizer.load}. Throws `TokenizerError` when it cannot be read or is not valid.
 */
export function loadTokenizer(path: string | Uint8Array): Promise<Tokenizer> {
  return Tokenizer.load(path);
}
