/**
 * Fuzzing the state decoder: mutated, truncated, garbage and crafted inputs for a tiny model. Every
 * decode must either succeed with a snapshot that satisfies every invariant, or throw a `TnlError`
 * with one of the three state codes; never another error, never slowly, never with unbounded memory.
 * @module
 */

import assert from "node:assert/strict";
import { decodeSession, encodeSession, STATE_VERSION } from "../../src/state/codec.ts";
import type { SessionSnapshot } from "../../src/model/snapshot.ts";
import {
  assertInvariants,
  envelope,
  FP,
  hmac,
  isStateError,
  makeSnapshot,
  pack,
  payloadObject,
  tinyConfig,
} from "./support.ts";
import { rng as rand } from "../support/random.ts";

const config = tinyConfig();
const SECRET = "fuzz secret";
/** Per-case bound: a decode of at most a few KiB must never take this long. */
const CASE_MS = 2000;

interface Tally {
  ok: number;
  state_invalid: number;
  state_mismatch: number;
  state_signature: number;
  maxMs: number;
}

function tally(): Tally {
  return { ok: 0, state_invalid: 0, state_mismatch: 0, state_signature: 0, maxMs: 0 };
}

/** Decode `bytes`; check the outcome is one of the allowed ones and that it was quick. */
async function attempt(
  t: Tally,
  bytes: Uint8Array,
  secret: string | undefined,
  label: string,
): Promise<SessionSnapshot | null> {
  const t0 = performance.now();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${label}: decode did not finish within ${CASE_MS} ms`)),
      CASE_MS,
    );
  });
  try {
    const s = await Promise.race([decodeSession(bytes, { config, ...FP, secret }), timeout]);
    try {
      assertInvariants(s, config);
    } catch (e) {
      throw new Error(
        `${label}: decoded a snapshot that breaks an invariant: ${(e as Error).message}`,
      );
    }
    // Whatever decodes can be written back and read again, and advanced far (saves, draws) and
    // still written (the read bound, 2^48, leaves 2^53 - 2^48 exact steps to the writer's).
    const grown = {
      ...s,
      generation: s.generation + 2 ** 40,
      rng: { seed: s.rng.seed, counter: s.rng.counter + 2 ** 40 },
    };
    try {
      await decodeSession(await encodeSession(s, { config, ...FP }), { config, ...FP });
      await encodeSession(grown, { config, ...FP });
    } catch (e) {
      throw new Error(`${label}: decoded but cannot be written back: ${(e as Error).message}`);
    }
    t.ok++;
    return s;
  } catch (e) {
    if (!isStateError(e)) {
      throw new Error(
        `${label}: unexpected error ${(e as Error)?.name}: ${(e as Error)?.message}`,
        { cause: e },
      );
    }
    t[(e as { code: "state_invalid" | "state_mismatch" | "state_signature" }).code]++;
    return null;
  } finally {
    clearTimeout(timer);
    const ms = performance.now() - t0;
    t.maxMs = Math.max(t.maxMs, ms);
    assert.ok(ms < CASE_MS, `${label}: took ${ms.toFixed(0)} ms`);
  }
}

const base = await encodeSession(makeSnapshot(config, 6, 11), { config, ...FP });
const baseSigned = await encodeSession(makeSnapshot(config, 6, 11), {
  config,
  ...FP,
  secret: SECRET,
});

Deno.test("fuzz: every truncation, unsigned and signed", async () => {
  for (const [bytes, secret] of [[base, undefined], [baseSigned, SECRET]] as const) {
    const t = tally();
    for (let n = 0; n < bytes.length; n++) {
      assert.equal(await attempt(t, bytes.subarray(0, n), secret, `prefix ${n}`), null);
    }
    assert.equal(t.ok, 0);
    assert.equal(t.state_invalid + t.state_signature, bytes.length);
  }
});

Deno.test("fuzz: bit flips, insertions, deletions, unsigned and signed", async () => {
  const r = rand(2024);
  const rint = (n: number) => Math.floor(r() * n);
  for (const [bytes, secret] of [[base, undefined], [baseSigned, SECRET]] as const) {
    const t = tally();
    for (let i = 0; i < 3000; i++) {
      const m = bytes.slice();
      const flips = 1 + rint(4);
      for (let f = 0; f < flips; f++) m[rint(m.length)] ^= 1 << rint(8);
      await attempt(t, m, secret, `flip #${i}`);
    }
    for (let i = 0; i < 1000; i++) {
      const at = rint(bytes.length + 1);
      const k = 1 + rint(8);
      const ins = new Uint8Array(bytes.length + k);
      ins.set(bytes.subarray(0, at));
      for (let j = 0; j < k; j++) ins[at + j] = rint(256);
      ins.set(bytes.subarray(at), at + k);
      await attempt(t, ins, secret, `insert #${i}`);
      const del = new Uint8Array(bytes.length - Math.min(k, bytes.length - at));
      del.set(bytes.subarray(0, at));
      del.set(bytes.subarray(at + k), at);
      await attempt(t, del, secret, `delete #${i}`);
      // Overwrite a run with 0xff (maximal lengths, negative fixints) or 0x00.
      const run = bytes.slice();
      run.fill(r() < 0.5 ? 0xff : 0x00, at, at + k);
      await attempt(t, run, secret, `run #${i}`);
    }
    if (secret) {
      // A signed state survives no change to its payload; changes elsewhere are refused.
      assert.ok(t.state_signature > 0);
    } else {
      // Flipping a float bit can keep a valid state: some mutants must have decoded.
      assert.ok(t.ok > 0, JSON.stringify(t));
    }
    assert.ok(t.state_invalid > 0);
  }
});

