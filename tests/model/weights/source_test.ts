/** Reading a tensor straight into a caller's buffer: every source, its fallback, and its checks. */

import assert from "node:assert/strict";
import { WeightsError } from "../../../src/errors.ts";
import { FingerprintingSource } from "../../../src/model/fingerprint.ts";
import { randomSource, shapeConfig } from "../../../src/model/random_weights.ts";
import { mergeSources } from "../../../src/model/weights/open.ts";
import {
  encodeSafetensors,
  memorySource,
  openSafetensors,
} from "../../../src/model/weights/safetensors.ts";
import { readTensorInto, type TensorSource } from "../../../src/model/weights/source.ts";

function tensor(name: string, n: number, seed: number) {
  return {
    name,
    dtype: "F32" as const,
    shape: [n],
    data: new Uint8Array(Float32Array.from({ length: n }, (_, i) => i * seed + 0.5).buffer),
  };
}

/** Every tensor of `src` read into a buffer equals what `read` returns. */
async function sameAsRead(src: TensorSource, offset = 0): Promise<void> {
  for (const [name, info] of src.tensors) {
    const buf = new Uint8Array(info.byteLength + offset + 3).fill(0xee);
    await readTensorInto(src, name, buf.subarray(offset, offset + info.byteLength));
    assert.deepEqual(buf.subarray(offset, offset + info.byteLength), await src.read(name), name);
    // Nothing outside the destination is written.
    assert.ok(buf.subarray(0, offset).every((b) => b === 0xee), `${name}: before`);
    assert.ok(buf.subarray(offset + info.byteLength).every((b) => b === 0xee), `${name}: after`);
  }
}

