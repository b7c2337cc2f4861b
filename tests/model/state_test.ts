import assert from "node:assert/strict";
import { loadConfig } from "../../src/model/config.ts";
import { buffersOf, stateBytes, stateOverBytes } from "../../src/model/state.ts";
import { DEFAULT_MODEL_DIR } from "../fixtures.ts";

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
