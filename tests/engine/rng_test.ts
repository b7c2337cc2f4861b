import assert from "node:assert/strict";
import { InputError } from "../../src/errors.ts";
import {
  newRngState,
  parseRngState,
  rngNextU32,
  rngU32,
  rngUniform,
  rngWords,
} from "../../src/engine/rng.ts";

/** MurmurHash3 x86_32 over bytes, written independently from the spec (with tail handling). */
function murmur3Bytes(bytes: Uint8Array, seed: number): number {
  const c1 = 0xcc9e2d51;
  const c2 = 0x1b873593;
  let h = seed | 0;
  const nBlocks = bytes.length >> 2;
  const rotl = (x: number, r: number) => (x << r) | (x >>> (32 - r));
  for (let b = 0; b < nBlocks; b++) {
    const o = b * 4;
    let k = bytes[o] | (bytes[o + 1] << 8) | (bytes[o + 2] << 16) | (bytes[o + 3] << 24);
    k = Math.imul(rotl(Math.imul(k, c1), 15), c2);
    h = rotl(h ^ k, 13);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  const tail = nBlocks * 4;
  let k = 0;
  switch (bytes.length & 3) {
    case 3:
      k ^= bytes[tail + 2] << 16;
    // falls through
    case 2:
      k ^= bytes[tail + 1] << 8;
    // falls through
    case 1:
      k ^= bytes[tail];
      k = Math.imul(rotl(Math.imul(k, c1), 15), c2);
      h ^= k;
  }
  h ^= bytes.length;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function murmurWords(a: number, b: number, c: number, d: number): number {
  return murmur3Bytes(new Uint8Array(new Uint32Array([a, b, c, d]).buffer), 0);
}

Deno.test("rng: the reference MurmurHash3 reproduces published test vectors", () => {
  const enc = new TextEncoder();
  assert.equal(murmur3Bytes(new Uint8Array(0), 0), 0);
  assert.equal(murmur3Bytes(new Uint8Array(0), 1), 0x514e28b7);
  assert.equal(murmur3Bytes(new Uint8Array(0), 0xffffffff), 0x81f16f39);
  assert.equal(murmur3Bytes(enc.encode("hello"), 0), 0x248bfa47);
  assert.equal(murmur3Bytes(enc.encode("aaaa"), 0x9747b28c), 0x5a97808a);
  assert.equal(murmur3Bytes(enc.encode("Hello, world!"), 0x9747b28c), 0x24884cba);
  assert.equal(
    murmur3Bytes(enc.encode("The quick brown fox jumps over the lazy dog"), 0x9747b28c),
    0x2fa826cd,
  );
});

Deno.test("rng: rngU32 is MurmurHash3 x86_32 of the four little-endian words", () => {
  const st = newRngState(12345);
  for (let i = 0; i < 2000; i++) {
    const a = rngNextU32(st), b = rngNextU32(st), c = rngNextU32(st), d = rngNextU32(st);
    assert.equal(rngU32(a, b, c, d), murmurWords(a, b, c, d));
  }
  for (const c of [0, 1, 2, 0x7fffffff, 0x80000000, 0xffffffff]) {
    assert.equal(rngU32(0, 0, c), murmurWords(0, 0, c, 0));
    assert.equal(rngU32(0xffffffff, 0x1fffff, c, 7), murmurWords(0xffffffff, 0x1fffff, c, 7));
  }
});

Deno.test("rng: golden values (the WGSL port must reproduce these)", () => {
  const got = [
    rngU32(0, 0, 0),
    rngU32(0, 0, 1),
    rngU32(42, 0, 0),
    rngU32(42, 0, 1),
    rngU32(0xdeadbeef, 0x12345, 1000),
    rngU32(1, 2, 3, 4),
  ];
  assert.deepEqual(got, GOLDEN);
});

const GOLDEN = [
  0x8134cdf8,
  0x0d568719,
  0x6f610fe4,
  0xadb93a5d,
  0x2d9f66e7,
  0x4445ad00,
];

Deno.test("rng: uniform is (u32 >>> 8) * 2^-24 and advances the counter by one", () => {
  const seed = 2 ** 40 + 17;
  const st = newRngState(seed);
  for (let i = 0; i < 100; i++) {
    const [sLo, sHi, cLo, cHi] = rngWords(st);
    assert.equal(sLo, 17);
    assert.equal(sHi, 256);
    assert.equal(cLo, i);
    assert.equal(cHi, 0);
    const expect = (rngU32(sLo, sHi, cLo, cHi) >>> 8) / 2 ** 24;
    const u = rngUniform(st);
    assert.equal(u, expect);
    assert.equal(st.counter, i + 1);
    assert.ok(u >= 0 && u < 1);
    assert.ok(Number.isInteger(u * 2 ** 24));
  }
});

Deno.test("rng: counters past 2^32 use the high counter word", () => {
  const a = { seed: 9, counter: 2 ** 32 + 5 };
  assert.deepEqual(rngWords(a), [9, 0, 5, 1]);
  const x = rngNextU32(a);
  assert.equal(x, rngU32(9, 0, 5, 1));
  assert.notEqual(x, rngU32(9, 0, 5, 0));
  assert.equal(a.counter, 2 ** 32 + 6);
});

Deno.test("rng: deterministic, and resumes identically from a saved state", () => {
  const a = newRngState(777);
  const all = Array.from({ length: 20 }, () => rngUniform(a));
  const b = newRngState(777);
  const first = Array.from({ length: 10 }, () => rngUniform(b));
  const saved = JSON.parse(JSON.stringify(b));
  const c = parseRngState(saved);
  const rest = Array.from({ length: 10 }, () => rngUniform(c));
  assert.deepEqual([...first, ...rest], all);
});

Deno.test("rng: mean and chi-square over 100 buckets on 1e5 draws", () => {
  for (const seed of [0, 1, 2 ** 32, 2 ** 53 - 1, 123456789]) {
    const st = newRngState(seed);
    const n = 100_000;
    const buckets = new Float64Array(100);
    let sum = 0;
    for (let i = 0; i < n; i++) {
      const u = rngUniform(st);
      sum += u;
      buckets[Math.floor(u * 100)]++;
    }
    const mean = sum / n;
    // σ(mean) = sqrt(1/12 / n) ≈ 0.00091; allow 5σ
    assert.ok(Math.abs(mean - 0.5) < 0.0046, `seed ${seed}: mean ${mean}`);
    let chi = 0;
    for (const b of buckets) chi += (b - n / 100) ** 2 / (n / 100);
    // 99 degrees of freedom: P(χ² > 160) ≈ 1e-4
    assert.ok(chi < 160, `seed ${seed}: chi-square ${chi}`);
  }
});

function correlation(x: Float64Array, y: Float64Array): number {
  const n = x.length;
  let mx = 0, my = 0;
  for (let i = 0; i < n; i++) {
    mx += x[i];
    my += y[i];
  }
  mx /= n;
  my /= n;
  let sxy = 0, sxx = 0, syy = 0;
  for (let i = 0; i < n; i++) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) ** 2;
    syy += (y[i] - my) ** 2;
  }
  return sxy / Math.sqrt(sxx * syy);
}

