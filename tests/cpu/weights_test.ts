/**
 * CPU weights in their stored precision: what the load allocates, what it holds, int8 as the GPU
 * runs it (ŵ = q·s), and the f16 limits of the kernels.
 */

import assert from "node:assert/strict";
import { CpuBackend } from "../../src/cpu/mod.ts";
import { loadCpuWeights } from "../../src/cpu/weights.ts";
import { WeightsError } from "../../src/errors.ts";
import { parseConfig } from "../../src/model/config.ts";
import { dequantizeInt8, quantizeInt8 } from "../../src/model/quantize.ts";
import { randomSource } from "../../src/model/random_weights.ts";
import { createState } from "../../src/model/state.ts";
import { DTYPE_BYTES, toFloat32 } from "../../src/model/weights/dtype.ts";
import { memorySource } from "../../src/model/weights/safetensors.ts";
import type { TensorInfo, TensorSource } from "../../src/model/weights/source.ts";
import { maxAbsDiff, relDiff, TOL } from "../support/parity.ts";

const config = parseConfig({
  vocab_size: 300,
  decoder_embed_dim: 64,
  hidden_dim: 64,
  decoder_layers: 2,
  decoder_attention_heads: 2,
  glu_dim: 96,
  linear_use_lrpe_list: [1, 0],
  linear_act_fun: "swish",
  bias: true,
});
/** Elements of the smallest weight matrix ([D, H] output projection). */
const SMALLEST = 64 * 64;

/** Sizes of every Float32Array made with its own memory (not a view) while `fn` runs. */
async function f32Allocations(fn: () => Promise<unknown>): Promise<number[]> {
  const Original = globalThis.Float32Array;
  const sizes: number[] = [];
  class Spy extends Original {
    // deno-lint-ignore no-explicit-any
    constructor(...args: any[]) {
      // deno-lint-ignore no-explicit-any
      super(...(args as [any]));
      const a = args[0];
      if (!(a instanceof ArrayBuffer || a instanceof SharedArrayBuffer)) sizes.push(this.length);
    }
  }
  (globalThis as { Float32Array: unknown }).Float32Array = Spy;
  try {
    await fn();
  } finally {
    (globalThis as { Float32Array: unknown }).Float32Array = Original;
  }
  return sizes;
}

/** A source whose matrices are the f32 values ŵ = q·s of `base`'s int8 quantization. */
function dequantizedSource(base: TensorSource): TensorSource {
  const tensors = new Map<string, TensorInfo>();
  for (const [name, info] of base.tensors) {
    const matrix = info.shape.length === 2;
    const n = info.byteLength / DTYPE_BYTES[info.dtype];
    tensors.set(name, matrix ? { ...info, dtype: "F32", byteLength: n * 4 } : info);
  }
  return {
    tensors,
    async read(name) {
      const info = base.tensors.get(name)!;
      const bytes = await base.read(name);
      if (info.shape.length !== 2 || info.dtype === "I8") return bytes;
      const [rows, cols] = info.shape;
      const v = toFloat32(bytes, info.dtype as "BF16");
      return new Uint8Array(dequantizeInt8(quantizeInt8(v, rows, cols)).buffer);
    },
    close: () => base.close(),
  };
}

Deno.test("cpu weights: a 16-bit or int8 load never makes an f32 copy of a matrix", async () => {
  for (const quantize of ["none", "int8"] as const) {
    for (const dtype of ["BF16", "F16"] as const) {
      // Fast mode: the source makes 16-bit patterns directly (no f32 of its own to count).
      const src = randomSource(config, { dtype, fast: true });
      let backend: CpuBackend | null = null;
      const sizes = await f32Allocations(async () => {
        backend = await CpuBackend.load(src, config, "random", { quantize, maxBatch: 4, chunk: 4 });
      });
      assert.ok(sizes.length > 0, "the spy sees the loader's vectors");
      const big = sizes.filter((n) => n >= SMALLEST);
      assert.deepEqual(big, [], `${dtype} ${quantize}: f32 arrays of ${big} values`);
      const b = backend! as CpuBackend;
      assert.equal(b.model.kernels, "wasm");
      // Matrices held at 2 bytes (16-bit) or 1 byte + a 4-byte scale per row (int8).
      const { embedDim: D, hiddenDim: H, gluDim: G, vocabSize: V } = config;
      const elements = 2 * (4 * H * D + D * H + 3 * G * D) + V * D;
      const rows = 2 * (4 * H + D + 2 * G + D) + V;
      assert.equal(b.model.weightBytes, quantize === "int8" ? elements + 4 * rows : 2 * elements);
    }
  }
  // The js reference does widen (it is the f64 spec, not the edge path): the spy notices.
  const sizes = await f32Allocations(() =>
    CpuBackend.load(randomSource(config), config, "random", { kernels: "js" })
  );
  assert.ok(sizes.some((n) => n >= SMALLEST));
});

