/**
 * States in the wasm arena (`arenaStates`): the attention kernels update them in place instead of
 * copying each layer into the arena and back, with the same bits as heap states (prefill, batched
 * decode mixing arena and heap states, one and two threads); a released state comes back zero.
 */

import assert from "node:assert/strict";
import { CpuBackend } from "../../src/cpu/mod.ts";
import { InputError } from "../../src/errors.ts";
import { parseConfig } from "../../src/model/config.ts";
import { randomSource } from "../../src/model/random_weights.ts";

function sameBits(a: Float32Array, b: Float32Array): boolean {
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  return ua.length === ub.length && ua.every((v, i) => v === ub[i]);
}

/** An LRPE layer and a plain one; 2 heads of 64 (the wasm attention needs multiples of 32). */
const config = parseConfig({
  vocab_size: 1000,
  decoder_embed_dim: 128,
  hidden_dim: 128,
  decoder_layers: 2,
  decoder_attention_heads: 2,
  glu_dim: 344,
  linear_use_lrpe_list: [1, 0],
  linear_act_fun: "swish",
  bias: true,
});

/** Whether a state's layers are views of a larger memory (the arena), not buffers of their own. */
const inArena = (s: { layers: Float32Array[] }) =>
  s.layers.every((l) => l.buffer.byteLength > l.byteLength);

const ids = Int32Array.from({ length: 77 }, (_, i) => 3 + (i * 37) % 990);

/** Prefill 3 sequences, decode them together 4 steps; logits and final states. */
async function run(arenaStates: number, threads: number) {
  const b = await CpuBackend.load(randomSource(config, { dtype: "BF16" }), config, "r", {
    arenaStates,
    threads,
    chunk: 32,
  });
  try {
    const states = [b.allocState(), b.allocState(), b.allocState()];
    const prefill: Float32Array[] = [];
    for (const [i, s] of states.entries()) {
      prefill.push(await b.prefill(s, ids.subarray(i, 40 + 10 * i), "last"));
    }
    const decoded: Float32Array[] = [];
    for (let k = 0; k < 4; k++) {
      decoded.push(await b.decode(states, Int32Array.from([5 + k, 9, 11 + 2 * k])));
    }
    const hosts = await Promise.all(states.map((s) => b.readState(s)));
    return { prefill, decoded, hosts };
  } finally {
    await b.dispose();
  }
}

Deno.test("cpu arena states: in place, bit-identical to heap states (mixed batch, 1 and 2 threads)", async () => {
  const heap = await run(0, 1);
  for (const [arenaStates, threads] of [[2, 1], [2, 2], [8, 1]]) {
    const r = await run(arenaStates, threads);
    const what = `${arenaStates} arena states, ${threads} threads`;
    r.prefill.forEach((p, i) => assert.ok(sameBits(p, heap.prefill[i]), `${what}: prefill ${i}`));
    r.decoded.forEach((d, k) => assert.ok(sameBits(d, heap.decoded[k]), `${what}: step ${k}`));
    r.hosts.forEach((h, i) => {
      assert.equal(h.position, heap.hosts[i].position);
      h.layers.forEach((l, j) =>
        assert.ok(sameBits(l, heap.hosts[i].layers[j]), `${what}: state ${i} layer ${j}`)
      );
    });
  }
});

Deno.test("cpu arena states: allocation, reuse of a released state (zeroed), limits", async () => {
  const b = await CpuBackend.load(randomSource(config, { dtype: "BF16" }), config, "r", {
    arenaStates: 1,
  });
  try {
    const a = b.model.allocState(), h = b.model.allocState();
    assert.ok(inArena(a), "the first state is in the arena");
    assert.ok(!inArena(h), "past arenaStates, on the heap");
    b.model.forward(a, ids, "none");
    assert.ok(a.layers[0].some((v) => v !== 0));
    b.model.releaseState(a);
    b.model.releaseState(a); // twice: no second reuse
    b.model.releaseState(h); // a heap state: nothing to do
    const again = b.model.allocState();
    assert.equal(again.layers[0].byteOffset, a.layers[0].byteOffset, "the slot is reused");
    assert.equal(again.position, 0);
    assert.ok(again.layers.every((l) => l.every((v) => v === 0)), "zeroed");
    assert.ok(!inArena(b.model.allocState()), "one slot, still in use");
    const fresh = await b.forward(
      { position: 0, layers: again.layers.map((l) => new Float32Array(l.length)) },
      ids,
      "last",
    );
    assert.ok(sameBits(b.model.forward(again, ids, "last"), fresh), "a reused slot runs as new");
  } finally {
    await b.dispose();
  }
  await assert.rejects(
    () => CpuBackend.load(randomSource(config), config, "r", { arenaStates: -1 }),
    InputError,
  );
});
