import assert from "node:assert/strict";
import { InputError, TokenizerError } from "../../src/errors.ts";
import { PieceType } from "../../src/tokenizer/model_proto.ts";
import { loadTokenizer, StreamDecoder, Tokenizer } from "../../src/tokenizer/mod.ts";
import { fixtureTest } from "../fixtures.ts";
import {
  MODEL_PATH,
  modelBytes,
  stringField,
  withNormalizer,
  withPieces,
  withTrainerFields,
} from "./model_bytes.ts";
import { rng } from "../support/random.ts";
import { type Reference, reference } from "./reference.ts";

const BYTES = modelBytes();
const tok = await Tokenizer.load(MODEL_PATH);
const ref = await reference(BYTES);

interface Case {
  text: string;
  ids: number[];
  pieces: string[];
  decoded: string;
}

function streamDecode(t: Tokenizer, ids: ArrayLike<number>): string {
  const d = new StreamDecoder(t);
  let out = "";
  for (let i = 0; i < ids.length; i++) out += d.push(ids[i]);
  return out + d.flush();
}

/** Random ids weighted toward what makes decoding interesting. */
function randomIds(t: Tokenizer, r: () => number, maxLen: number): number[] {
  const n = Math.floor(r() * (maxLen + 1));
  const spacey: number[] = [];
  for (let id = 0; id < t.vocabSize; id++) {
    if (t.model.pieces[id].piece.startsWith("\u2581")) spacey.push(id);
  }
  const ids: number[] = [];
  while (ids.length < n) {
    const u = r();
    if (u < 0.1) ids.push(Math.floor(r() * 3)); // unk, bos, eos
    else if (u < 0.25) ids.push(spacey[Math.floor(r() * spacey.length)]);
    else if (u < 0.45) ids.push(3 + Math.floor(r() * 256)); // any byte
    else if (u < 0.6) {
      // the bytes of a valid character, possibly cut short
      const cp = r() < 0.5 ? 0x80 + Math.floor(r() * 0x780) : 0x800 + Math.floor(r() * 0x10f800);
      const ch = cp >= 0xd800 && cp <= 0xdfff ? "\u00e9" : String.fromCodePoint(cp);
      const bytes = new TextEncoder().encode(ch);
      const keep = r() < 0.8 ? bytes.length : Math.floor(r() * bytes.length);
      for (let i = 0; i < keep; i++) ids.push(3 + bytes[i]);
    } else ids.push(Math.floor(r() * t.vocabSize));
  }
  return ids;
}

fixtureTest("tokenizer: all fixture cases (ids, pieces, decoded, stream)", async (dir) => {
  const { cases } = JSON.parse(await Deno.readTextFile(`${dir}tokenizer/cases.json`)) as {
    cases: Case[];
  };
  assert.equal(cases.length, 20);
  for (const c of cases) {
    const ids = tok.encode(c.text);
    assert.ok(ids instanceof Int32Array);
    assert.deepEqual(Array.from(ids), c.ids, JSON.stringify(c.text));
    assert.deepEqual(Array.from(ids, (id) => tok.idToPiece(id)), c.pieces);
    assert.equal(tok.decode(ids), c.decoded);
    assert.equal(tok.decode(c.ids), c.decoded);
    assert.equal(streamDecode(tok, c.ids), c.decoded);
    assert.equal(ref.decodeIds(c.ids), c.decoded);
  }
});

Deno.test("tokenizer: special ids, vocab, fingerprint", async () => {
  assert.equal(tok.vocabSize, 4096);
  assert.deepEqual([tok.unkId, tok.bosId, tok.eosId, tok.padId], [0, 1, 2, -1]);
  assert.equal(tok.idToPiece(0), "<unk>");
  assert.equal(tok.idToPiece(1), "<s>");
  assert.equal(tok.idToPiece(2), "</s>");
  assert.equal(tok.pieceToId("</s>"), 2);
  assert.equal(tok.pieceToId("\u2581light"), 1253);
  assert.equal(tok.pieceToId("no such piece"), tok.unkId);
  assert.equal(tok.pieceType(0), PieceType.UNKNOWN);
  assert.equal(tok.pieceType(1), PieceType.CONTROL);
  assert.equal(tok.pieceType(3), PieceType.BYTE);
  assert.equal(tok.pieceType(1253), PieceType.NORMAL);
  assert.deepEqual([0, 1, 2, 3, 258, 259, 4095].map((id) => tok.isSpecial(id)), [
    true,
    true,
    true,
    false,
    false,
    false,
    false,
  ]);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", BYTES));
  const hex = Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
  assert.equal(tok.fingerprint, hex);
  assert.match(tok.fingerprint, /^[0-9a-f]{64}$/);
  const fromBytes = await loadTokenizer(BYTES);
  assert.equal(fromBytes.fingerprint, tok.fingerprint);
  assert.equal(fromBytes.source, "tokenizer model bytes");
  assert.equal(tok.source, MODEL_PATH);
  for (let id = 0; id < tok.vocabSize; id++) {
    assert.equal(tok.pieceToId(tok.idToPiece(id)), id);
  }
});

