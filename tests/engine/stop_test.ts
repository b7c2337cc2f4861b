import assert from "node:assert/strict";
import { InputError } from "../../src/errors.ts";
import { newRngState, rngUniform } from "../../src/engine/rng.ts";
import {
  MAX_STOP_LENGTH,
  MAX_STOP_SEQUENCES,
  StopMatcher,
  validateStopSequences,
} from "../../src/engine/stop.ts";

/** Feed `deltas`; return every emitted piece, whether it stopped, and the flushed tail. */
function run(stops: string[], deltas: string[]) {
  const m = new StopMatcher(stops);
  const pieces: string[] = [];
  let stopped = false;
  let matched: string | undefined;
  for (const d of deltas) {
    const r = m.push(d);
    pieces.push(r.emit);
    if (r.stopped && !stopped) matched = r.matched;
    stopped = r.stopped;
  }
  const tail = m.flush();
  return { text: pieces.join("") + tail, pieces, stopped, matched, tail };
}

/** What a full-text scan gives: cut at the stop match that ends first (ties: longest). */
function expected(stops: string[], text: string): { text: string; stopped: boolean } {
  let bestEnd = Infinity;
  let bestAt = -1;
  for (const s of stops) {
    const i = text.indexOf(s);
    if (i >= 0 && (i + s.length < bestEnd || (i + s.length === bestEnd && i < bestAt))) {
      bestEnd = i + s.length;
      bestAt = i;
    }
  }
  return bestAt < 0 ? { text, stopped: false } : { text: text.slice(0, bestAt), stopped: true };
}

Deno.test("stop: a match split over many deltas is never emitted", () => {
  const text = "Hello wor" + "ld! ### Human: hi";
  const r = run(["### Human:"], [...text]);
  assert.equal(r.text, "Hello world! ");
  assert.ok(r.stopped);
  assert.equal(r.matched, "### Human:");
  // no piece ever contains part of the stop string
  assert.ok(!r.pieces.join("").includes("#"));
  assert.equal(r.tail, "");
});

Deno.test("stop: holds back only what could start a stop string", () => {
  const m = new StopMatcher(["END"]);
  assert.deepEqual(m.push("abc"), { emit: "abc", stopped: false });
  assert.deepEqual(m.push("xE"), { emit: "x", stopped: false });
  assert.deepEqual(m.state, { held: "E", stopped: false });
  assert.deepEqual(m.push("N"), { emit: "", stopped: false });
  assert.deepEqual(m.push("x"), { emit: "ENx", stopped: false });
  assert.deepEqual(m.push("E"), { emit: "", stopped: false });
  assert.deepEqual(m.push("ND tail"), { emit: "", stopped: true, matched: "END" });
  assert.deepEqual(m.push("more"), { emit: "", stopped: true });
  assert.equal(m.flush(), "");
  // no false holds: nothing that starts a stop string means nothing held
  const n = new StopMatcher(["\n\n", "User:"]);
  assert.deepEqual(n.push("plain "), { emit: "plain ", stopped: false });
  assert.deepEqual(n.push("text\n"), { emit: "text", stopped: false });
  assert.deepEqual(n.push("with U"), { emit: "\nwith ", stopped: false });
  assert.deepEqual(n.push("sers"), { emit: "Users", stopped: false });
  assert.equal(n.state.held, "");
  assert.deepEqual(n.push("Us"), { emit: "", stopped: false });
  assert.deepEqual(n.push("er:"), { emit: "", stopped: true, matched: "User:" });
});

Deno.test("stop: overlapping and prefix stop strings", () => {
  // a shorter stop inside a longer candidate completes first
  assert.deepEqual(
    { text: run(["abcd", "bc"], ["xab", "ce"]).text, stopped: true },
    { text: "xa", stopped: true },
  );
  // one stop is a prefix of another: the shorter completes first
  let r = run(["ab", "abc"], ["xa", "bc"]);
  assert.equal(r.text, "x");
  assert.equal(r.matched, "ab");
  // two matches ending at the same place: the longer (earlier start) wins
  r = run(["abc", "bc"], ["zab", "c"]);
  assert.equal(r.text, "z");
  assert.equal(r.matched, "abc");
  // self-overlapping stop: "aab" in "aaab"
  r = run(["aab"], ["a", "a", "a", "b", "c"]);
  assert.equal(r.text, "a");
  assert.ok(r.stopped);
  // a held prefix that fails to complete is released, and a later start still matches
  r = run(["abab"], ["xab", "ac", "abab"]);
  assert.equal(r.text, "xabac");
  assert.ok(r.stopped);
});

