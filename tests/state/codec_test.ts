import assert from "node:assert/strict";
import { unpack } from "msgpackr/unpack";
import { loadConfig } from "../../src/model/config.ts";
import { createState } from "../../src/model/state.ts";
import {
  decodeSession,
  defaultMaxStateBytes,
  encodeSession,
  sessionDigest,
  stateByteSize,
} from "../../src/state/codec.ts";
import { StateError } from "../../src/state/errors.ts";
import { toHttpError } from "../../src/http/errors.ts";
import { TnlError } from "../../src/errors.ts";
import {
  assertInvariants,
  envelope,
  FP,
  makeSnapshot,
  pack,
  payloadObject,
  readPortable,
  tinyConfig,
  toPlain,
} from "./support.ts";
import { DEFAULT_MODEL_DIR } from "../fixtures.ts";

const config = tinyConfig();
const enc = { config, ...FP };
const dec = { config, ...FP };

/** Expect `p` to reject with a state error of `code` whose message matches `re`. */
async function rejects(p: Promise<unknown>, code: string, re?: RegExp): Promise<StateError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof StateError, `expected a StateError, got ${e}`);
    assert.equal(e.code, code, e.message);
    if (re) assert.match(e.message, re);
    return e;
  }
  assert.fail(`expected ${code}`);
}

/** Encode a snapshot, let `mod` edit its payload object, and re-wrap it (signed with `secret`). */
async function craft(
  mod: (p: Record<string, unknown>) => void,
  secret?: string,
): Promise<Uint8Array> {
  const p = payloadObject(await encodeSession(makeSnapshot(config), enc));
  mod(p);
  return envelope(pack(p), secret);
}

Deno.test("codec: round trip is bit-exact, unsigned and signed", async () => {
  const s = makeSnapshot(config, 9, 3);
  // Values that a lossy path would change: -0, subnormals, the largest finite f32.
  s.state.layers[1][0] = -0;
  s.state.layers[1][1] = 1e-45;
  s.state.layers[1][2] = 3.4028234663852886e38;
  for (const secret of [undefined, "server secret", new Uint8Array([1, 2, 3])]) {
    const bytes = await encodeSession(s, { ...enc, secret });
    const d = await decodeSession(bytes, { ...dec, secret });
    assertInvariants(d, config);
    assert.equal(d.id, s.id);
    assert.equal(d.generation, s.generation);
    assert.equal(d.state.position, s.state.position);
    assert.equal(d.pending, s.pending);
    assert.deepEqual(d.tokens, s.tokens);
    assert.deepEqual(d.generated, s.generated);
    assert.deepEqual(d.sampling, s.sampling);
    assert.deepEqual(d.rng, s.rng);
    assert.deepEqual(d.text, s.text);
    assert.equal(d.createdAt, s.createdAt);
    assert.equal(d.updatedAt, s.updatedAt);
    for (let l = 0; l < config.numLayers; l++) {
      assert.deepEqual(
        new Uint8Array(d.state.layers[l].buffer),
        new Uint8Array(s.state.layers[l].buffer),
        `layer ${l} bits`,
      );
    }
    assert.ok(Object.is(d.state.layers[1][0], -0));
    // Encoding is deterministic.
    assert.deepEqual(await encodeSession(s, { ...enc, secret }), bytes);
  }
});

Deno.test("codec: empty session, no history", async () => {
  const s = makeSnapshot(config, 0);
  s.tokens = null;
  s.generated = null;
  s.state.layers.forEach((l) => l.fill(0));
  const d = await decodeSession(await encodeSession(s, enc), dec);
  assert.equal(d.pending, -1);
  assert.equal(d.state.position, 0);
  assert.equal(d.tokens, null);
  assert.equal(d.generated, null);
  // History kept without generated flags is fine too.
  const s2 = makeSnapshot(config, 4);
  s2.generated = null;
  assert.deepEqual((await decodeSession(await encodeSession(s2, enc), dec)).tokens, s2.tokens);
});