Deno.test("tokenizer: encode adds BOS/EOS only when asked", () => {
  assert.deepEqual(Array.from(tok.encode("What")), [462]);
  assert.deepEqual(Array.from(tok.encode("What", { bos: true })), [1, 462]);
  assert.deepEqual(Array.from(tok.encode("What", { eos: true })), [462, 2]);
  assert.deepEqual(Array.from(tok.encode("What", { bos: true, eos: true })), [1, 462, 2]);
  assert.deepEqual(Array.from(tok.encode("", { bos: true, eos: true })), [1, 2]);
  assert.deepEqual(Array.from(tok.encode("")), []);
  // the text "<s>" is not the control piece
  assert.ok(!Array.from(tok.encode("<s></s>")).some((id) => id === 1 || id === 2));
  assert.equal(tok.decode(tok.encode("x", { bos: true, eos: true })), "x");
});

Deno.test("tokenizer: out-of-range ids give InputError", () => {
  for (const bad of [-1, 4096, 1e9, 1.5, NaN, Infinity]) {
    assert.throws(() => tok.decode([5, bad]), InputError, String(bad));
    assert.throws(() => tok.idToPiece(bad), InputError);
    assert.throws(() => tok.isSpecial(bad), InputError);
    assert.throws(() => new StreamDecoder(tok).push(bad), InputError);
  }
  assert.throws(() => tok.decode([4096]), /ids: id 4096 at index 0 is outside the vocabulary/);
});

Deno.test("tokenizer: decode of every single id equals SentencePiece", () => {
  for (let id = 0; id < tok.vocabSize; id++) {
    assert.equal(tok.decode([id]), ref.decodeIds([id]), `id ${id}`);
    assert.equal(tok.decode([id, id]), ref.decodeIds([id, id]), `id ${id} twice`);
    assert.equal(tok.decode([1253, id, 13]), ref.decodeIds([1253, id, 13]), `id ${id} inside`);
  }
});

Deno.test("tokenizer: decode of every type equals SentencePiece", () => {
  const cases = [
    [0], // unknown: " ⁇ "
    [1, 2], // control: nothing
    [1, 462, 2], // control around text
    [3], // <0x00>
    [3 + 0xe6, 3 + 0x9d, 3 + 0xb1], // 東
    [3 + 0xe6, 3 + 0x9d], // cut short
    [3 + 0xe6, 1253, 3 + 0x9d, 3 + 0xb1], // interrupted
    [3 + 0xf0, 3 + 0x9f, 3 + 0x99, 3 + 0x82], // 🙂
    [3 + 0xc0, 3 + 0x80], // overlong
    [3 + 0xed, 3 + 0xa0, 3 + 0x80], // a surrogate
    [3 + 0xf4, 3 + 0x90, 3 + 0x80, 3 + 0x80], // above U+10FFFF
    [3 + 0xef, 3 + 0xbf, 3 + 0xbd], // U+FFFD itself
    [3 + 0xff, 3 + 0x80, 3 + 0x41],
    [4032], // ▁
    [4032, 4032, 1253],
    [0, 1253],
  ];
  for (const ids of cases) assert.equal(tok.decode(ids), ref.decodeIds(ids), JSON.stringify(ids));
});

Deno.test("tokenizer: decode of random id sequences equals SentencePiece", () => {
  const r = rng(11);
  for (let k = 0; k < 3000; k++) {
    const ids = randomIds(tok, r, 12);
    assert.equal(tok.decode(ids), ref.decodeIds(ids), JSON.stringify(ids));
  }
  for (let k = 0; k < 50; k++) {
    const ids = randomIds(tok, r, 2000);
    assert.equal(tok.decode(ids), ref.decodeIds(ids));
  }
  assert.equal(tok.decode(new Int32Array([462, 1253])), "What light");
});

