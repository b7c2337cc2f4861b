/**
 * Kernel threads of the CPU backend: detected, and bit-identical to one thread (prefill, decode,
 * every stored dtype), since a split by output rows never changes a summation order.
 */

import assert from "node:assert/strict";
import { CpuBackend } from "../../src/cpu/mod.ts";
import { cpuThreads } from "../../src/cpu/model.ts";
import { WasmArena } from "../../src/cpu/wasm/mod.ts";
import { ACTIVATIONS } from "../../src/cpu/wasm/threads.ts";
import { activate } from "../../src/cpu/kernels.ts";
import type { StoredMatrix } from "../../src/cpu/stored.ts";
import { InputError } from "../../src/errors.ts";
import { loadConfig, parseConfig } from "../../src/model/config.ts";
import { randomSource } from "../../src/model/random_weights.ts";
import { createState } from "../../src/model/state.ts";
import { openSafetensors } from "../../src/model/weights/safetensors.ts";
import type { TensorSource } from "../../src/model/weights/source.ts";
import { DEFAULT_MODEL_DIR } from "../fixtures.ts";

function sameBits(a: Float32Array, b: Float32Array): boolean {
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  return ua.length === ub.length && ua.every((v, i) => v === ub[i]);
}

Deno.test("cpu threads: detected on this runtime; options checked", () => {
  assert.equal(WasmArena.threadsSupported(), true);
  assert.equal(cpuThreads({}), 1, "single-threaded unless asked");
  assert.equal(cpuThreads({ threads: 3 }), 3);
  assert.equal(cpuThreads({ threads: 3, kernels: "js" }), 1);
  assert.ok(cpuThreads({ threads: "auto" }) >= 1);
  assert.throws(() => cpuThreads({ threads: 0 }), InputError);
  assert.throws(() => cpuThreads({ threads: 1.5 }), InputError);
});

Deno.test("cpu threads: threaded prefill and decode are bit-identical to one thread", async () => {
  const defaultConfig = await loadConfig(DEFAULT_MODEL_DIR + "config.json");
  // Wide enough for the split to engage (it skips linears under 2^19 multiply-adds).
  const wide = parseConfig({
    vocab_size: 2000,
    decoder_embed_dim: 256,
    hidden_dim: 256,
    decoder_layers: 2,
    decoder_attention_heads: 2,
    glu_dim: 708,
    linear_use_lrpe_list: [1, 0],
    linear_act_fun: "swish",
    bias: true,
  });
  const cases: [string, typeof wide, () => Promise<TensorSource>, "none" | "int8"][] = [
    [
      "default model",
      defaultConfig,
      () => openSafetensors(DEFAULT_MODEL_DIR + "model.safetensors"),
      "none",
    ],
    ["f16 + bias", wide, () => Promise.resolve(randomSource(wide, { dtype: "F16" })), "none"],
    ["f32", wide, () => Promise.resolve(randomSource(wide, { dtype: "F32" })), "none"],
    ["int8", wide, () => Promise.resolve(randomSource(wide, { fast: true })), "int8"],
  ];
  const ids = Int32Array.from({ length: 301 }, (_, i) => 3 + (i * 131) % 1990);
  for (const [name, config, open, quantize] of cases) {
    const results: { logits: Float32Array; decoded: Float32Array; state: Float32Array[] }[] = [];
    for (const threads of [1, 2, 3]) {
      const src = await open();
      const b = await CpuBackend.load(src, config, name, { quantize, threads, chunk: 128 });
      src.close();
      try {
        assert.equal(b.model.threads, threads, `${name}: ${threads} threads running`);
        const st = createState(config);
        const logits = await b.forward(st, ids, "all");
        const resident = [b.allocState(), b.allocState(), b.allocState()];
        for (const [i, r] of resident.entries()) await b.prefill(r, ids.subarray(i, i + 5), "none");
        const decoded = await b.decode(resident, Int32Array.from([7, 8, 9]));
        results.push({ logits, decoded, state: st.layers });
      } finally {
        await b.dispose();
      }
    }
    for (let i = 1; i < results.length; i++) {
      assert.ok(
        sameBits(results[i].logits, results[0].logits),
        `${name}: prefill, ${i + 1} threads`,
      );
      assert.ok(
        sameBits(results[i].decoded, results[0].decoded),
        `${name}: decode, ${i + 1} threads`,
      );
      results[i].state.forEach((l, k) =>
        assert.ok(sameBits(l, results[0].state[k]), `${name}: state layer ${k}, ${i + 1} threads`)
      );
    }
  }
});