Deno.test("codec: output is portable msgpack (independent reader, no ext types)", async () => {
  const s = makeSnapshot(config, 6);
  for (const secret of [undefined, "k"]) {
    const bytes = await encodeSession(s, { ...enc, secret });
    const { value: env, exts } = readPortable(bytes);
    assert.deepEqual(exts, []);
    assert.ok(env instanceof Map);
    for (const k of env.keys()) assert.equal(typeof k, "string");
    assert.equal(env.get("format"), "tnl-edge-session");
    assert.equal(env.get("version"), 3);
    assert.equal(env.get("alg"), secret ? "HS256" : "none");
    assert.equal(
      secret ? (env.get("sig") as Uint8Array).length : env.get("sig"),
      secret ? 32 : undefined,
    );
    const payloadBytes = env.get("payload") as Uint8Array;
    const inner = readPortable(payloadBytes);
    assert.deepEqual(inner.exts, []);
    const checkKeys = (v: unknown): void => {
      if (v instanceof Map) {
        for (const [k, x] of v) {
          assert.equal(typeof k, "string");
          checkKeys(x);
        }
      } else if (Array.isArray(v)) v.forEach(checkKeys);
    };
    checkKeys(inner.value);
    const p = toPlain(inner.value) as Record<string, unknown>;
    assert.equal(p.format, "tnl-edge-session");
    assert.equal(p.modelFingerprint, FP.modelFingerprint);
    assert.equal(p.tokenizerFingerprint, FP.tokenizerFingerprint);
    assert.equal(p.id, s.id);
    assert.equal(p.position, 5);
    assert.deepEqual(p.rng, { seed: 123456789012, counter: 77 });
    const tokens = p.tokens as { dtype: string; count: number; data: Uint8Array };
    assert.equal(tokens.dtype, "i32");
    assert.equal(tokens.count, 6);
    const dv = new DataView(tokens.data.buffer, tokens.data.byteOffset);
    assert.deepEqual(Array.from({ length: 6 }, (_, i) => dv.getInt32(i * 4, true)), [...s.tokens!]);
    const layers = p.layers as { dtype: string; shape: number[]; data: Uint8Array }[];
    assert.deepEqual(layers.map((l) => l.shape), [[2, 8, 4], [2, 4, 4], [2, 4, 4]]);
    for (let l = 0; l < 3; l++) {
      assert.equal(layers[l].dtype, "f32");
      assert.equal((layers[l] as { compression?: string }).compression, "none");
      const ldv = new DataView(layers[l].data.buffer, layers[l].data.byteOffset);
      const vals = Array.from(
        { length: layers[l].data.length / 4 },
        (_, i) => ldv.getFloat32(i * 4, true),
      );
      assert.deepEqual(vals, [...s.state.layers[l]]);
    }
    if (secret) {
      const key = await crypto.subtle.importKey(
        "raw",
        new TextEncoder().encode(secret),
        { name: "HMAC", hash: "SHA-256" },
        false,
        ["verify"],
      );
      assert.ok(
        await crypto.subtle.verify(
          "HMAC",
          key,
          env.get("sig") as Uint8Array<ArrayBuffer>,
          payloadBytes as Uint8Array<ArrayBuffer>,
        ),
      );
    }
    // msgpackr reads it too, and sees the same fields.
    const viaMsgpackr = unpack(unpack(bytes).payload) as Record<string, unknown>;
    assert.equal(viaMsgpackr.id, s.id);
    assert.equal((viaMsgpackr.layers as unknown[]).length, 3);
  }
});

Deno.test("codec: layers are fresh aligned copies, also from an unaligned input", async () => {
  const bytes = await encodeSession(makeSnapshot(config), enc);
  const host = new Uint8Array(bytes.length + 3);
  host.set(bytes, 1);
  const view = host.subarray(1, 1 + bytes.length);
  const d = await decodeSession(view, dec);
  for (const l of d.state.layers) {
    assert.equal(l.byteOffset, 0);
    assert.equal(l.buffer.byteLength, l.byteLength);
  }
  const before = d.state.layers[0][0];
  host.fill(0);
  assert.equal(d.state.layers[0][0], before);
  assert.ok(d.tokens!.buffer !== host.buffer && d.text.pendingBytes.buffer !== host.buffer);
});