Deno.test("fuzz: random garbage", async () => {
  const r = rand(7);
  const t = tally();
  for (let i = 0; i < 2000; i++) {
    const len = Math.floor(r() * (i < 1000 ? 64 : 4096));
    const g = new Uint8Array(len);
    for (let j = 0; j < len; j++) g[j] = Math.floor(r() * 256);
    // Half of them look like a map at first.
    if (i % 2 === 0 && len > 0) g[0] = 0x80 | (g[0] & 0x0f);
    await attempt(t, g, undefined, `garbage #${i}`);
    await attempt(t, await envelope(g), undefined, `garbage payload #${i}`);
    await attempt(t, await envelope(g, SECRET), SECRET, `signed garbage payload #${i}`);
  }
  assert.equal(t.ok, 0);
});

/** Values of every msgpack kind, each wrong for most fields. */
const WRONG: unknown[] = [
  null,
  true,
  false,
  0,
  -1,
  1.5,
  2 ** 53,
  -(2 ** 60),
  NaN,
  Infinity,
  "",
  "x".repeat(300),
  new Uint8Array(0),
  new Uint8Array(33),
  [],
  [1, 2, 3],
  {},
  { a: 1 },
  [[[[[[[[1]]]]]]]],
];

Deno.test("fuzz: msgpack-valid payloads with wrong-typed fields, unsigned and signed", async () => {
  const good = payloadObject(base);
  // Paths into the payload: top-level fields, nested maps, and layer fields.
  const paths: string[][] = Object.keys(good).map((k) => [k]);
  for (const k of ["dtype", "count", "data"]) paths.push(["tokens", k]);
  for (const k of ["seed", "counter"]) paths.push(["rng", k]);
  for (const k of ["pendingBytes", "heldStop"]) paths.push(["text", k]);
  for (let l = 0; l < 3; l++) {
    paths.push(["layers", String(l)]);
    for (const k of ["dtype", "shape", "data"]) paths.push(["layers", String(l), k]);
    for (let d = 0; d < 3; d++) paths.push(["layers", String(l), "shape", String(d)]);
  }
  const t = tally();
  let n = 0;
  for (const path of paths) {
    for (const w of [...WRONG, undefined]) {
      const p = structuredClone(good) as Record<string, unknown>;
      let o = p as Record<string, unknown>;
      for (const k of path.slice(0, -1)) o = o[k] as Record<string, unknown>;
      const last = path[path.length - 1];
      if (w === undefined) delete o[last];
      else o[last] = w;
      const payload = pack(p);
      const label = `${path.join(".")} = ${String(w).slice(0, 20)}`;
      await attempt(t, await envelope(payload), undefined, label);
      await attempt(t, await envelope(payload, SECRET), SECRET, `signed ${label}`);
      n++;
    }
  }
  assert.ok(n > 500);
  assert.ok(t.state_invalid > 0 && t.state_mismatch > 0);
});

/** Raw msgpack bytes. */
function raw(...parts: (number | number[] | Uint8Array)[]): Uint8Array {
  const arrays = parts.map((p) => typeof p === "number" ? new Uint8Array([p]) : Uint8Array.from(p));
  const out = new Uint8Array(arrays.reduce((n, a) => n + a.length, 0));
  let at = 0;
  for (const a of arrays) {
    out.set(a, at);
    at += a.length;
  }
  return out;
}

const str = (s: string): number[] => [0xa0 | s.length, ...new TextEncoder().encode(s)];

