import assert from "node:assert/strict";
import { loadConfig } from "../../src/model/config.ts";
import {
  buffersOf,
  copyFinite,
  firstNonFinite,
  stateBytes,
  stateOverBytes,
} from "../../src/model/state.ts";
import { DEFAULT_MODEL_DIR } from "../fixtures.ts";

Deno.test("copyFinite copies every bit pattern and finds NaN and ±Infinity anywhere", () => {
  const specials = [0, -0, 1e-45, -1e-45, 3.4e38, -3.4e38, 1, -2.5, 1.17549435e-38];
  const src = new Float32Array(1001);
  src.forEach((_, i) => (src[i] = specials[i % specials.length] * (i + 1)));
  const dst = new Uint32Array(src.length);
  assert.equal(copyFinite(new Uint32Array(src.buffer), dst), firstNonFinite(src) < 0);
  assert.deepEqual(dst, new Uint32Array(src.buffer));
  for (const bad of [NaN, Infinity, -Infinity]) {
    for (const at of [0, 500, 1000]) {
      const s = src.slice();
      s[at] = bad;
      const d = new Uint32Array(s.length);
      assert.equal(copyFinite(new Uint32Array(s.buffer), d), false, `${bad} at ${at}`);
      assert.deepEqual(d, new Uint32Array(s.buffer));
    }
  }
  // A NaN's payload is copied as it is.
  const nan = Uint32Array.of(0x7fc00123, 0xffc00001);
  const out = new Uint32Array(2);
  assert.equal(copyFinite(nan, out), false);
  assert.deepEqual(out, nan);
});

Deno.test("stateOverBytes: layers are views of one buffer, in layer order; wrong sizes refused", async () => {
  const config = await loadConfig(DEFAULT_MODEL_DIR + "config.json");
  const bytes = new ArrayBuffer(stateBytes(config));
  new Float32Array(bytes).forEach((_, i, a) => (a[i] = i));
  const s = stateOverBytes(config, 7, bytes);
  assert.equal(s.position, 7);
  assert.deepEqual(buffersOf(s.layers), [bytes]);
  let at = 0;
  for (const l of s.layers) {
    assert.equal(l[0], at);
    at += l.length;
  }
  assert.equal(at * 4, bytes.byteLength);
  assert.throws(() => stateOverBytes(config, 0, new ArrayBuffer(8)), RangeError);
});
