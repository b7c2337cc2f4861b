import assert from "node:assert/strict";
import { StreamDecoder, Tokenizer } from "../../src/tokenizer/mod.ts";
import { fixtureTest } from "../fixtures.ts";
import { MODEL_PATH, modelBytes, withNormalizer } from "./model_bytes.ts";
import { rng } from "../support/random.ts";

const tok = await Tokenizer.load(MODEL_PATH);
const B = (byte: number): number => 3 + byte; // the id of byte piece <0xNN> in the demo model

/** Push ids one by one; returns every push's output and the flush. */
function pushes(t: Tokenizer, ids: ArrayLike<number>, d = new StreamDecoder(t)): string[] {
  const out: string[] = [];
  for (let i = 0; i < ids.length; i++) out.push(d.push(ids[i]));
  out.push(d.flush());
  return out;
}

/** Random ids, heavy on byte pieces (valid characters, cut ones, stray bytes) and `▁` pieces. */
function randomIds(t: Tokenizer, r: () => number, maxLen: number): number[] {
  const n = Math.floor(r() * (maxLen + 1));
  const ids: number[] = [];
  while (ids.length < n) {
    const u = r();
    if (u < 0.1) ids.push(Math.floor(r() * 3));
    else if (u < 0.2) ids.push(4032); // ▁
    else if (u < 0.35) ids.push(B(Math.floor(r() * 256)));
    else if (u < 0.6) {
      const cp = Math.floor(r() * 0x110000);
      const ch = cp >= 0xd800 && cp <= 0xdfff ? "\u6771" : String.fromCodePoint(cp);
      const bytes = new TextEncoder().encode(ch);
      const keep = r() < 0.85 ? bytes.length : Math.floor(r() * bytes.length);
      for (let i = 0; i < keep; i++) ids.push(B(bytes[i]));
    } else ids.push(Math.floor(r() * t.vocabSize));
  }
  return ids;
}

fixtureTest("stream: every fixture case streams to its decoded text", async (dir) => {
  const { cases } = JSON.parse(await Deno.readTextFile(`${dir}tokenizer/cases.json`)) as {
    cases: { ids: number[]; decoded: string }[];
  };
  for (const c of cases) {
    const parts = pushes(tok, c.ids);
    assert.equal(parts.join(""), c.decoded);
    assert.equal(parts.join(""), tok.decode(c.ids));
    for (const p of parts) assert.ok(p.isWellFormed());
  }
});

Deno.test("stream: multi-byte characters come out whole, when complete", () => {
  // 東 = E6 9D B1, 🙂 = F0 9F 99 82
  assert.deepEqual(pushes(tok, [B(0xe6), B(0x9d), B(0xb1)]), ["", "", "東", ""]);
  assert.deepEqual(pushes(tok, [B(0xf0), B(0x9f), B(0x99), B(0x82), 462]), [
    "",
    "",
    "",
    "🙂",
    "What",
    "",
  ]);
  // the demo text of the fixtures: "naïve"
  assert.deepEqual(pushes(tok, [4040, 4036, B(0xc3), B(0xaf), 4058]), [
    "n",
    "a",
    "",
    "ï",
    tok.decode([4058]),
    "",
  ]);
});

Deno.test("stream: invalid bytes become U+FFFD as soon as they are known to be invalid", () => {
  const d = new StreamDecoder(tok);
  assert.equal(d.push(B(0xe6)), "");
  assert.equal(d.pendingBytes, 1);
  assert.equal(d.push(B(0x41)), "\uFFFDA"); // 'A' cannot continue it
  assert.equal(d.pendingBytes, 0);
  assert.equal(d.push(B(0x80)), "\uFFFD"); // a stray continuation byte
  assert.equal(d.push(B(0xff)), "\uFFFD");
  assert.equal(d.push(B(0xe6)), "");
  assert.equal(d.push(B(0x9d)), "");
  assert.equal(d.push(462), "\uFFFD\uFFFDWhat"); // the run ends cut short: one U+FFFD per byte
  assert.equal(d.push(B(0xf0)), "");
  assert.equal(d.flush(), "\uFFFD");
  assert.equal(d.pendingBytes, 0);
});

Deno.test("stream: flush resets; reset drops pending bytes", () => {
  const d = new StreamDecoder(tok);
  assert.equal(d.push(B(0xe6)), "");
  assert.equal(d.flush(), "\uFFFD");
  assert.equal(d.push(B(0xe6)), "");
  d.reset();
  assert.equal(d.push(B(0x41)), "A");
  assert.equal(d.flush(), "");
});

Deno.test("stream: pushes + flush equal decode on random id sequences", () => {
  const r = rng(21);
  for (let k = 0; k < 4000; k++) {
    const ids = randomIds(tok, r, 16);
    const parts = pushes(tok, ids);
    assert.equal(parts.join(""), tok.decode(ids), JSON.stringify(ids));
    for (const p of parts) assert.ok(p.isWellFormed(), JSON.stringify(ids));
  }
  for (let k = 0; k < 20; k++) {
    const ids = randomIds(tok, r, 5000);
    assert.equal(pushes(tok, ids).join(""), tok.decode(ids));
  }
});

Deno.test("stream: a decoder can be reused after flush and pushAll matches push", () => {
  const r = rng(22);
  const d = new StreamDecoder(tok);
  for (let k = 0; k < 500; k++) {
    const ids = randomIds(tok, r, 12);
    assert.equal(d.pushAll(ids) + d.flush(), tok.decode(ids));
  }
});

Deno.test("stream: the leading-space rule applies once, to the start of the stream", async () => {
  const t = await Tokenizer.load(withNormalizer(modelBytes(), { addDummyPrefix: true }));
  const r = rng(23);
  for (let k = 0; k < 3000; k++) {
    const ids = randomIds(t, r, 10);
    assert.equal(pushes(t, ids).join(""), t.decode(ids), JSON.stringify(ids));
  }
  // 1253 = "▁light": dropped space at the start only
  assert.deepEqual(pushes(t, [1253, 1253]), ["light", " light", ""]);
  assert.deepEqual(pushes(t, [1, 4032, 1253]), ["", "", " light", ""]);
  // a continuation keeps its space
  const cont = new StreamDecoder(t, { atStart: false });
  assert.equal(cont.push(1253), " light");
  assert.equal(cont.flush(), "");
  assert.equal(cont.push(1253), " light"); // flush returns to the initial state: still a continuation
  // the same ids on the plain model are unaffected by atStart
  assert.equal(new StreamDecoder(tok, { atStart: false }).push(1253), " light");
  assert.equal(new StreamDecoder(tok).push(1253), " light");
});

Deno.test("stream: O(1) per token: long streams are fast and hold at most 3 bytes", () => {
  const r = rng(24);
  const ids = randomIds(tok, r, 400_000);
  const d = new StreamDecoder(tok);
  let out = "";
  const t0 = performance.now();
  for (const id of ids) {
    out += d.push(id);
    assert.ok(d.pendingBytes <= 3);
  }
  out += d.flush();
  const ms = performance.now() - t0;
  assert.equal(out, tok.decode(ids));
  // generous: quadratic behaviour would take minutes here
  assert.ok(ms < 10_000, `${ids.length} pushes took ${ms.toFixed(0)} ms`);
});