Deno.test("cpu threads: arena thread rules; a stopped pool leaves a working single-threaded arena", async () => {
  const plain = new WasmArena(1 << 16);
  assert.equal(await plain.startThreads(1), 1);
  await assert.rejects(() => plain.startThreads(2), /shared: true/);
  await assert.rejects(() => plain.startThreads(0), /threads must be/);
  const a = new WasmArena(8 << 20, { shared: true });
  assert.equal(a.shared, true);
  assert.equal(await a.startThreads(2), 2);
  await assert.rejects(() => a.startThreads(2), /already started/);
  const out = 512, inDim = 1024, T = 2;
  const w = a.allocU16(out * inDim), x = a.allocF32(T * inDim), y = a.allocF32(T * out);
  for (let i = 0; i < w.length; i++) w[i] = 0x3c00 + (i % 97); // bf16 around 2^-7
  for (let i = 0; i < x.length; i++) x[i] = ((i * 37) % 101) / 50 - 1;
  a.linear(x, T, w, null, out, inDim, y);
  const threaded = y.slice();
  a.stopThreads();
  a.stopThreads();
  assert.equal(a.threads, 1);
  y.fill(0);
  a.linear(x, T, w, null, out, inDim, y);
  assert.ok(sameBits(y, threaded));
});

Deno.test("cpu threads: threaded linears of every dtype at T = 1 and 3 (odd chunk ends) equal one thread", async () => {
  const out = 1003, inDim = 611; // above the threading threshold at T = 1; 1003 rows end mid-chunk
  const a = new WasmArena(out * inDim * 8 + (1 << 20), { shared: true });
  const f32 = a.allocF32(out * inDim), u16 = a.allocU16(out * inDim);
  const i8 = a.allocI8(out * inDim), sc = a.allocF32(out), bias = a.allocF32(out);
  for (let i = 0; i < f32.length; i++) f32[i] = ((i * 7919) % 2003) / 1000 - 1;
  for (let i = 0; i < u16.length; i++) u16[i] = 0x3c00 + (i % 97);
  for (let i = 0; i < i8.length; i++) i8[i] = ((i * 31) % 255) - 127;
  for (let o = 0; o < out; o++) [sc[o], bias[o]] = [1 / (o + 3), o / 100];
  const mats: StoredMatrix[] = [
    { dtype: "f32", rows: out, cols: inDim, data: f32 },
    { dtype: "bf16", rows: out, cols: inDim, data: u16 },
    { dtype: "f16", rows: out, cols: inDim, data: u16 },
    { dtype: "int8", rows: out, cols: inDim, data: i8, scales: sc },
  ];
  const x = a.allocF32(3 * inDim), y = a.allocF32(3 * out);
  for (let i = 0; i < x.length; i++) x[i] = ((i * 37) % 101) / 50 - 1;
  const single = new Map<string, Float32Array>();
  for (const m of mats) {
    for (const T of [1, 3]) {
      a.linear(x, T, m, bias, out, inDim, y);
      single.set(`${m.dtype} ${T}`, y.slice(0, T * out));
    }
  }
  assert.equal(await a.startThreads(2), 2);
  try {
    for (const m of mats) {
      for (const T of [1, 3]) {
        y.fill(NaN);
        a.linear(x, T, m, bias, out, inDim, y);
        assert.ok(
          sameBits(y.subarray(0, T * out), single.get(`${m.dtype} ${T}`)!),
          `${m.dtype} T ${T}`,
        );
      }
    }
  } finally {
    a.stopThreads();
  }
});

