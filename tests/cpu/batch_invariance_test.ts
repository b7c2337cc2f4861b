/**
 * Batch invariance of the CPU backend (issue 14, item 2): a sequence decoded in a batch gets
 * bit-for-bit the logits, states and sampled tokens it gets alone, whatever the batch's size and
 * composition, for every stored weight dtype.
 */

import assert from "node:assert/strict";
import { CpuBackend } from "../../src/cpu/mod.ts";
import { Engine, type GenerateRequest } from "../../src/engine/engine.ts";
import { loadConfig } from "../../src/model/config.ts";
import { randomSource } from "../../src/model/random_weights.ts";
import type { ModelState } from "../../src/model/state.ts";
import { openSafetensors } from "../../src/model/weights/safetensors.ts";
import { Tokenizer } from "../../src/tokenizer/tokenizer.ts";
import { DEFAULT_MODEL_DIR } from "../fixtures.ts";

const config = await loadConfig(DEFAULT_MODEL_DIR + "config.json");

async function defaultBackend(): Promise<CpuBackend> {
  const src = await openSafetensors(DEFAULT_MODEL_DIR + "model.safetensors");
  try {
    return await CpuBackend.load(src, config, "default");
  } finally {
    src.close();
  }
}

/** Bit patterns equal (NaN-safe, -0 ≠ +0). */
function assertBits(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length, what);
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < ua.length; i++) {
    if (ua[i] !== ub[i]) assert.fail(`${what}: element ${i} is ${a[i]}, alone ${b[i]}`);
  }
}

function ids(n: number, seed: number): Int32Array {
  let s = seed;
  return Int32Array.from({ length: n }, () => (s = (s * 1103515245 + 12345) >>> 0) % 4000 + 3);
}

Deno.test("cpu batch invariance: decode logits and states of every batch size equal batch 1", async () => {
  const sources: [string, CpuBackend][] = [["default model (bf16)", await defaultBackend()]];
  // The other stored dtypes (and int8), on a random model with the default model's shapes.
  for (const dtype of ["F32", "F16"] as const) {
    const src = randomSource(config, { dtype, fast: dtype === "F16" });
    sources.push([dtype, await CpuBackend.load(src, config, dtype)]);
  }
  sources.push([
    "int8",
    await CpuBackend.load(randomSource(config, { fast: true }), config, "int8", {
      quantize: "int8",
    }),
  ]);
  const V = config.vocabSize;
  for (const [name, backend] of sources) {
    const B = 9;
    // Sequences of different lengths (prefill of odd and even chunks), one token each then.
    const prompts = Array.from({ length: B }, (_, i) => ids(1 + i * 3, i + 1));
    const next = ids(B, 99);
    const alone: { logits: Float32Array; state: ModelState }[] = [];
    for (let i = 0; i < B; i++) {
      const st = backend.allocState();
      await backend.prefill(st, prompts[i], "none");
      const logits = await backend.decode([st], next.subarray(i, i + 1));
      alone.push({ logits, state: await backend.readState(st) });
    }
    // Batches of `size` sequences starting at `first` in the set (odd and even sizes).
    for (const [size, first] of [[2, 0], [3, 5], [8, 1], [9, 0]]) {
      const members = Array.from({ length: size }, (_, j) => (first + j) % B);
      const resident = members.map(() => backend.allocState());
      for (let j = 0; j < size; j++) {
        await backend.prefill(resident[j], prompts[members[j]], "none");
      }
      const out = await backend.decode(resident, Int32Array.from(members, (m) => next[m]));
      for (let j = 0; j < size; j++) {
        const m = members[j];
        const what = `${name}, batch ${size} from ${first}, sequence ${m}`;
        assertBits(out.subarray(j * V, (j + 1) * V), alone[m].logits, `${what} logits`);
        const host = await backend.readState(resident[j]);
        for (let l = 0; l < config.numLayers; l++) {
          assertBits(host.layers[l], alone[m].state.layers[l], `${what} layer ${l} state`);
        }
      }
    }
    await backend.dispose();
  }
});