/** The model's variants whose decoding differs: leading-space rules, unk surface, piece types. */
async function variants(): Promise<[string, Tokenizer, Reference][]> {
  const named: [string, Uint8Array][] = [
    ["add_dummy_prefix", withNormalizer(BYTES, { addDummyPrefix: true })],
    ["remove_extra_whitespaces", withNormalizer(BYTES, { removeExtraWhitespaces: true })],
    [
      "both, '▁▁' pieces, empty unk surface",
      withTrainerFields(
        withPieces(
          withNormalizer(BYTES, { addDummyPrefix: true, removeExtraWhitespaces: true }),
          (id) => (id === 1091 ? { piece: "\u2581\u2581" } : null),
        ),
        stringField(44, ""),
      ),
    ],
    [
      "dummy prefix, '▁▁' pieces, empty unk surface",
      withTrainerFields(
        withPieces(
          withNormalizer(BYTES, { addDummyPrefix: true }),
          (
            id,
          ) => (id === 1091
            ? { piece: "\u2581\u2581" }
            : id === 1092
            ? { piece: "\u2581\u2581x" }
            : null),
        ),
        stringField(44, ""),
      ),
    ],
    ["unk surface", withTrainerFields(BYTES, stringField(44, "\u2581<?>"))],
    [
      "user-defined, unused and extra control pieces",
      withPieces(
        withNormalizer(BYTES, { addDummyPrefix: true }),
        (id) =>
          id === 4032
            ? { type: PieceType.USER_DEFINED }
            : id > 300 && id % 7 === 5
            ? { type: PieceType.USER_DEFINED }
            : id > 300 && id % 7 === 6
            ? { type: PieceType.UNUSED }
            : id > 300 && id % 11 === 0
            ? { type: PieceType.CONTROL }
            : null,
      ),
    ],
  ];
  return await Promise.all(
    named.map(async ([name, bytes]) =>
      [name, await Tokenizer.load(bytes), await reference(bytes)] as [string, Tokenizer, Reference]
    ),
  );
}

Deno.test("tokenizer: decode and stream equal SentencePiece on model variants", async () => {
  const r = rng(12);
  const fixed = [
    [4032, 1253],
    [4032, 4032, 1253],
    [1091, 1253],
    [1091, 1092],
    [1092],
    [0, 1253],
    [0, 4032, 1253],
    [1, 4032, 1253],
    [4032, 0, 1253],
    [3 + 0x41, 1253],
    [3 + 0xe6, 1253],
    [4032],
    [1253, 1253],
  ];
  for (const [name, t, sp] of await variants()) {
    for (const ids of fixed) {
      const want = sp.decodeIds(ids);
      assert.equal(t.decode(ids), want, `${name}: ${JSON.stringify(ids)}`);
      assert.equal(streamDecode(t, ids), want, `${name} stream: ${JSON.stringify(ids)}`);
    }
    for (let k = 0; k < 1500; k++) {
      const ids = randomIds(t, r, 10);
      const want = sp.decodeIds(ids);
      assert.equal(t.decode(ids), want, `${name}: ${JSON.stringify(ids)}`);
      assert.equal(streamDecode(t, ids), want, `${name} stream: ${JSON.stringify(ids)}`);
    }
  }
});

/** Random text with what tokenizers find hard: spaces, newlines, digits, non-ASCII, emoji. */
function randomText(r: () => number, n: number): string {
  const alphabet = [
    ..."abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    ..."     \n\t.,;:!?'-0123456789",
    "é",
    "ß",
    "東",
    "京",
    "🙂",
    "\u00a0",
    "\u2581",
    "\0",
    "<s>",
  ];
  const words = ["ROMEO", "the ", " and ", "thou ", "light", "window", "\n\n", "  "];
  let s = "";
  while (s.length < n) {
    s += r() < 0.3
      ? words[Math.floor(r() * words.length)]
      : alphabet[Math.floor(r() * alphabet.length)];
  }
  return s;
}

/** What decoding gives back for a text: a literal `▁` in the text comes back as a space. */
function asDecoded(text: string): string {
  return text.replaceAll("\u2581", " ");
}

Deno.test("tokenizer: encode equals SentencePiece on random text", () => {
  const r = rng(13);
  for (let k = 0; k < 400; k++) {
    const text = randomText(r, Math.floor(r() * 200));
    assert.deepEqual(Array.from(tok.encode(text)), ref.encodeIds(text), JSON.stringify(text));
    assert.equal(tok.decode(tok.encode(text)), asDecoded(text));
  }
});

