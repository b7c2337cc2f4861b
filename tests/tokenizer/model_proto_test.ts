import assert from "node:assert/strict";
import { TokenizerError } from "../../src/errors.ts";
import {
  ModelType,
  parseModelProto,
  pieceToByte,
  PieceType,
  validateModelProto,
} from "../../src/tokenizer/model_proto.ts";
import { Tokenizer } from "../../src/tokenizer/tokenizer.ts";
import {
  bytesField,
  concat,
  modelBytes,
  pieceField,
  splitFields,
  stringField,
  tag,
  varint,
  varintField,
  withPieces,
  withTrainerFields,
} from "./model_bytes.ts";
import { rng } from "../support/random.ts";

const BYTES = modelBytes();

/** Parse and validate; what Tokenizer.load does before SentencePiece sees the bytes. */
function check(bytes: Uint8Array): void {
  validateModelProto(parseModelProto(bytes, "test.model"), "test.model");
}

function assertTokenizerError(fn: () => unknown, pattern?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof TokenizerError, `expected TokenizerError, got ${e}`);
    assert.equal(e.code, "tokenizer_invalid");
    assert.ok(e.message.startsWith("test.model: "), e.message);
    if (pattern) assert.match(e.message, pattern);
    return true;
  });
}

Deno.test("model_proto: reads the demo tokenizer's pieces and specs", () => {
  const p = parseModelProto(BYTES);
  validateModelProto(p);
  assert.equal(p.pieces.length, 4096);
  assert.deepEqual(p.pieces[0], { piece: "<unk>", score: 0, type: PieceType.UNKNOWN });
  assert.deepEqual(p.pieces[1], { piece: "<s>", score: 0, type: PieceType.CONTROL });
  assert.deepEqual(p.pieces[2], { piece: "</s>", score: 0, type: PieceType.CONTROL });
  assert.deepEqual(p.pieces[3], { piece: "<0x00>", score: 0, type: PieceType.BYTE });
  assert.deepEqual(p.pieces[258], { piece: "<0xFF>", score: 0, type: PieceType.BYTE });
  assert.equal(p.pieces[259].piece, "\u2581t");
  assert.equal(p.pieces[260].score, -1);
  const ts = p.trainerSpec;
  assert.equal(ts.modelType, ModelType.BPE);
  assert.equal(ts.vocabSize, 4096);
  assert.equal(ts.byteFallback, true);
  assert.equal(ts.splitDigits, true);
  assert.deepEqual([ts.unkId, ts.bosId, ts.eosId, ts.padId], [0, 1, 2, -1]);
  assert.equal(ts.unkSurface, " \u2047 ");
  assert.deepEqual([ts.unkPiece, ts.bosPiece, ts.eosPiece, ts.padPiece], [
    "<unk>",
    "<s>",
    "</s>",
    "<pad>",
  ]);
  assert.equal(p.normalizerSpec.name, "identity");
  assert.equal(p.normalizerSpec.precompiledCharsmap.length, 0);
  assert.equal(p.normalizerSpec.addDummyPrefix, false);
  assert.equal(p.normalizerSpec.removeExtraWhitespaces, false);
  assert.equal(p.normalizerSpec.escapeWhitespaces, true);
  assert.equal(p.denormalizerSpec, null);
});

Deno.test("model_proto: defaults apply when specs are absent; later fields merge", () => {
  const minimal = concat(pieceField("<unk>", 0, 2), pieceField("a", -1, 1));
  const p = parseModelProto(minimal);
  validateModelProto(p);
  assert.equal(p.trainerSpec.modelType, ModelType.UNIGRAM);
  assert.equal(p.trainerSpec.padId, -1);
  assert.equal(p.trainerSpec.unkSurface, " \u2047 ");
  assert.equal(p.normalizerSpec.addDummyPrefix, true);
  assert.equal(p.normalizerSpec.removeExtraWhitespaces, true);
  const merged = parseModelProto(
    withTrainerFields(BYTES, varintField(43, -1), varintField(43, 7), stringField(44, "?")),
  );
  assert.equal(merged.trainerSpec.padId, 7);
  assert.equal(merged.trainerSpec.unkSurface, "?");
  assert.equal(merged.trainerSpec.byteFallback, true); // kept from the first trainer_spec
  // a negative int32 in its 10-byte form
  assert.equal(
    parseModelProto(withTrainerFields(BYTES, varintField(41, -1))).trainerSpec.bosId,
    -1,
  );
});