Deno.test("codec: signatures", async () => {
  const s = makeSnapshot(config);
  const signed = await encodeSession(s, { ...enc, secret: "s1" });
  const unsigned = await encodeSession(s, enc);
  await rejects(
    decodeSession(signed, { ...dec, secret: "s2" }),
    "state_signature",
    /does not match/,
  );
  await rejects(decodeSession(unsigned, { ...dec, secret: "s1" }), "state_signature", /not signed/);
  await rejects(decodeSession(signed, dec), "state_signature", /no state secret/);
  // HS256 without a signature: a signature error when a secret is configured.
  const pl = (readPortable(signed).value as Map<string, unknown>).get("payload") as Uint8Array;
  await rejects(
    decodeSession(pack({ format: "tnl-edge-session", version: 1, alg: "HS256", payload: pl }), {
      ...dec,
      secret: "s1",
    }),
    "state_signature",
    /signature is missing/,
  );
  // Any flipped payload bit: the signature no longer matches.
  const tampered = signed.slice();
  tampered[tampered.length - 10] ^= 1;
  await rejects(decodeSession(tampered, { ...dec, secret: "s1" }), "state_signature");
  // A valid payload re-wrapped as unsigned (alg downgrade) is refused with a secret.
  const p = (readPortable(signed).value as Map<string, unknown>).get("payload") as Uint8Array;
  await rejects(decodeSession(await envelope(p), { ...dec, secret: "s1" }), "state_signature");
  // A signature of the wrong length, a signature with alg none.
  await rejects(
    decodeSession(
      pack({
        format: "tnl-edge-session",
        version: 1,
        alg: "HS256",
        sig: new Uint8Array(31),
        payload: p,
      }),
      {
        ...dec,
        secret: "s1",
      },
    ),
    "state_signature",
    /31 bytes/,
  );
  await rejects(
    decodeSession(
      pack({
        format: "tnl-edge-session",
        version: 1,
        alg: "none",
        sig: new Uint8Array(32),
        payload: p,
      }),
      dec,
    ),
    "state_invalid",
    /alg "none" with a signature/,
  );
  // The signature is checked before the payload is parsed: a signed garbage payload with a wrong
  // signature is a signature error, not a parse error.
  const garbage = pack({
    format: "tnl-edge-session",
    version: 1,
    alg: "HS256",
    sig: new Uint8Array(32),
    payload: new Uint8Array([0xc1]),
  });
  await rejects(decodeSession(garbage, { ...dec, secret: "s1" }), "state_signature");
  await assert.rejects(encodeSession(s, { ...enc, secret: "" }), TnlError);
});

Deno.test("codec: mismatches name what does not fit (422)", async () => {
  const bytes = await encodeSession(makeSnapshot(config), enc);
  const e1 = await rejects(
    decodeSession(bytes, { ...dec, modelFingerprint: "other" }),
    "state_mismatch",
    /model fingerprint/,
  );
  assert.equal(toHttpError(e1).status, 422);
  await rejects(
    decodeSession(bytes, { ...dec, tokenizerFingerprint: "other" }),
    "state_mismatch",
    /tokenizer fingerprint/,
  );
  await rejects(
    decodeSession(bytes, {
      ...dec,
      config: tinyConfig({ decoder_layers: 4, linear_use_lrpe_list: [1, 0, 0, 0] }),
    }),
    "state_mismatch",
    /3 layers, the loaded model has 4/,
  );
  await rejects(
    decodeSession(bytes, { ...dec, config: tinyConfig({ linear_use_lrpe_list: [0, 0, 0] }) }),
    "state_mismatch",
    /state layer 0: shape \[2,8,4\], expected \[2,4,4\]/,
  );
  await rejects(
    decodeSession(bytes, { ...dec, config: tinyConfig({ decoder_attention_heads: 1 }) }),
    "state_mismatch",
    /state layer 0: shape \[2,8,4\], expected \[1,16,8\]/,
  );
});

