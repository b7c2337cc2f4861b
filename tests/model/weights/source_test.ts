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

Deno.test("source: readTensorInto rejects a missing tensor and a destination of the wrong size", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(`${dir}/m.safetensors`, encodeSafetensors([tensor("w", 10, 1)]));
    const src = await openSafetensors(`${dir}/m.safetensors`);
    try {
      for (const s of [src, memorySource([tensor("w", 10, 1)])]) {
        await assert.rejects(() => readTensorInto(s, "nope", new Uint8Array(40)), WeightsError);
        await assert.rejects(
          () => readTensorInto(s, "w", new Uint8Array(39)),
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
});