Deno.test("source: readTensorInto gives the bytes of read for files, merged shards and memory", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const a = [tensor("a0", 37, 1), tensor("a1", 1000, 2)];
    const b = [tensor("b0", 5, 3)];
    await Deno.writeFile(`${dir}/a.safetensors`, encodeSafetensors(a));
    await Deno.writeFile(`${dir}/b.safetensors`, encodeSafetensors(b));
    const fa = await openSafetensors(`${dir}/a.safetensors`);
    const fb = await openSafetensors(`${dir}/b.safetensors`);
    try {
      assert.ok(fa.readInto, "a safetensors file reads in place");
      await sameAsRead(fa);
      const merged = mergeSources([fa, fb], null, "merged");
      await sameAsRead(merged, 4);
      // Concurrent reads into separate buffers keep their order on the one file handle.
      const bufs = a.map((t) => new Uint8Array(t.data.byteLength));
      await Promise.all(a.map((t, i) => readTensorInto(fa, t.name, bufs[i])));
      bufs.forEach((buf, i) => assert.deepEqual(buf, a[i].data));
    } finally {
      fa.close();
      fb.close();
    }
    // A source without readInto goes through read.
    const mem = memorySource(a);
    assert.equal(mem.readInto, undefined);
    await sameAsRead(mem, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("source: readTensorInto rejects a missing tensor and a destination larger than the tensor", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(`${dir}/m.safetensors`, encodeSafetensors([tensor("w", 10, 1)]));
    const src = await openSafetensors(`${dir}/m.safetensors`);
    try {
      for (const s of [src, memorySource([tensor("w", 10, 1)])]) {
        await assert.rejects(() => readTensorInto(s, "nope", new Uint8Array(40)), WeightsError);
        await assert.rejects(
          () => readTensorInto(s, "w", new Uint8Array(41)),
          (e: Error) => e instanceof WeightsError && /w/.test(e.message) && /40/.test(e.message),
        );
      }
      // The file's own readInto checks too, when called directly.
      await assert.rejects(() => src.readInto!("w", new Uint8Array(41)), WeightsError);
      // A failed read leaves the file usable.
      assert.deepEqual(await src.read("w"), tensor("w", 10, 1).data);
    } finally {
      src.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("source: random fast-mode weights read in place, odd counts and unaligned buffers included", async () => {
  const config = shapeConfig("385M");
  const src = randomSource(config, { dtype: "BF16", fast: true });
  const small = new Map([...src.tensors].filter(([, i]) => i.byteLength < 1 << 22).slice(0, 12));
  const some: TensorSource = { ...src, tensors: small };
  await sameAsRead(some, 0);
  await sameAsRead(some, 2); // not 4-aligned: through read
  // An odd number of 16-bit values: the last one is the one read gives.
  const odd = randomSource(
    { ...config, embedDim: 3, hiddenDim: 3, gluDim: 5, vocabSize: 7, numLayers: 1, numHeads: 1 },
    { dtype: "F16", fast: true },
  );
  await sameAsRead(odd, 0);
});

/** Tensor `name` of `src` read in slices of `step` bytes, in order or last slice first. */
async function inSlices(src: TensorSource, name: string, step: number, reverse = false) {
  const n = src.tensors.get(name)!.byteLength;
  const out = new Uint8Array(n);
  const starts = Array.from({ length: Math.ceil(n / step) }, (_, i) => i * step);
  for (const a of reverse ? starts.reverse() : starts) {
    await readTensorInto(src, name, out.subarray(a, Math.min(n, a + step)), a);
  }
  return out;
}

Deno.test("source: slices read from an offset give the tensor's bytes, in any order", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const ts = [tensor("a", 1001, 1), tensor("b", 64, 2)];
    await Deno.writeFile(`${dir}/m.safetensors`, encodeSafetensors(ts));
    const file = await openSafetensors(`${dir}/m.safetensors`);
    const config = shapeConfig("385M");
    const odd = randomSource(
      { ...config, embedDim: 3, hiddenDim: 3, gluDim: 5, vocabSize: 7, numLayers: 1, numHeads: 1 },
      { dtype: "BF16", fast: true },
    );
    try {
      for (const src of [file, mergeSources([file], null, "merged"), memorySource(ts), odd]) {
        for (const [name] of src.tensors) {
          const whole = await src.read(name);
          for (const step of [4, 12, 6, 1000]) {
            assert.deepEqual(await inSlices(src, name, step), whole, `${name} by ${step}`);
            assert.deepEqual(
              await inSlices(src, name, step, true),
              whole,
              `${name} by ${step}, reversed`,
            );
          }
        }
      }
      // A 385M-shaped matrix of random weights, by 4 MiB slices as the int8 loader reads it.
      const big = randomSource(config, { dtype: "BF16", fast: true });
      const name = "model.layers.0.token_mixer.qkvu_proj.weight";
      assert.deepEqual(await inSlices(big, name, 3 << 20), await big.read(name));
    } finally {
      file.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("source: a slice outside the tensor is a WeightsError that names it", async () => {
  const ts = [tensor("w", 10, 1)];
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(`${dir}/m.safetensors`, encodeSafetensors(ts));
    const file = await openSafetensors(`${dir}/m.safetensors`);
    try {
      for (const src of [file, memorySource(ts)]) {
        for (const [len, offset] of [[8, 36], [4, -4], [4, 1.5], [44, 0]]) {
          await assert.rejects(
            () => readTensorInto(src, "w", new Uint8Array(len), offset),
            (e: Error) =>
              e instanceof WeightsError && /w/.test(e.message) && /outside/.test(e.message),
          );
        }
        await assert.rejects(() => file.readInto!("w", new Uint8Array(8), 36), WeightsError);
      }
    } finally {
      file.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("source: a fingerprint is the same whether tensors are read or read in place", async () => {
  const ts = [tensor("x", 33, 1), tensor("y", 8, 2)];
  const byRead = new FingerprintingSource(memorySource(ts));
  const byInto = new FingerprintingSource(memorySource(ts));
  const seen: string[] = [];
  const withProgress = new FingerprintingSource(memorySource(ts), (n) => seen.push(n));
  for (const t of ts) {
    await byRead.read(t.name);
    await readTensorInto(byInto, t.name, new Uint8Array(t.data.byteLength));
    await readTensorInto(withProgress, t.name, new Uint8Array(t.data.byteLength));
  }
  const config = shapeConfig("385M");
  assert.equal(byInto.fingerprint(config), byRead.fingerprint(config));
  assert.deepEqual(seen, ["x", "y"]);
  // In slices, in order: the digest samples the first and last MiB, so a 3 MiB tensor has both.
  const large = [tensor("big", (3 << 20) / 4 + 5, 3), tensor("small", 100, 4)];
  const whole = new FingerprintingSource(memorySource(large));
  const sliced = new FingerprintingSource(memorySource(large));
  for (const t of large) {
    await whole.read(t.name);
    await inSlices(sliced, t.name, t.name === "small" ? 36 : 300_004);
  }
  assert.equal(sliced.fingerprint(config), whole.fingerprint(config));
  // Out of order, the fingerprint cannot be taken: an error, not a wrong fingerprint.
  const jumbled = new FingerprintingSource(memorySource(large));
  await assert.rejects(() => inSlices(jumbled, "big", 300_004, true), /out of order/);
});