Deno.test({
  name: "cpu batch invariance: 24 concurrent seeded requests give exactly their solo tokens",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const tokenizer = await Tokenizer.load(DEFAULT_MODEL_DIR + "tokenizer.model");
    const backend = await defaultBackend();
    const engine = new Engine(backend, tokenizer, { stepsPerSync: 8 });
    try {
      const prompts = ["First Citizen:", "ROMEO:", "JULIET:\nO", "KING", "To be", "MENENIUS:"];
      // The case (prompt "First Citizen:", seed 1002, 200 tokens) and 23 more.
      const reqs: Omit<GenerateRequest, "session">[] = Array.from({ length: 24 }, (_, i) => ({
        prompt: tokenizer.encode(prompts[i % prompts.length]),
        sampling: { temperature: 0.8 + (i % 5) * 0.1, seed: 1002 + i, topK: i % 3 ? 40 : 0 },
        maxTokens: i === 0 ? 200 : 64 + (i * 7) % 60,
        stopAtEos: false,
        logprobs: i % 4 === 0 ? 2 : undefined,
      }));
      const run = async (r: Omit<GenerateRequest, "session">) => {
        const tokens: number[] = [];
        const logprobs: number[] = [];
        for await (const e of engine.generate({ ...r, session: engine.newSession() })) {
          if (e.type !== "token") continue;
          tokens.push(...e.tokens);
          for (const lp of e.logprobs ?? []) logprobs.push(lp.logprob);
        }
        return { tokens, logprobs };
      };
      const alone: { tokens: number[]; logprobs: number[] }[] = [];
      for (const r of reqs) alone.push(await run(r));
      const together = await Promise.all(reqs.map(run));
      together.forEach((t, i) => {
        assert.equal(t.tokens.length, reqs[i].maxTokens, `request ${i} ran to its length`);
        assert.deepEqual(t.tokens, alone[i].tokens, `request ${i} tokens`);
        assert.deepEqual(t.logprobs, alone[i].logprobs, `request ${i} log-probabilities`);
      });
    } finally {
      await engine.close(true);
      await backend.dispose();
    }
  },
});

Deno.test("cpu batch invariance: prefillMany gives every state the bits of one prefill per item", async () => {
  const backends: [string, CpuBackend][] = [
    ["default model (bf16)", await defaultBackend()],
    [
      "int8, 2 threads",
      await CpuBackend.load(randomSource(config, { fast: true }), config, "int8", {
        quantize: "int8",
        threads: 2,
      }),
    ],
    [
      "js reference, chunk 40",
      await CpuBackend.load(randomSource(config), config, "js", {
        kernels: "js",
        chunk: 40,
      }),
    ],
  ];
  try {
    for (const [name, b] of backends) {
      // Lengths that share a pass, fill one past a chunk, exceed a chunk; one state twice; states
      // that already hold a prompt (LRPE positions past 0).
      const lengths = [1, 5, 17, 33, 2, 300, 7, 64];
      const owner = [0, 1, 2, 3, 2, 5, 4, 6];
      const alone = Array.from({ length: 7 }, () => b.allocState());
      const together = Array.from({ length: 7 }, () => b.allocState());
      for (let s = 0; s < 7; s += 2) {
        await b.prefill(alone[s], ids(9 + s, 50 + s), "none");
        await b.prefill(together[s], ids(9 + s, 50 + s), "none");
      }
      const tokens = lengths.map((n, i) => ids(n, 100 + i));
      for (const [i, t] of tokens.entries()) await b.prefill(alone[owner[i]], t, "none");
      await b.prefillMany!(tokens.map((t, i) => ({ state: together[owner[i]], tokens: t })));
      for (let s = 0; s < 7; s++) {
        const [x, y] = [await b.readState(together[s]), await b.readState(alone[s])];
        assert.equal(x.position, y.position, `${name}: position of state ${s}`);
        x.layers.forEach((l, k) => assertBits(l, y.layers[k], `${name}: state ${s}, layer ${k}`));
      }
      // And what follows: the next token's logits.
      const next = Int32Array.from({ length: 7 }, (_, s) => 10 + s);
      assertBits(await b.decode(together, next), await b.decode(alone, next), `${name}: decode`);
      // A bad item is refused before any state changes.
      const before = await b.readState(together[0]);
      await assert.rejects(() =>
        b.prefillMany!([
          { state: together[0], tokens: ids(4, 1) },
          { state: together[1], tokens: Int32Array.of(config.vocabSize) },
        ])
      );
      const after = await b.readState(together[0]);
      assert.equal(after.position, before.position, `${name}: no state moved`);
      after.layers.forEach((l, k) => assertBits(l, before.layers[k], `${name}: layer ${k} kept`));
    }
  } finally {
    for (const [, b] of backends) await b.dispose();
  }
});