Deno.test("stop: random splits give the same result as matching the whole text", () => {
  const rng = newRngState(31337);
  const alphabet = ["a", "b", "c", "\n", "😀", "é", " "];
  const stopsSets = [["ab"], ["abc", "bca", "\n\n"], ["😀a", "a😀b", "cc"], ["aaa", "aa b"]];
  for (let trial = 0; trial < 2000; trial++) {
    const stops = stopsSets[trial % stopsSets.length];
    let text = "";
    const len = 1 + Math.floor(rngUniform(rng) * 40);
    for (let i = 0; i < len; i++) text += alphabet[Math.floor(rngUniform(rng) * alphabet.length)];
    // split at random code-unit positions (may split surrogate pairs between deltas)
    const deltas: string[] = [];
    let i = 0;
    while (i < text.length) {
      const k = 1 + Math.floor(rngUniform(rng) * 5);
      deltas.push(text.slice(i, i + k));
      i += k;
    }
    const r = run(stops, deltas);
    const e = expected(stops, text);
    assert.equal(r.text, e.text, `${JSON.stringify(stops)} ${JSON.stringify(deltas)}`);
    assert.equal(r.stopped, e.stopped);
    // surrogate pairs are never split in emitted text
    for (const p of r.pieces) assert.ok(p.isWellFormed(), JSON.stringify(deltas));
  }
});

Deno.test("stop: unicode stop strings and surrogate pairs split across deltas", () => {
  const m = new StopMatcher(["👋 bye"]);
  const a = m.push("hi \ud83d");
  assert.equal(a.emit, "hi ");
  assert.equal(m.state.held, "\ud83d");
  const b = m.push("\ude00 ok");
  assert.equal(b.emit, "😀 ok");
  const c = m.push(" 👋");
  assert.equal(c.emit, " ");
  const d = m.push(" bye!");
  assert.deepEqual(d, { emit: "", stopped: true, matched: "👋 bye" });
  // without stop strings, only a trailing high surrogate is held
  const n = new StopMatcher([]);
  assert.deepEqual(n.push("x\ud83d"), { emit: "x", stopped: false });
  assert.deepEqual(n.push("\ude00"), { emit: "😀", stopped: false });
  assert.deepEqual(n.push("plain"), { emit: "plain", stopped: false });
});

Deno.test("stop: flush releases held text", () => {
  const m = new StopMatcher(["</s>"]);
  assert.equal(m.push("done </").emit, "done ");
  assert.equal(m.flush(), "</");
  assert.equal(m.flush(), "");
  assert.equal(m.push("x").emit, "x");
});

Deno.test("stop: state resumes matching across a request boundary", () => {
  const stops = ["<|end|>"];
  const a = new StopMatcher(stops);
  assert.equal(a.push("answer <|e").emit, "answer ");
  const saved = JSON.parse(JSON.stringify(a.state));
  const b = new StopMatcher(stops, saved);
  assert.deepEqual(b.push("nd|> junk"), { emit: "", stopped: true, matched: "<|end|>" });
  const c = new StopMatcher(stops, { held: "<|e", stopped: false });
  assert.equal(c.push("xyz").emit, "<|exyz");
  const d = new StopMatcher(stops, { held: "", stopped: true });
  assert.deepEqual(d.push("abc"), { emit: "", stopped: true });
  assert.ok(d.stopped);
  for (
    const bad of [
      null,
      { held: 1, stopped: false },
      { held: "", stopped: "no" },
      { held: "x".repeat(8), stopped: false },
    ]
  ) {
    assert.throws(
      () => new StopMatcher(stops, bad as never),
      (e) => e instanceof InputError && e.field === "stopState",
    );
  }
});

Deno.test("stop: stop strings are validated", () => {
  assert.deepEqual(validateStopSequences(["a", "b", "a"]), ["a", "b"]);
  assert.equal(validateStopSequences(Array.from({ length: 16 }, (_, i) => `s${i}`)).length, 16);
  assert.equal(validateStopSequences(["x".repeat(MAX_STOP_LENGTH)]).length, 1);
  const bad: unknown[] = [
    Array.from({ length: MAX_STOP_SEQUENCES + 1 }, (_, i) => `s${i}`),
    [""],
    ["x".repeat(MAX_STOP_LENGTH + 1)],
    [1],
    ["ok", null],
    ["\ud83d"],
    ["a\ude00"],
    "stop",
  ];
  for (const v of bad) {
    assert.throws(
      () => new StopMatcher(v as string[]),
      (e) => e instanceof InputError && e.field === "stop",
      JSON.stringify(v),
    );
  }
});