Deno.test("cpu threads: linear epilogues (q/k activation, the SGLU pair) equal linear then the element-wise op, every dtype, 1-3 threads", async () => {
  const out = 1003, inDim = 611; // rows end mid-chunk; the activation's row limit too
  const a = new WasmArena(2 * out * inDim * 8 + (1 << 20), { shared: true });
  const mats = (k: number): StoredMatrix[] => {
    const f32 = a.allocF32(out * inDim), u16 = a.allocU16(out * inDim);
    const i8 = a.allocI8(out * inDim), sc = a.allocF32(out);
    for (let i = 0; i < f32.length; i++) f32[i] = ((i * 7919 + k) % 2003) / 1000 - 1;
    for (let i = 0; i < u16.length; i++) {
      u16[i] = 0x3c00 + ((i + k) % 97) + (i % 5 === 0 ? 0x8000 : 0);
    }
    for (let i = 0; i < i8.length; i++) i8[i] = ((i * 31 + k) % 255) - 127;
    for (let o = 0; o < out; o++) sc[o] = 1 / (o + 3 + k);
    return [
      { dtype: "f32", rows: out, cols: inDim, data: f32 },
      { dtype: "bf16", rows: out, cols: inDim, data: u16 },
      { dtype: "f16", rows: out, cols: inDim, data: u16 },
      { dtype: "int8", rows: out, cols: inDim, data: i8, scales: sc },
    ];
  };
  const m1 = mats(0), m2 = mats(5);
  const b1 = a.allocF32(out), b2 = a.allocF32(out);
  for (let o = 0; o < out; o++) [b1[o], b2[o]] = [o / 100 - 5, 1 - o / 300];
  const x = a.allocF32(3 * inDim), y = a.allocF32(3 * out), y2 = a.allocF32(3 * out);
  for (let i = 0; i < x.length; i++) x[i] = ((i * 37) % 101) / 50 - 1;
  // The expected bits: plain linears, then the op in JS on the same f32 values.
  const want = new Map<string, Float32Array>();
  for (const [d, m] of m1.entries()) {
    for (const T of [1, 3]) {
      for (const act of ACTIVATIONS) {
        a.linear(x, T, m, b1, out, inDim, y);
        for (let t = 0; t < T; t++) activate(act, y, t * out, 517);
        want.set(`${m.dtype} ${T} ${act}`, y.slice(0, T * out));
      }
      a.linear(x, T, m, b1, out, inDim, y);
      a.linear(x, T, m2[d], b2, out, inDim, y2);
      for (let i = 0; i < T * out; i++) y[i] *= y2[i];
      want.set(`${m.dtype} ${T} glu`, y.slice(0, T * out));
      want.set(`${m.dtype} ${T} glu y2`, y2.slice(0, T * out));
    }
  }
  for (const threads of [1, 2, 3]) {
    if (threads > 1) assert.equal(await a.startThreads(threads), threads);
    try {
      for (const [d, m] of m1.entries()) {
        for (const T of [1, 3]) {
          for (const act of ACTIVATIONS) {
            y.fill(NaN);
            a.linear(x, T, m, b1, out, inDim, y, { activation: act, rows: 517 });
            const key = `${m.dtype} ${T} ${act}`;
            assert.ok(sameBits(y.subarray(0, T * out), want.get(key)!), `${key}, ${threads} thr`);
          }
          y.fill(NaN);
          y2.fill(NaN);
          a.glu(x, T, m, b1, m2[d], b2, out, inDim, y, y2);
          const key = `${m.dtype} ${T} glu`;
          assert.ok(sameBits(y.subarray(0, T * out), want.get(key)!), `${key}, ${threads} thr`);
          assert.ok(sameBits(y2.subarray(0, T * out), want.get(`${key} y2`)!), `${key} y2`);
        }
      }
    } finally {
      a.stopThreads();
    }
  }
  assert.throws(() => a.glu(x, 1, m1[0], null, m2[1], null, out, inDim, y, y2), /one stored dtype/);
  assert.throws(
    () => a.glu(x, 1, m1[1], null, m2[1], null, out, inDim, y, y.subarray(5)),
    /overlaps/,
  );
});