Deno.test("tokenizer: any JS string encodes (lone surrogates, NUL, controls)", () => {
  const lone = [
    "\ud800",
    "a\ud800b",
    "\udc00",
    "x\udfff",
    "\ud83d",
    "\ud83d\ud83d\ude42",
    "\ude42\ud83d",
  ];
  for (const s of lone) {
    const ids = tok.encode(s);
    assert.equal(tok.decode(ids), s.toWellFormed(), JSON.stringify(s));
    assert.deepEqual(Array.from(ids), ref.encodeIds(s.toWellFormed()));
  }
  const nul = tok.encode("a\0b\0");
  assert.equal(tok.decode(nul), "a\0b\0");
  let all = "";
  for (let c = 0; c < 0x800; c++) all += String.fromCharCode(c);
  assert.equal(tok.decode(tok.encode(all)), all);
  assert.deepEqual(Array.from(tok.encode(all)), ref.encodeIds(all));
  assert.throws(() => tok.encode(42 as unknown as string), InputError);
});

Deno.test("tokenizer: long texts are cut without changing the ids", () => {
  const r = rng(14);
  for (const n of [40_000, 100_000, 300_000]) {
    const text = randomText(r, n);
    const ids = tok.encode(text);
    assert.deepEqual(Array.from(ids), ref.encodeIds(text), `length ${n}`);
    assert.equal(tok.decode(ids), asDecoded(text));
  }
  // long runs without a cut point in the vocabulary still encode (cut at the window end)
  const run = "a".repeat(200_000);
  const ids = tok.encode(run);
  assert.equal(tok.decode(ids), run);
  const emoji = "🙂".repeat(50_000);
  assert.equal(tok.decode(tok.encode(emoji)), emoji);
});

Deno.test("tokenizer: long texts with a dummy prefix are cut without changing the ids", async () => {
  const bytes = withNormalizer(BYTES, { addDummyPrefix: true });
  const t = await Tokenizer.load(bytes);
  const sp = await reference(bytes);
  const r = rng(15);
  const text = randomText(r, 120_000);
  assert.deepEqual(Array.from(t.encode(text)), sp.encodeIds(text));
});

Deno.test("tokenizer: a very long text encodes (4 MB)", () => {
  const line = "ROMEO: What light through yonder window breaks? It is the east. 東京 🙂\n";
  const text = line.repeat(Math.ceil(4_000_000 / line.length));
  const ids = tok.encode(text);
  assert.ok(ids.length > 400_000);
  assert.deepEqual(Array.from(ids.subarray(0, 30)), ref.encodeIds(line.repeat(2)).slice(0, 30));
  assert.equal(tok.decode(ids.subarray(0, ids.length)), text);
});

Deno.test("tokenizer: load errors are TokenizerError naming the source", async () => {
  const missing = "/nonexistent/dir/tokenizer.model";
  await assert.rejects(() => Tokenizer.load(missing), (e: unknown) => {
    assert.ok(e instanceof TokenizerError);
    assert.ok(e.message.startsWith(`${missing}: cannot read`), e.message);
    return true;
  });
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(() => Tokenizer.load(dir), TokenizerError);
    const garbage = `${dir}/garbage.model`;
    await Deno.writeTextFile(garbage, "this is not a model at all");
    await assert.rejects(() => Tokenizer.load(garbage), (e: unknown) => {
      assert.ok(e instanceof TokenizerError);
      assert.ok(e.message.startsWith(`${garbage}: not a valid SentencePiece model`), e.message);
      return true;
    });
    const config = `${dir}/config.json`;
    await Deno.writeTextFile(config, JSON.stringify({ model_type: "transnormer" }));
    await assert.rejects(() => Tokenizer.load(config), TokenizerError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  await assert.rejects(() => Tokenizer.load(new Uint8Array([1, 2, 3])), (e: unknown) => {
    assert.ok(e instanceof TokenizerError);
    assert.ok(e.message.startsWith("tokenizer model bytes: "), e.message);
    return true;
  });
  await assert.rejects(() => Tokenizer.load(42 as unknown as string), TokenizerError);
  const safetensors = new URL("../../models/tnl-shakespeare-6m/model.safetensors", import.meta.url);
  await assert.rejects(() => Tokenizer.load(safetensors.pathname), TokenizerError);
});
