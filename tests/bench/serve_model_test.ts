/** Serving benchmark model directories: config, streamed safetensors and the extended tokenizer. */

import assert from "node:assert/strict";
import { englishPrompt, englishWords } from "../../bench/serve.ts";
import {
  DEFAULT_MODEL_DIR,
  extendTokenizer,
  fillerPiece,
  writeShapeModel,
} from "../../bench/serve_model.ts";
import { loadModel } from "../../src/load.ts";
import { loadConfig } from "../../src/model/config.ts";
import { randomSource, shapeConfig } from "../../src/model/random_weights.ts";
import { openSafetensors } from "../../src/model/weights/safetensors.ts";
import { Tokenizer } from "../../src/tokenizer/tokenizer.ts";

const TINY = {
  decoder_embed_dim: 64,
  hidden_dim: 64,
  decoder_layers: 2,
  decoder_attention_heads: 2,
  glu_dim: 96,
};
const TEXT = "The quick brown fox jumps over the lazy dog, again and again.";

Deno.test("extendTokenizer: full vocabulary, English encodes as the base, fillers decode", async () => {
  const base = await Tokenizer.load(`${DEFAULT_MODEL_DIR}tokenizer.model`);
  const bytes = await Deno.readFile(`${DEFAULT_MODEL_DIR}tokenizer.model`);
  const big = await Tokenizer.load(extendTokenizer(bytes, 64000));
  assert.equal(big.vocabSize, 64000);
  assert.equal(big.eosId, base.eosId);
  const ids = big.encode(TEXT);
  assert.deepEqual(Array.from(ids), Array.from(base.encode(TEXT)));
  assert.ok(ids.length > TEXT.split(" ").length, "English words take several pieces");
  assert.equal(big.decode(Int32Array.of(4096, 63999)), fillerPiece(0) + fillerPiece(59903));
  assert.notEqual(fillerPiece(0), fillerPiece(20992));
  assert.throws(() => extendTokenizer(bytes, 100), /smaller than the base/);
});

Deno.test("writeShapeModel: a directory the server's loader reads, weights as randomSource", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const w = await writeShapeModel(dir, TINY, { vocab_size: 5000 });
    const want = shapeConfig(TINY, { vocab_size: 5000 });
    const got = await loadConfig(`${dir}/config.json`);
    for (const k of ["vocabSize", "embedDim", "numLayers", "numHeads", "gluDim", "eosTokenId"]) {
      assert.deepEqual(got[k as keyof typeof got], want[k as keyof typeof want], k);
    }
    assert.deepEqual(got.lrpe, want.lrpe);
    assert.equal(w.vocabSize, 5000);
    // Every tensor's bytes are the fast random weights, streamed one by one.
    const src = randomSource(want, { dtype: "BF16", fast: true });
    const file = await openSafetensors(`${dir}/model.safetensors`);
    try {
      assert.deepEqual([...file.tensors.keys()].sort(), [...src.tensors.keys()].sort());
      for (const name of src.tensors.keys()) {
        assert.deepEqual(await file.read(name), await src.read(name), name);
      }
      assert.equal((await Deno.stat(`${dir}/model.safetensors`)).size, w.weightBytes);
    } finally {
      file.close();
    }
    const model = await loadModel(dir, { backend: "cpu" });
    try {
      assert.equal(model.tokenizer.vocabSize, 5000);
      let n = 0;
      for await (
        const c of model.generate("Hello there", { maxTokens: 5, temperature: 0.8, seed: 1 })
      ) n += c.tokens.length;
      assert.ok(n > 0);
    } finally {
      await model.dispose();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("englishPrompt: the most words within the token budget", async () => {
  const tok = await Tokenizer.load(`${DEFAULT_MODEL_DIR}tokenizer.model`);
  const p = englishPrompt(tok, 200, 3);
  assert.equal(p.tokens, tok.encode(p.text).length);
  assert.ok(p.tokens <= 200);
  const words = p.text.split(" ").length;
  assert.ok(tok.encode(englishWords(words + 1, 3)).length > 200, "one more word would not fit");
  assert.equal(englishWords(8, 5).split(" ").length, 8);
  assert.equal(englishWords(8, 5), englishWords(8, 5));
});
