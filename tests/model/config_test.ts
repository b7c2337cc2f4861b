/** Config parsing: fields, derived values, and errors that name the field and the file. */

import assert from "node:assert/strict";
import {
  alibiSlopes,
  layerDecay,
  loadConfig,
  parseConfig,
  stateKeyDim,
} from "../../src/model/config.ts";
import { ConfigError } from "../../src/errors.ts";
import { DEFAULT_MODEL_DIR } from "../fixtures.ts";

const base = {
  vocab_size: 512,
  decoder_embed_dim: 128,
  hidden_dim: 128,
  decoder_layers: 3,
  decoder_attention_heads: 4,
  glu_dim: 352,
  linear_use_lrpe_list: [1, 0, 0],
  linear_act_fun: "swish",
  norm_type: "simplermsnorm",
};

Deno.test("config: the default model", async () => {
  const c = await loadConfig(DEFAULT_MODEL_DIR + "config.json");
  assert.equal(c.vocabSize, 4096);
  assert.equal(c.embedDim, 256);
  assert.equal(c.numHeads, 2);
  assert.equal(c.headDim, 128);
  assert.equal(c.gluDim, 704);
  assert.deepEqual(c.lrpe, [true, false, false, false, false, false]);
  assert.equal(c.embedScale, 16);
  assert.equal(c.activation, "silu");
  assert.equal(stateKeyDim(c, 0), 256);
  assert.equal(stateKeyDim(c, 1), 128);
});

Deno.test("config: ALiBi slopes follow the official rule, powers of two and others", () => {
  // Power of two: start = 2^(-8/n), geometric.
  assert.deepEqual(alibiSlopes(8), Array.from({ length: 8 }, (_, i) => 2 ** (-(i + 1))));
  const s6 = alibiSlopes(6);
  const s4 = alibiSlopes(4), s8 = alibiSlopes(8);
  assert.deepEqual(s6, [...s4, s8[0], s8[2]]);
  assert.equal(alibiSlopes(12).length, 12);
  assert.equal(alibiSlopes(1)[0], 2 ** -8);
});

Deno.test("config: per-layer decay", () => {
  const s = alibiSlopes(2);
  const d0 = layerDecay(s, 0, 6), d5 = layerDecay(s, 5, 6);
  assert.ok(Math.abs(d0[0] - Math.exp(-s[0] * (1 + 1e-5))) < 1e-15);
  assert.ok(Math.abs(d5[0] - Math.exp(-s[0] * 1e-5)) < 1e-15);
  assert.deepEqual(layerDecay(s, 0, 1), s.map((x) => Math.exp(-x * (1 + 1e-5))));
});

Deno.test("config: glu_dim -1, no_scale_embedding, layernorm, activations", () => {
  const c = parseConfig({
    ...base,
    glu_dim: -1,
    no_scale_embedding: true,
    norm_type: "layernorm",
    linear_act_fun: "1+elu",
  });
  assert.equal(c.gluDim, 128);
  assert.equal(c.embedScale, 1);
  assert.equal(c.normType, "layernorm");
  assert.equal(c.activation, "1+elu");
  for (const a of ["relu", "elu", "sigmoid", "gelu", "silu"]) {
    assert.equal(parseConfig({ ...base, linear_act_fun: a }).activation, a);
  }
});

Deno.test("config: errors name the field and the file", () => {
  const cases: [Record<string, unknown>, string][] = [
    [{ ...base, decoder_attention_heads: 3 }, "decoder_attention_heads"],
    [{ ...base, linear_use_lrpe_list: [1, 0] }, "linear_use_lrpe_list"],
    [{ ...base, linear_use_lrpe_list: [1, 0, 2] }, "linear_use_lrpe_list"],
    [{ ...base, linear_act_fun: "tanh" }, "linear_act_fun"],
    [{ ...base, vocab_size: undefined }, "vocab_size"],
    [{ ...base, vocab_size: "512" }, "vocab_size"],
    [{ ...base, hidden_dim: 0 }, "hidden_dim"],
    [{ ...base, glu_dim: -2 }, "glu_dim"],
    [{ ...base, eos_token_id: 9999 }, "eos_token_id"],
    [{ ...base, bias: "no" }, "bias"],
    [{ ...base, model_type: "llama" }, "model_type"],
  ];
  for (const [json, field] of cases) {
    assert.throws(
      () => parseConfig(JSON.parse(JSON.stringify(json)), "/models/x/config.json"),
      (e: unknown) =>
        e instanceof ConfigError && e.field === field &&
        e.message.includes("/models/x/config.json") &&
        e.message.includes(field),
      field,
    );
  }
  assert.throws(() => parseConfig([], "c.json"), ConfigError);
  assert.throws(() => parseConfig(null, "c.json"), ConfigError);
});

Deno.test("config: unreadable and malformed files", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(() => loadConfig(`${dir}/missing.json`), ConfigError);
    await Deno.writeTextFile(`${dir}/bad.json`, "{ not json");
    await assert.rejects(
      () => loadConfig(`${dir}/bad.json`),
      (e: unknown) => e instanceof ConfigError && e.message.includes("bad.json"),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
