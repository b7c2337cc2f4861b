/**
 * `docs/state_format.md` against a real state: a session of the default model (sampled, with a
 * logit bias and a seed, signed) is encoded by the codec and decoded with an independent msgpack
 * library (`@msgpack/msgpack`, a test-only dependency); every field the document lists is checked,
 * and the document's tables are the lists of keys checked.
 * @module
 */

import assert from "node:assert/strict";
// deno-lint-ignore no-import-prefix
import { decode } from "npm:@msgpack/msgpack@3.1.3";
import { loadModel } from "../../src/load.ts";
import { stateKeyDim } from "../../src/model/config.ts";
import { encodeSession } from "../../src/state/codec.ts";

const DOC = new URL("../../docs/state_format.md", import.meta.url);

/** The first-column keys of the first table after `heading` in the document. */
function tableKeys(doc: string, heading: string): string[] {
  const at = doc.indexOf(heading);
  assert.ok(at >= 0, `the document has ${heading}`);
  const lines = doc.slice(at).split("\n");
  const start = lines.findIndex((l) => l.startsWith("| "));
  const keys: string[] = [];
  for (let i = start + 2; i < lines.length && lines[i].startsWith("|"); i++) {
    keys.push(/^\| `([^`]+)`/.exec(lines[i])![1]);
  }
  return keys;
}

function le<T extends Float32Array | Int32Array>(bytes: Uint8Array, Ctor: new (n: number) => T) {
  const out = new Ctor(bytes.length / 4);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < out.length; i++) {
    out[i] = out instanceof Float32Array ? dv.getFloat32(4 * i, true) : dv.getInt32(4 * i, true);
  }
  return out;
}

Deno.test("state format: every documented field, read with @msgpack/msgpack", async () => {
  const doc = await Deno.readTextFile(DOC);
  const model = await loadModel(undefined, { backend: "cpu" });
  try {
    const engine = model.engine();
    const session = engine.newSession();
    const sampling = { temperature: 0.8, topK: 20, seed: 11, logitBias: { "5": -3 } };
    for await (
      const _ of engine.generate({
        session,
        prompt: model.tokenizer.encode("ROMEO:"),
        sampling,
        maxTokens: 6,
      })
    ) { /* run to the end */ }
    const snap = session.toSnapshot();
    const secret = "doc-test-secret";
    const bytes = await encodeSession(snap, {
      config: model.config,
      modelFingerprint: model.fingerprint,
      tokenizerFingerprint: model.tokenizer.fingerprint,
      secret,
    });

    // Envelope.
    const env = decode(bytes) as Record<string, unknown>;
    assert.deepEqual(Object.keys(env).sort(), tableKeys(doc, "## Envelope").sort());
    assert.equal(env.format, "tnl-edge-session");
    assert.equal(env.version, 3);
    assert.equal(env.alg, "HS256");
    const payload = env.payload as Uint8Array;
    assert.ok(payload instanceof Uint8Array && env.sig instanceof Uint8Array);
    assert.equal((env.sig as Uint8Array).length, 32);
    // Signature: HMAC-SHA256 over the payload bytes, keyed with the secret's UTF-8 bytes.
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
        (env.sig as Uint8Array).slice(),
        payload.slice(),
      ),
    );

    // Payload: exactly the documented keys.
    const p = decode(payload) as Record<string, unknown>;
    assert.deepEqual(Object.keys(p).sort(), tableKeys(doc, "## Payload").sort());
    assert.equal(p.format, "tnl-edge-session");
    assert.equal(p.version, 3);
    assert.equal(p.lossy, null); // an exact run's f32 state
    assert.equal(p.modelFingerprint, model.fingerprint);
    assert.equal(p.tokenizerFingerprint, model.tokenizer.fingerprint);
    assert.match(p.modelFingerprint as string, /^[0-9a-f]{64}$/);
    const tokBytes = await Deno.readFile(new URL("tokenizer.model", "file://" + model.dir));
    const tokHash = new Uint8Array(await crypto.subtle.digest("SHA-256", tokBytes));
    assert.equal(
      p.tokenizerFingerprint,
      Array.from(tokHash, (b) => b.toString(16).padStart(2, "0")).join(""),
    );
    assert.equal(p.id, session.id);
    assert.ok(Number.isSafeInteger(p.generation) && (p.generation as number) >= 0);

    // History and the invariants.
    const tokens = p.tokens as { dtype: string; count: number; data: Uint8Array };
    assert.deepEqual(Object.keys(tokens).sort(), ["count", "data", "dtype"]);
    assert.equal(tokens.dtype, "i32");
    const ids = le(tokens.data, Int32Array);
    assert.equal(ids.length, tokens.count);
    assert.deepEqual([...ids], [...snap.tokens!]);
    assert.equal(p.position, tokens.count - ((p.pending as number) >= 0 ? 1 : 0));
    assert.equal(p.pending, ids[ids.length - 1]);
    const generated = p.generated as Uint8Array;
    assert.equal(generated.length, tokens.count);
    const promptLen = model.tokenizer.encode("ROMEO:").length;
    assert.deepEqual(
      [...generated],
      ids.length ? [...ids].map((_, i) => (i < promptLen ? 0 : 1)) : [],
    );

    // Sampling: the documented keys, every one but logitBias and seed always present.
    const s = p.sampling as Record<string, unknown>;
    const documented = tableKeys(doc, "### `sampling`");
    assert.deepEqual(Object.keys(s).sort(), documented.slice().sort());
    assert.equal(s.temperature, 0.8);
    assert.equal(s.topK, 20);
    assert.equal(s.seed, 11);
    assert.deepEqual(s.logitBias, { "5": -3 });
    for (const k of ["topP", "minP", "repetitionPenalty", "presencePenalty", "frequencyPenalty"]) {
      assert.equal(typeof s[k], "number", k);
    }

    const rng = p.rng as Record<string, number>;
    assert.deepEqual(Object.keys(rng).sort(), ["counter", "seed"]);
    assert.equal(rng.seed, 11);
    assert.ok(rng.counter > 0, "sampled tokens drew random numbers");
    const text = p.text as Record<string, unknown>;
    assert.deepEqual(Object.keys(text).sort(), ["heldStop", "pendingBytes"]);
    assert.ok(text.pendingBytes instanceof Uint8Array && typeof text.heldStop === "string");
    for (const k of ["createdAt", "updatedAt"]) {
      assert.ok(typeof p[k] === "number" && Math.abs((p[k] as number) - Date.now()) < 3_600_000, k);
    }

    // Layers (the default encoding): [heads, dk, dv] f32 little-endian, the state exactly.
    const layers = p.layers as {
      dtype: string;
      shape: number[];
      compression: string;
      data: Uint8Array;
    }[];
    const c = model.config;
    assert.equal(layers.length, c.numLayers);
    layers.forEach((l, i) => {
      const layerKeys = tableKeys(doc, "### `layers`").filter((k) => k !== "scales"); // q8 only
      assert.deepEqual(Object.keys(l).sort(), layerKeys.sort());
      assert.equal(l.dtype, "f32");
      assert.equal(l.compression, "none");
      assert.deepEqual(l.shape, [c.numHeads, stateKeyDim(c, i), c.headDim]);
      assert.equal(stateKeyDim(c, i), c.lrpe[i] ? 2 * c.headDim : c.headDim);
      const values = le(l.data, Float32Array);
      assert.equal(values.length, l.shape[0] * l.shape[1] * l.shape[2]);
      assert.deepEqual(values, snap.state.layers[i]);
    });
  } finally {
    await model.dispose();
  }
});