Deno.test("model_proto: unknown fields of every wire type are skipped", () => {
  const extra = concat(
    varintField(99, 12345678901),
    [...tag(98, 1), 1, 2, 3, 4, 5, 6, 7, 8],
    bytesField(97, [1, 2, 3]),
    [...tag(96, 5), 1, 2, 3, 4],
  );
  const p = parseModelProto(concat(extra, BYTES, extra));
  assert.equal(p.pieces.length, 4096);
  const inSpec = parseModelProto(withTrainerFields(BYTES, Array.from(extra)));
  assert.equal(inSpec.trainerSpec.vocabSize, 4096);
});

Deno.test("model_proto: pieceToByte accepts exactly <0xNN> with upper-case hex", () => {
  assert.equal(pieceToByte("<0x00>"), 0);
  assert.equal(pieceToByte("<0xFF>"), 255);
  assert.equal(pieceToByte("<0x0A>"), 10);
  for (const bad of ["<0xff>", "<0x0>", "<0x100>", "0x41", "<0x4G>", "<0X41>", "<0x41", "a"]) {
    assert.equal(pieceToByte(bad), -1, bad);
  }
});

Deno.test("model_proto: structural errors are TokenizerError", () => {
  const cases: [string, Uint8Array, RegExp][] = [
    ["empty", new Uint8Array(0), /piece table is empty/],
    ["wire type 3 (group)", concat(BYTES, tag(50, 3)), /unsupported wire type 3/],
    ["wire type 7", concat(BYTES, tag(50, 7)), /unsupported wire type 7/],
    ["field number 0", concat(BYTES, [0x00, 0x01]), /field number 0/],
    ["varint of 11 bytes", concat(BYTES, tag(50, 0), new Array(10).fill(0xff), [1]), /longer/],
    ["truncated varint", concat(BYTES, tag(50, 0), [0x80]), /truncated varint/],
    ["length past the end", concat(BYTES, tag(50, 2), varint(1000)), /runs past the end/],
    ["huge length", concat(BYTES, tag(50, 2), varint(2n ** 62n)), /runs past the end/],
    ["truncated fixed64", concat(BYTES, tag(50, 1), [1, 2]), /truncated fixed64/],
    ["truncated fixed32", concat(BYTES, tag(50, 5), [1, 2]), /truncated fixed32/],
    ["pieces as varint", concat(BYTES, varintField(1, 5)), /wire type 0, expected 2/],
    [
      "piece type 9",
      concat(BYTES, bytesField(1, [...stringField(1, "zz"), ...varintField(3, 9)])),
      /type 9/,
    ],
    [
      "piece type 0",
      concat(BYTES, bytesField(1, [...stringField(1, "zz"), ...varintField(3, 0)])),
      /type 0/,
    ],
    ["bad UTF-8 in a piece", concat(BYTES, bytesField(1, bytesField(1, [0xc3, 0x28]))), /UTF-8/],
    [
      "sub-message overruns its parent",
      concat(bytesField(1, [...tag(1, 2), ...varint(50), 0x41])),
      /runs past the end/,
    ],
  ];
  for (const [name, bytes, pattern] of cases) {
    assertTokenizerError(() => check(bytes), pattern);
    assert.ok(name);
  }
});

Deno.test("model_proto: content errors are TokenizerError", () => {
  const cases: [Uint8Array, RegExp][] = [
    [withPieces(BYTES, (id) => (id === 0 ? { type: PieceType.NORMAL } : null)), /no unknown piece/],
    [
      withPieces(BYTES, (id) => (id === 5000 || id === 7 ? { type: 1 } : null)),
      /byte piece <0x04>/,
    ],
    [withPieces(BYTES, (id) => (id === 1 ? { type: PieceType.UNKNOWN } : null)), /two unknown/],
    [withPieces(BYTES, (id) => (id === 300 ? { piece: "he" } : null)), /defined twice/],
    [withPieces(BYTES, (id) => (id === 300 ? { piece: "" } : null)), /piece 300 is empty/],
    [withPieces(BYTES, (id) => (id === 300 ? { type: PieceType.BYTE } : null)), /not of the form/],
    [withTrainerFields(BYTES, varintField(35, false)), /byte_fallback is off/],
    [withTrainerFields(BYTES, varintField(3, 9)), /unknown model type 9/],
    [withTrainerFields(BYTES, varintField(3, 0)), /unknown model type 0/],
    [concat(BYTES, bytesField(5, bytesField(2, [1, 2, 3, 4]))), /denormalization/],
  ];
  for (const [bytes, pattern] of cases) assertTokenizerError(() => check(bytes), pattern);
});