Deno.test("rng: neighbouring seeds and counters decorrelate", () => {
  const n = 50_000;
  const limit = 5 / Math.sqrt(n);
  const stream = (seed: number, start = 0) => {
    const st = { seed, counter: start };
    return Float64Array.from({ length: n }, () => rngUniform(st));
  };
  const s0 = stream(1000);
  // neighbouring seeds (low word), seeds differing in the high word, lag-1 of one stream
  assert.ok(Math.abs(correlation(s0, stream(1001))) < limit);
  assert.ok(Math.abs(correlation(s0, stream(1000 + 2 ** 32))) < limit);
  assert.ok(Math.abs(correlation(s0, stream(1000, 1))) < limit);
  assert.ok(Math.abs(correlation(s0, stream(1000, 2 ** 32))) < limit);
  // draws are not equal where they should not be
  const s1 = stream(1001);
  let same = 0;
  for (let i = 0; i < n; i++) if (s0[i] === s1[i]) same++;
  assert.ok(same < 10);
});

Deno.test("rng: avalanche: one flipped input bit flips about half the output bits", () => {
  const st = newRngState(5);
  const trials = 400;
  const flips = new Float64Array(32); // per output bit, over all input bits and trials
  let total = 0;
  for (let t = 0; t < trials; t++) {
    const w = [rngNextU32(st), rngNextU32(st), rngNextU32(st), rngNextU32(st)];
    const base = rngU32(w[0], w[1], w[2], w[3]);
    for (let word = 0; word < 4; word++) {
      for (let bit = 0; bit < 32; bit++) {
        const v = w.slice();
        v[word] = (v[word] ^ (1 << bit)) >>> 0;
        const d = (base ^ rngU32(v[0], v[1], v[2], v[3])) >>> 0;
        for (let o = 0; o < 32; o++) flips[o] += (d >>> o) & 1;
        total++;
      }
    }
  }
  for (let o = 0; o < 32; o++) {
    const p = flips[o] / total;
    assert.ok(p > 0.47 && p < 0.53, `output bit ${o}: flip probability ${p}`);
  }
});

Deno.test("rng: the first 2^16 counters of a seed give distinct values", () => {
  const seen = new Set<number>();
  for (let c = 0; c < 65536; c++) seen.add(rngU32(3, 0, c));
  assert.equal(seen.size, 65536);
});

Deno.test("rng: newRngState and parseRngState validate", () => {
  for (let i = 0; i < 20; i++) {
    const s = newRngState();
    assert.ok(Number.isSafeInteger(s.seed) && s.seed >= 0);
    assert.equal(s.counter, 0);
  }
  assert.deepEqual(newRngState(0), { seed: 0, counter: 0 });
  assert.deepEqual(newRngState(2 ** 53 - 1), { seed: 2 ** 53 - 1, counter: 0 });
  for (const bad of [-1, 1.5, NaN, Infinity, 2 ** 53]) {
    assert.throws(() => newRngState(bad), (e) => e instanceof InputError && e.field === "seed");
  }
  assert.deepEqual(parseRngState({ seed: 4, counter: 9 }), { seed: 4, counter: 9 });
  assert.throws(() => parseRngState(null), InputError);
  assert.throws(() => parseRngState([1, 2]), InputError);
  assert.throws(
    () => parseRngState({ seed: 4, counter: -1 }),
    (e) => e instanceof InputError && e.field === "rng.counter",
  );
  assert.throws(
    () => parseRngState({ seed: "4", counter: 0 }),
    (e) => e instanceof InputError && e.field === "rng.seed",
  );
});