Deno.test("cpu weights: matrices in their stored precision are read straight into the arena", async () => {
  for (const dtype of ["BF16", "F16", "F32"] as const) {
    const inner = randomSource(config, { dtype, fast: true });
    const readWhole: string[] = [];
    const src: TensorSource = {
      tensors: inner.tensors,
      read: (name) => {
        readWhole.push(name);
        return inner.read(name);
      },
      readInto: (name, dst) => inner.readInto!(name, dst),
      close: () => {},
    };
    const loaded = await CpuBackend.load(src, config, "in place", { maxBatch: 4, chunk: 4 });
    const want = await CpuBackend.load(inner, config, "copied", { maxBatch: 4, chunk: 4 });
    // Only vectors (norm weights, θ, biases) go through read; no matrix is copied from a buffer.
    const matrices = readWhole.filter((n) => inner.tensors.get(n)!.shape.length === 2);
    assert.deepEqual(matrices, [], `${dtype}: read whole`);
    const ids = Int32Array.of(5, 17, 99, 3);
    const [a, b] = [loaded.allocState(), want.allocState()];
    assert.deepEqual(await loaded.prefill(a, ids, "all"), await want.prefill(b, ids, "all"));
  }
});

Deno.test("cpu weights: int8 quantized from slices of rows equals int8 from whole matrices", async () => {
  const src = randomSource(config, { dtype: "BF16", fast: true });
  // A source without readInto: every slice goes through read (the fallback).
  const tensors = await Promise.all(
    [...src.tensors.values()].map(async (i) => ({
      ...i,
      shape: [...i.shape],
      data: await src.read(i.name),
    })),
  );
  const mem = memorySource(tensors);
  const whole = await loadCpuWeights(src, config, "whole", {
    quantize: "int8",
    quantSliceBytes: 1 << 30,
  });
  const mats = (
    w: typeof whole,
  ) => [w.embed, ...w.layers.flatMap((l) => [l.qkvu, l.out, l.l1, l.l2, l.l3])];
  // Several rows and a part (per slice: whole rows only), 200 bytes, one row at a time.
  for (const [s, bytes] of [[src, 3 * 64 * 2 + 10], [mem, 200], [src, 1]] as const) {
    const sliced = await loadCpuWeights(s, config, "sliced", {
      quantize: "int8",
      quantSliceBytes: bytes,
    });
    for (const [a, b] of mats(sliced).map((m, i) => [m, mats(whole)[i]])) {
      assert.ok(a.dtype === "int8" && b.dtype === "int8");
      assert.deepEqual(a.data, b.data, `q, slices of ${bytes} bytes`);
      assert.deepEqual(a.scales, b.scales, `scales, slices of ${bytes} bytes`);
    }
  }
});

Deno.test("cpu weights: int8 runs the model of ŵ = q·s (the GPU's int8 semantics) within tolerance", async () => {
  const base = randomSource(config, { dtype: "BF16", std: 0.2 });
  const int8 = await CpuBackend.load(base, config, "int8", { quantize: "int8" });
  const deq = await CpuBackend.load(dequantizedSource(base), config, "deq");
  const ref = await CpuBackend.load(base, config, "int8 js", { quantize: "int8", kernels: "js" });
  const ids = Int32Array.from({ length: 41 }, (_, i) => (i * 37 + 5) % config.vocabSize);
  const [a, b, c] = [createState(config), createState(config), createState(config)];
  const la = await int8.forward(a, ids, "all");
  const lb = await deq.forward(b, ids, "all");
  const lc = await ref.forward(c, ids, "all");
  // The wasm int8 kernels round activations to int16 (per block of 128 columns): the GPU parity
  // tolerances (tests/gpu/parity_test.ts) against the f32 kernels over ŵ and the f64 reference.
  for (const [name, l, s] of [["f32 kernels over ŵ", lb, b], ["js reference", lc, c]] as const) {
    assert.ok(maxAbsDiff(la, l) < TOL.logits, `wasm int8 vs ${name}: ${maxAbsDiff(la, l)}`);
    for (let i = 0; i < config.numLayers; i++) {
      const d = relDiff(a.layers[i], s.layers[i]);
      assert.ok(d < TOL.state, `wasm int8 vs ${name}: state of layer ${i} differs by ${d}`);
    }
  }
  // The f32 kernels over ŵ and the f64 reference: rounding only.
  assert.ok(maxAbsDiff(lb, lc) < 1e-4, `wasm f32 over ŵ vs js int8: ${maxAbsDiff(lb, lc)}`);
});

Deno.test("cpu weights: non-finite f16 weights are a clear load error", async () => {
  const base = randomSource(config, { dtype: "F16" });
  const bad = "model.layers.1.channel_mixer.l2.weight";
  const src: TensorSource = {
    tensors: base.tensors,
    async read(name) {
      const bytes = (await base.read(name)).slice();
      if (name === bad) new Uint16Array(bytes.buffer)[5] = 0x7c00; // +inf
      return bytes;
    },
    close: () => base.close(),
  };
  await assert.rejects(
    () => loadCpuWeights(src, config, "random", { arenaScratchBytes: 0 }),
    (e) => e instanceof WeightsError && e.message.includes(bad) && /non-finite/.test(e.message),
  );
});
