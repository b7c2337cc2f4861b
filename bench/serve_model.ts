/**
 * Model directories for the serving benchmark: a released shape (config.json, random bf16 weights
 * streamed to `model.safetensors`, and a SentencePiece tokenizer with the shape's full vocabulary),
 * so the real server can load it like any downloaded model.
 *
 * The tokenizer is the default model's (real English pieces, so English words encode to several
 * pieces each) extended with filler pieces up to the vocabulary size. The fillers are pairs of CJK
 * ideographs: no English text can merge into them, so the encoding of English is the default
 * model's, while a random model samples mostly fillers, each decoding to visible text.
 * @module
 */

import { randomSource, shapeConfig } from "../src/model/random_weights.ts";
import type { TensorSource } from "../src/model/weights/source.ts";
import { parseModelProto } from "../src/tokenizer/model_proto.ts";

/** The default model shipped in the repository. */
export const DEFAULT_MODEL_DIR: string =
  new URL("../models/tnl-shakespeare-6m/", import.meta.url).pathname;

function varint(v: number): number[] {
  const out: number[] = [];
  do {
    let b = v % 128;
    v = Math.floor(v / 128);
    if (v > 0) b |= 0x80;
    out.push(b);
  } while (v > 0);
  return out;
}

/** One `ModelProto.pieces` field (piece text, score, NORMAL type) as protobuf bytes. */
function pieceField(piece: string, score: number): number[] {
  const text = new TextEncoder().encode(piece);
  const f = new Uint8Array(4);
  new DataView(f.buffer).setFloat32(0, score, true);
  const body = [0x0a, ...varint(text.length), ...text, 0x15, ...f, 0x18, 1];
  return [0x0a, ...varint(body.length), ...body];
}

/** The text of filler piece `i`: two CJK ideographs, distinct for i < 20,992². */
export function fillerPiece(i: number): string {
  const n = 0x9fff - 0x4e00 + 1;
  return String.fromCodePoint(0x4e00 + (i % n), 0x4e00 + Math.floor(i / n));
}

/**
 * A SentencePiece model of `vocabSize` pieces: `base` (a model's bytes) with NORMAL filler pieces
 * appended (protobuf concatenates repeated fields, so appending keeps the base as it is), scored
 * below every base piece so they never win a merge.
 */
export function extendTokenizer(base: Uint8Array, vocabSize: number): Uint8Array {
  const proto = parseModelProto(base);
  const have = proto.pieces.length;
  if (vocabSize < have) {
    throw new Error(`vocabulary ${vocabSize} is smaller than the base tokenizer's ${have} pieces`);
  }
  const score = Math.min(0, ...proto.pieces.map((p) => p.score)) - 1;
  const extra: number[] = [];
  for (let i = 0; i < vocabSize - have; i++) {
    for (const b of pieceField(fillerPiece(i), score)) extra.push(b);
  }
  const out = new Uint8Array(base.length + extra.length);
  out.set(base);
  out.set(extra, base.length);
  return out;
}

/**
 * Write `source` as one safetensors file, tensor by tensor (names sorted, 8-byte aligned header),
 * so only one tensor is in memory at a time.
 */
export async function writeSafetensors(path: string, source: TensorSource): Promise<number> {
  const infos = [...source.tensors.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
  const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
  let offset = 0;
  for (const t of infos) {
    header[t.name] = {
      dtype: t.dtype,
      shape: t.shape,
      data_offsets: [offset, offset + t.byteLength],
    };
    offset += t.byteLength;
  }
  let json = JSON.stringify(header);
  while ((8 + json.length) % 8 !== 0) json += " ";
  const head = new Uint8Array(8 + json.length);
  new DataView(head.buffer).setBigUint64(0, BigInt(json.length), true);
  head.set(new TextEncoder().encode(json), 8);
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    await writeAll(file, head);
    for (const t of infos) {
      const data = await source.read(t.name);
      if (data.byteLength !== t.byteLength) {
        throw new Error(`${t.name}: read ${data.byteLength} bytes, expected ${t.byteLength}`);
      }
      await writeAll(file, data);
    }
  } finally {
    file.close();
  }
  return head.length + offset;
}

async function writeAll(file: Deno.FsFile, data: Uint8Array): Promise<void> {
  for (let at = 0; at < data.length;) at += await file.write(data.subarray(at));
}

/** What `writeShapeModel` wrote. */
export interface WrittenModel {
  /** The model directory. */
  dir: string;
  /** Bytes of `model.safetensors`. */
  weightBytes: number;
  /** Pieces in `tokenizer.model`. */
  vocabSize: number;
  /** Milliseconds spent writing. */
  ms: number;
}

/**
 * Write a model directory for a released shape (385M, 1B, 7B; case-insensitive, or a custom one): config.json,
 * random bf16 weights in the fast mode of `randomSource` (seed 1, the weights `bench:gpu` uses),
 * and the extended tokenizer. `overrides` change config fields (tests use a tiny shape).
 */
export async function writeShapeModel(
  dir: string,
  shape: string | Record<string, unknown>,
  overrides: Record<string, unknown> = {},
): Promise<WrittenModel> {
  const t0 = performance.now();
  const config = shapeConfig(typeof shape === "string" ? shape.toUpperCase() : shape, overrides);
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(
    `${dir}/config.json`,
    JSON.stringify(
      {
        ...config.raw,
        pad_token_id: config.padTokenId,
        bos_token_id: config.bosTokenId,
        eos_token_id: config.eosTokenId,
        model_type: "transnormer",
        torch_dtype: "bfloat16",
      },
      null,
      1,
    ),
  );
  const base = await Deno.readFile(`${DEFAULT_MODEL_DIR}tokenizer.model`);
  await Deno.writeFile(`${dir}/tokenizer.model`, extendTokenizer(base, config.vocabSize));
  const weightBytes = await writeSafetensors(
    `${dir}/model.safetensors`,
    randomSource(config, { dtype: "BF16", fast: true }),
  );
  return { dir, weightBytes, vocabSize: config.vocabSize, ms: performance.now() - t0 };
}