Deno.test("model_proto: every truncation is rejected or parses, never anything else", () => {
  const lengths = new Set<number>();
  for (let n = 0; n < 300; n++) lengths.add(n);
  for (let n = BYTES.length - 300; n < BYTES.length; n++) lengths.add(n);
  const r = rng(1);
  for (let k = 0; k < 500; k++) lengths.add(Math.floor(r() * BYTES.length));
  let rejected = 0;
  for (const n of lengths) {
    try {
      check(BYTES.subarray(0, n));
    } catch (e) {
      assert.ok(e instanceof TokenizerError, `length ${n}: ${e}`);
      rejected++;
    }
  }
  // A cut inside the trainer/normalizer specs (the end of the file) must be caught; a cut between
  // two pieces still leaves a well-formed message, and then lacks byte pieces or the tail specs.
  assert.ok(rejected > lengths.size * 0.9, `${rejected} of ${lengths.size}`);
});

Deno.test("model_proto: random garbage is TokenizerError", () => {
  const r = rng(2);
  for (let k = 0; k < 2000; k++) {
    const n = Math.floor(r() * 400);
    const bytes = new Uint8Array(n);
    for (let i = 0; i < n; i++) bytes[i] = Math.floor(r() * 256);
    try {
      check(bytes);
      assert.fail(`garbage ${k} was accepted`);
    } catch (e) {
      assert.ok(e instanceof TokenizerError, `garbage ${k}: ${e}`);
    }
  }
});

Deno.test("model_proto: mutated models either parse or give TokenizerError", () => {
  const r = rng(3);
  let rejected = 0;
  const N = 800;
  for (let k = 0; k < N; k++) {
    const bytes = BYTES.slice();
    const flips = 1 + Math.floor(r() * 4);
    for (let f = 0; f < flips; f++) {
      bytes[Math.floor(r() * bytes.length)] = Math.floor(r() * 256);
    }
    try {
      check(bytes);
    } catch (e) {
      assert.ok(e instanceof TokenizerError, `mutation ${k}: ${e}`);
      rejected++;
    }
  }
  assert.ok(rejected > 0);
});

Deno.test("model_proto: mutations of tags and lengths are rejected", () => {
  // Every top-level field of the model: corrupt its tag's wire type, and its length prefix.
  const fields = splitFields(BYTES);
  let at = 0;
  let lengthChecks = 0;
  const r = rng(4);
  for (let i = 0; i < fields.length; i++) {
    const f = fields[i];
    if (i % 97 === 0 || i >= fields.length - 3) {
      const badWire = BYTES.slice();
      badWire[at] = (badWire[at] & ~7) | (r() < 0.5 ? 3 : 6);
      assertTokenizerError(() => check(badWire), /wire type/);
      // the length prefix at its widest value of the same width: past the end of the file?
      let w = 1;
      while (BYTES[at + w] & 0x80) w++;
      const badLen = BYTES.slice();
      for (let j = 1; j < w; j++) badLen[at + j] = 0xff;
      badLen[at + w] = 0x7f;
      if (2 ** (7 * w) - 1 > BYTES.length - at - 1 - w) {
        assertTokenizerError(() => check(badLen), /runs past the end/);
        lengthChecks++;
      }
    }
    at += f.raw.length;
  }
  assert.ok(lengthChecks >= 2, `${lengthChecks}`);
});

Deno.test("Tokenizer.load: mutated models load or throw TokenizerError, and then work", async () => {
  const r = rng(5);
  let loaded = 0;
  for (let k = 0; k < 60; k++) {
    const bytes = BYTES.slice();
    // mostly inside the piece texts and the specs at the end
    const pos = r() < 0.5
      ? BYTES.length - 1 - Math.floor(r() * 200)
      : Math.floor(r() * BYTES.length);
    bytes[pos] = Math.floor(r() * 256);
    let tok: Tokenizer;
    try {
      tok = await Tokenizer.load(bytes);
    } catch (e) {
      assert.ok(e instanceof TokenizerError, `mutation ${k}: ${e}`);
      continue;
    }
    loaded++;
    const ids = tok.encode("ROMEO: What light through yonder window breaks? 東京 🙂");
    assert.equal(typeof tok.decode(ids), "string");
  }
  assert.ok(loaded > 0);
});