Deno.test("codec: malformed payload fields are refused with a message (400)", async () => {
  const cases: [string, (p: Record<string, unknown>) => void, RegExp][] = [
    ["NaN in a layer", (p) => {
      const l = (p.layers as { data: Uint8Array }[])[2];
      new DataView(l.data.buffer, l.data.byteOffset).setFloat32(4 * 17, NaN, true);
    }, /state layer 2: non-finite value NaN at \[1,0,1\]/],
    ["Infinity in a layer", (p) => {
      const l = (p.layers as { data: Uint8Array }[])[0];
      new DataView(l.data.buffer, l.data.byteOffset).setFloat32(0, -Infinity, true);
    }, /state layer 0: non-finite value -Infinity/],
    ["short layer blob", (p) => {
      const l = (p.layers as { data: Uint8Array }[])[1];
      l.data = l.data.subarray(4);
    }, /state layer 1: 124 bytes of data for shape \[2,4,4\] \(expected 128\)/],
    ["layer dtype", (p) => {
      (p.layers as { dtype: string }[])[1].dtype = "f16";
    }, /state layer 1: dtype/],
    ["token out of range", (p) => {
      const t = p.tokens as { data: Uint8Array };
      new DataView(t.data.buffer, t.data.byteOffset).setInt32(0, 97, true);
    }, /tokens\[0\]: id 97 is outside the vocabulary \[0, 97\)/],
    ["negative token", (p) => {
      const t = p.tokens as { data: Uint8Array };
      new DataView(t.data.buffer, t.data.byteOffset).setInt32(4, -1, true);
    }, /tokens\[1\]: id -1/],
    ["token count", (p) => {
      (p.tokens as { count: number }).count = 6;
    }, /tokens: 20 bytes of data for 6 i32 tokens/],
    ["pending out of range", (p) => {
      p.pending = 97;
    }, /pending: 97 is outside \[-1, 96\]/],
    [
      "position vs history",
      (p) => {
        p.position = 3;
      },
      /position 3 does not match the history: 5 tokens of which the last is pending means 4 consumed/,
    ],
    ["pending not last token", (p) => {
      const t = p.tokens as { data: Uint8Array };
      const dv = new DataView(t.data.buffer, t.data.byteOffset);
      p.pending = (dv.getInt32(16, true) + 1) % 97;
    }, /is not the last history token/],
    ["no pending with position", (p) => {
      p.pending = -1;
      p.tokens = null;
      p.generated = null;
    }, /position 4 with no pending token/],
    ["no history with position", (p) => {
      p.tokens = null;
      p.generated = null;
    }, /tokens: nil \(no history\) with position 4 and pending \d+: only an empty session/],
    ["no history, position 0, a pending token", (p) => {
      p.tokens = null;
      p.generated = null;
      p.position = 0;
    }, /tokens: nil \(no history\) with position 0 and pending/],
    ["position beyond its bound (no history)", (p) => {
      p.tokens = null;
      p.generated = null;
      p.position = 2 ** 53 - 1;
    }, /position: 9007199254740991 is outside \[0, 2147483647\]/],
    ["generation that could not grow", (p) => {
      p.generation = 2 ** 53 - 1;
    }, /generation: 9007199254740991 is outside \[0, 281474976710656\]/],
    ["generation just past the bound", (p) => {
      p.generation = 2 ** 48 + 1;
    }, /generation: 281474976710657 is outside/],
    ["rng counter that could not grow", (p) => {
      p.rng = { seed: 1, counter: 2 ** 53 - 2 };
    }, /rng.counter: 9007199254740990 is outside \[0, 281474976710656\]/],
    ["updatedAt beyond a Date", (p) => {
      p.updatedAt = 3e38;
    }, /updatedAt: expected a time in ms in \[0, 8640000000000000\]/],
    ["bad id", (p) => {
      p.id = "../etc/passwd";
    }, /id: .* is not a session id/],
    ["negative generation", (p) => {
      p.generation = -1;
    }, /generation: -1 is outside/],
    ["float position", (p) => {
      p.position = 4.5;
    }, /position: expected an integer/],
    ["unknown field", (p) => {
      p.extra = 1;
    }, /unknown field "extra"/],
    ["missing field", (p) => {
      delete p.rng;
    }, /missing field "rng"/],
    ["rng seed", (p) => {
      p.rng = { seed: "1", counter: 0 };
    }, /rng.seed: expected an integer/],
    ["generated length", (p) => {
      p.generated = new Uint8Array(2);
    }, /generated: 2 flags for 5 tokens/],
    ["generated value", (p) => {
      p.generated = new Uint8Array([0, 0, 2, 0, 0]);
    }, /generated\[2\]: 2/],
    ["pendingBytes size", (p) => {
      (p.text as Record<string, unknown>).pendingBytes = new Uint8Array(2000);
    }, /text.pendingBytes: 2000 bytes/],
    ["sampling NaN", (p) => {
      p.sampling = { temperature: NaN };
    }, /sampling.temperature: NaN/],
    ["sampling proto", (p) => {
      p.sampling = JSON.parse('{"__proto__": {"x": 1}}');
    }, /__proto__/],
    ["layers not array", (p) => {
      p.layers = {};
    }, /layers: expected an array, got a map/],
    ["shape not ints", (p) => {
      (p.layers as { shape: unknown }[])[0].shape = [2, "8", 4];
    }, /state layer 0: shape/],
    ["createdAt", (p) => {
      p.createdAt = -5;
    }, /createdAt/],
    ["payload version", (p) => {
      p.version = 1;
    }, /payload: version is number 1, the envelope's is 3/],
  ];
  for (const [name, mod, re] of cases) {
    const e = await rejects(decodeSession(await craft(mod), dec), "state_invalid", re).catch(
      (err) => {
        throw new Error(`case "${name}": ${err.message}`);
      },
    );
    assert.equal(toHttpError(e).status, 400, name);
  }
});

Deno.test("codec: malformed envelopes and bytes (400)", async () => {
  const good = await encodeSession(makeSnapshot(config), enc);
  await rejects(decodeSession(new Uint8Array(0), dec), "state_invalid", /empty/);
  await rejects(
    decodeSession(good.subarray(0, good.length - 1), dec),
    "state_invalid",
    /truncated/,
  );
  const trailing = new Uint8Array(good.length + 1);
  trailing.set(good);
  await rejects(decodeSession(trailing, dec), "state_invalid", /1 trailing bytes/);
  await rejects(decodeSession(pack([1, 2]), dec), "state_invalid", /envelope: expected a map/);
  await rejects(
    decodeSession(pack({ format: "x", version: 1 }), dec),
    "state_invalid",
    /not a TNL Edge session state/,
  );
  await rejects(
    decodeSession(
      pack({ format: "tnl-edge-session", version: 4, alg: "none", payload: new Uint8Array() }),
      dec,
    ),
    "state_invalid",
    /unsupported version number 4 \(this server reads versions 1, 2, 3\)/,
  );
  await rejects(
    decodeSession(
      pack({ format: "tnl-edge-session", version: 1, alg: "RS256", payload: new Uint8Array() }),
      dec,
    ),
    "state_invalid",
    /alg/,
  );
  // msgpack extension types are refused, in the envelope and in the payload.
  const withExt = new Uint8Array([0x81, 0xa1, 0x61, 0xd4, 0x01, 0x00]);
  await rejects(decodeSession(withExt, dec), "state_invalid", /extension type/);
  await rejects(
    decodeSession(await envelope(withExt), dec),
    "state_invalid",
    /state payload: msgpack extension type/,
  );
  // Oversized input.
  await rejects(
    decodeSession(good, { ...dec, maxBytes: good.length - 1 }),
    "state_invalid",
    /exceeds the limit/,
  );
  assert.ok((await decodeSession(good, { ...dec, maxBytes: good.length })).id);
});

Deno.test("codec: encode refuses snapshots that could never decode", async () => {
  const s = makeSnapshot(config);
  await assert.rejects(
    encodeSession({ ...s, id: "a/b" }, enc),
    (e: TnlError) => e.code === "internal",
  );
  await assert.rejects(encodeSession({ ...s, sampling: { t: Infinity } }, enc), /sampling.t/);
  await assert.rejects(
    encodeSession(s, { ...enc, config: tinyConfig({ linear_use_lrpe_list: [0, 0, 0] }) }),
    /layer 0/,
  );
  await assert.rejects(encodeSession({ ...s, generation: 1.5 }, enc), /generation/);
  const nan = makeSnapshot(config);
  nan.state.layers[2][5] = NaN;
  await assert.rejects(encodeSession(nan, enc), /layer 2: non-finite value NaN at index 5/);
  // Only a backend's own mark skips the scan; an explicit false (or none) scans.
  nan.state.finite = false;
  await assert.rejects(encodeSession(nan, enc), /layer 2: non-finite value NaN at index 5/);
  await assert.rejects(encodeSession({ ...s, pending: 3 }, enc), /not the last history token/);
  await assert.rejects(
    encodeSession({ ...s, state: { ...s.state, position: 9 } }, enc),
    /position 9 but 5 history tokens/,
  );
  await assert.rejects(encodeSession({ ...s, generated: new Uint8Array(2) }, enc), /generated/);
  // A Map logit bias is stored as a map with string keys; undefined fields are left out.
  const s2 = { ...s, sampling: { logitBias: new Map([[3, 1]]), seed: undefined } };
  const d = await decodeSession(await encodeSession(s2, enc), dec);
  assert.deepEqual(d.sampling, { logitBias: { "3": 1 } });
});

Deno.test("codec: sizes, digest and status mapping", async () => {
  const cfg = await loadConfig(`${DEFAULT_MODEL_DIR}config.json`);
  // 6 layers: [2,256,128] and 5 × [2,128,128], f32.
  assert.equal(stateByteSize(cfg), (2 * 256 * 128 + 5 * 2 * 128 * 128) * 4);
  assert.equal(defaultMaxStateBytes(cfg), stateByteSize(cfg) + 17 * 1024 * 1024);
  const s = { ...makeSnapshot(config), state: createState(config) };
  s.state.position = 4;
  const bytes = await encodeSession(s, enc);
  assert.match(await sessionDigest(bytes), /^[0-9a-f]{64}$/);
  assert.equal(
    await sessionDigest(new TextEncoder().encode("abc")),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
  assert.equal(toHttpError(new TnlError("state_invalid", "x")).status, 400);
  assert.equal(toHttpError(new TnlError("state_signature", "x")).status, 401);
  assert.equal(toHttpError(new TnlError("state_mismatch", "x")).status, 422);
  assert.equal(toHttpError(new TnlError("backend_unavailable", "x")).status, 503);
  assert.equal(toHttpError(new TnlError("conflict", "x")).status, 409);
});