Deno.test("fuzz: huge declared lengths and deep nesting fail fast, with bounded memory", async () => {
  const t = tally();
  const huge = [0xff, 0xff, 0xff, 0xff];
  const heads = [
    [0xc6, ...huge], // bin32
    [0xdb, ...huge], // str32
    [0xdd, ...huge], // array32
    [0xdf, ...huge], // map32
    [0xc5, 0xff, 0xff], // bin16
    [0xdc, 0xff, 0xff], // array16
    [0xde, 0xff, 0xff], // map16
    [0xc9, ...huge, 0x01], // ext32
    [0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // uint64 beyond 2^53
  ];
  const rss0 = Deno.memoryUsage().rss;
  for (const h of heads) {
    // As the whole input, as the payload field of the envelope, and inside a payload.
    await attempt(t, raw(h, [1, 2, 3]), undefined, `top ${h}`);
    const envHead = raw(
      0x84,
      str("format"),
      str("tnl-edge-session"),
      str("version"),
      1,
      str("alg"),
      str("none"),
      str("payload"),
      h,
      [1, 2],
    );
    await attempt(t, envHead, undefined, `envelope payload ${h}`);
    for (const field of ["sampling", "layers", "tokens", "id"]) {
      const p = payloadObject(base);
      p[field] = "@@@@";
      const bytes = pack(p);
      // Replace the placeholder string (a4 40 40 40 40) with the huge header and a few bytes.
      const i = bytes.findIndex((_, j) =>
        bytes[j] === 0xa4 && bytes[j + 1] === 0x40 && bytes[j + 4] === 0x40
      );
      assert.ok(i > 0, "placeholder found");
      const crafted = raw(bytes.subarray(0, i), h, bytes.subarray(i + 5));
      await attempt(t, await envelope(crafted), undefined, `payload ${field} ${h}`);
      await attempt(t, await envelope(crafted, SECRET), SECRET, `signed payload ${field} ${h}`);
    }
  }
  // Deep nesting: 200,000 nested one-element arrays (and maps) in the sampling field.
  for (const opener of [[0x91], [0x81, 0xa1, 0x61]]) {
    const p = payloadObject(base);
    p.sampling = "@@@@";
    const bytes = pack(p);
    const i = bytes.findIndex((_, j) =>
      bytes[j] === 0xa4 && bytes[j + 1] === 0x40 && bytes[j + 4] === 0x40
    );
    assert.ok(i > 0, "placeholder found");
    const nest = new Uint8Array(200_000 * opener.length + 1);
    for (let k = 0; k < 200_000; k++) nest.set(opener, k * opener.length);
    const crafted = raw(bytes.subarray(0, i), nest, bytes.subarray(i + 5));
    await attempt(t, await envelope(crafted), undefined, `deep ${opener}`);
    await attempt(t, await envelope(crafted, SECRET), SECRET, `signed deep ${opener}`);
    await attempt(t, nest, undefined, `deep envelope ${opener}`);
  }
  // Many small values: the node cap bounds what a payload can make us allocate.
  const many = new Uint8Array(5 + 4_000_000);
  many.set([0xdd, 0x00, 0x3d, 0x09, 0x00]);
  many.fill(0x90, 5);
  await attempt(t, await envelope(many), undefined, "4M empty arrays");
  const grew = (Deno.memoryUsage().rss - rss0) / 2 ** 20;
  assert.equal(t.ok, 0);
  assert.ok(grew < 256, `rss grew by ${grew.toFixed(0)} MiB`);
  assert.ok(t.maxMs < 500, `slowest case ${t.maxMs.toFixed(0)} ms`);
});

Deno.test("fuzz: signed states with a valid signature over a malformed payload", async () => {
  // Past the signature check, the payload parser gets the same treatment.
  const r = rand(99);
  const payload = (await import("./support.ts")).readPortable(base).value as Map<string, unknown>;
  const pbytes = payload.get("payload") as Uint8Array;
  const t = tally();
  for (let i = 0; i < 1500; i++) {
    const m = pbytes.slice();
    m[Math.floor(r() * m.length)] ^= 1 << Math.floor(r() * 8);
    const cut = r() < 0.2 ? m.subarray(0, Math.floor(r() * m.length)) : m;
    const env = pack({
      format: "tnl-edge-session",
      version: STATE_VERSION,
      alg: "HS256",
      sig: await hmac(SECRET, cut),
      payload: cut,
    });
    await attempt(t, env, SECRET, `signed mutant #${i}`);
  }
  assert.ok(t.ok > 0 && t.state_invalid > 0);
  assert.equal(t.state_signature, 0);
});

Deno.test("fuzz: extreme counters, nil history with a position, huge finite values", async () => {
  // The classes that once decoded but could not be run or saved (issue 14.1), at and around their
  // bounds: each either decodes into a state that can grow and be saved, or is a state_invalid.
  const good = payloadObject(base);
  const big = [
    2 ** 53 - 1,
    2 ** 53 - 2,
    2 ** 52,
    2 ** 48 + 1,
    2 ** 48,
    2 ** 48 - 1,
    2 ** 32,
    2 ** 32 - 1,
    2 ** 31,
    2 ** 31 - 1,
  ];
  const mods: [string, (p: Record<string, unknown>) => void][] = [];
  for (const v of big) {
    mods.push([`generation ${v}`, (p) => (p.generation = v)]);
    mods.push([`rng.counter ${v}`, (p) => ((p.rng as Record<string, unknown>).counter = v)]);
    mods.push([`rng.seed ${v}`, (p) => ((p.rng as Record<string, unknown>).seed = v)]);
    mods.push([`position ${v}, no history`, (p) => {
      p.position = v;
      p.tokens = null;
      p.generated = null;
    }]);
  }
  for (const field of ["tokens", "generated"]) {
    for (const position of [0, 1, 5, 21]) {
      for (const pending of [-1, 0, 5]) {
        mods.push([`${field} nil, position ${position}, pending ${pending}`, (p) => {
          p[field] = null;
          if (field === "tokens") p.generated = null;
          p.position = position;
          p.pending = pending;
        }]);
      }
    }
  }
  for (const v of [3e38, -3e38, 3.4028234663852886e38, 1e308, 8.64e15, 8.64e15 + 1]) {
    mods.push([`createdAt ${v}`, (p) => (p.createdAt = v)]);
    mods.push([`updatedAt ${v}`, (p) => (p.updatedAt = v)]);
    mods.push([`sampling.temperature ${v}`, (p) => (p.sampling = { temperature: v })]);
    mods.push([`layer 0 all ${v}`, (p) => {
      const l = (p.layers as { data: Uint8Array }[])[0];
      const f = new Float32Array(l.data.length / 4).fill(v);
      l.data = new Uint8Array(f.buffer);
    }]);
  }
  const t = tally();
  for (const [label, mod] of mods) {
    const p = structuredClone(good);
    mod(p);
    await attempt(t, await envelope(pack(p)), undefined, label);
    await attempt(t, await envelope(pack(p), SECRET), SECRET, `signed ${label}`);
  }
  assert.ok(t.ok > 0 && t.state_invalid > 0, JSON.stringify(t));
  assert.equal(t.state_mismatch + t.state_signature, 0);
});

// The encodings of format version 2: the same treatment for their decoding paths (byte planes,
// bounded inflate, bf16, q8 scales), then mutations aimed at the compressed data itself.
for (const encoding of ["f32+deflate", "bf16", "bf16+deflate", "q8", "q8+deflate"] as const) {
  Deno.test(`fuzz: ${encoding} states: truncations, bit flips, mutated layer data`, async () => {
    const snap = makeSnapshot(config, 6, 11);
    const bytes = await encodeSession(snap, { config, ...FP, encoding });
    const t = tally();
    for (let n = 0; n < bytes.length; n++) {
      assert.equal(await attempt(t, bytes.subarray(0, n), undefined, `prefix ${n}`), null);
    }
    const r = rand(31);
    const rint = (n: number) => Math.floor(r() * n);
    for (let i = 0; i < 600; i++) {
      const m = bytes.slice();
      for (let f = 1 + rint(3); f > 0; f--) m[rint(m.length)] ^= 1 << rint(8);
      await attempt(t, m, undefined, `flip #${i}`);
    }
    // Inside a well-formed payload, signed with a valid signature: the layer blobs mutated.
    const good = payloadObject(bytes);
    for (let i = 0; i < 600; i++) {
      const p = structuredClone(good);
      const layer = (p.layers as { data: Uint8Array; scales?: Uint8Array }[])[rint(3)];
      const key = layer.scales && r() < 0.3 ? "scales" : "data";
      const blob = layer[key]!;
      const op = rint(4);
      if (op === 0) blob[rint(blob.length)] ^= 1 << rint(8);
      else if (op === 1) layer[key] = blob.subarray(0, rint(blob.length));
      else if (op === 2) {
        const longer = new Uint8Array(blob.length + 1 + rint(8));
        longer.set(blob);
        layer[key] = longer;
      } else blob.fill(r() < 0.5 ? 0xff : 0x00, rint(blob.length), rint(blob.length + 1));
      const payload = pack(p);
      await attempt(t, await envelope(payload, SECRET), SECRET, `signed blob mutant #${i}`);
    }
    assert.ok(t.state_invalid > 0, JSON.stringify(t));
    assert.ok(t.ok > 0, `some mutants keep a valid state: ${JSON.stringify(t)}`);
  });
}
