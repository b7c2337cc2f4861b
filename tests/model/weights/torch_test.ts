import assert from "node:assert/strict";
import { WeightsError } from "../../../src/errors.ts";
import type { DType } from "../../../src/model/weights/dtype.ts";
import { openWeights } from "../../../src/model/weights/open.ts";
import { openSafetensors } from "../../../src/model/weights/safetensors.ts";
import type { TensorSource } from "../../../src/model/weights/source.ts";
import { openTorchCheckpoint } from "../../../src/model/weights/torch.ts";
import { openZip } from "../../../src/model/weights/zip.ts";
import { fixtureTest } from "../../fixtures.ts";
import {
  type CheckpointTensor,
  pickleStateDict,
  type PickleTensor,
  writeCheckpoint,
  writeZip,
  type ZipInput,
} from "./torch_writer.ts";
import { bytes, rng } from "../../support/random.ts";

const enc = new TextEncoder();

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

async function inTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function rejectsWith(p: () => Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof WeightsError, `expected WeightsError, got ${e}`);
    assert.match(e.message, pattern);
    return true;
  });
}

/** Every tensor of `expected` is in `actual` with the same dtype, shape and bytes. */
async function assertSameTensors(actual: TensorSource, expected: TensorSource): Promise<void> {
  assert.deepEqual([...actual.tensors.keys()].sort(), [...expected.tensors.keys()].sort());
  for (const [name, info] of expected.tensors) {
    const got = actual.tensors.get(name)!;
    assert.equal(got.dtype, info.dtype, name);
    assert.deepEqual([...got.shape], [...info.shape], name);
    assert.equal(got.byteLength, info.byteLength, name);
    assert.ok(sameBytes(await actual.read(name), await expected.read(name)), `bytes of ${name}`);
  }
}

fixtureTest("torch: r1-f32 pytorch_model.bin gives the safetensors bytes", async (dir) => {
  const bin = await openTorchCheckpoint(`${dir}r1-f32/pytorch_model.bin`);
  const st = await openSafetensors(`${dir}r1-f32/model.safetensors`);
  try {
    assert.equal(bin.tensors.size, 17);
    assert.ok(!bin.tensors.has("lm_head.weight"));
    assert.equal(bin.tensors.get("model.embed_tokens.weight")!.dtype, "F32");
    await assertSameTensors(bin, st);
  } finally {
    bin.close();
    st.close();
  }
});

fixtureTest(
  "torch: tnl-shakespeare-6m pytorch_model.bin (bf16) gives the model's bytes",
  async (dir) => {
    const model = new URL("../../../models/tnl-shakespeare-6m/model.safetensors", import.meta.url);
    const bin = await openTorchCheckpoint(`${dir}tnl-shakespeare-6m/pytorch_model.bin`);
    const st = await openSafetensors(model.pathname);
    try {
      // The .bin holds exactly the safetensors tensors: no separate lm_head.weight (it is tied).
      assert.equal(bin.tensors.size, 32);
      assert.ok(!bin.tensors.has("lm_head.weight"));
      assert.deepEqual(bin.tensors.get("model.layers.0.token_mixer.lrpe.theta")!.shape, [
        2,
        1,
        128,
      ]);
      await assertSameTensors(bin, st);
      // Reads may run concurrently.
      const names = [...bin.tensors.keys()];
      const all = await Promise.all(names.map((n) => bin.read(n)));
      for (let i = 0; i < names.length; i++) {
        assert.equal(all[i].byteLength, bin.tensors.get(names[i])!.byteLength);
      }
      assert.ok(sameBytes(all[5], await st.read(names[5])));
    } finally {
      bin.close();
      st.close();
    }
  },
);

fixtureTest(
  "torch: openWeights picks pytorch_model.bin in a directory without safetensors",
  async (dir) => {
    await inTempDir(async (tmp) => {
      await Deno.copyFile(`${dir}r1-f32/pytorch_model.bin`, `${tmp}/pytorch_model.bin`);
      const w = await openWeights(tmp);
      const st = await openSafetensors(`${dir}r1-f32/model.safetensors`);
      try {
        await assertSameTensors(w, st);
      } finally {
        w.close();
        st.close();
      }
    });
  },
);

fixtureTest("torch: a truncated .bin is refused", async (dir) => {
  await inTempDir(async (tmp) => {
    const src = `${dir}tnl-shakespeare-6m/pytorch_model.bin`;
    const size = (await Deno.stat(src)).size;
    for (const cut of [0, 100, 4000, Math.floor(size / 2), size - 100, size - 1]) {
      const p = `${tmp}/cut${cut}.bin`;
      await Deno.copyFile(src, p);
      await Deno.truncate(p, cut);
      await rejectsWith(() => openTorchCheckpoint(p), /truncated|not a ZIP/);
    }
  });
});

Deno.test("torch: hand-made checkpoints of every dtype, shared storages, both pickle styles", async () => {
  const tensors: CheckpointTensor[] = (
    [
      ["F32", 4],
      ["F16", 2],
      ["BF16", 2],
      ["F64", 8],
      ["I64", 8],
      ["I32", 4],
      ["I16", 2],
      [
        "I8",
        1,
      ],
      ["U8", 1],
      ["BOOL", 1],
    ] as [DType, number][]
  ).map(([dtype, size], i) => ({
    name: `t.${dtype}`,
    dtype,
    shape: [3, 5],
    data: bytes(15 * size, i + 1),
  }));
  for (const opts of [{}, { proto4: true, ordered: true, zip64: true }]) {
    await inTempDir(async (tmp) => {
      await Deno.writeFile(`${tmp}/m.bin`, await writeCheckpoint(tensors, "my model", opts));
      const s = await openTorchCheckpoint(`${tmp}/m.bin`);
      try {
        for (const t of tensors) {
          const info = s.tensors.get(t.name)!;
          assert.equal(info.dtype, t.dtype);
          assert.deepEqual(info.shape, t.shape);
          assert.equal(info.file, `${tmp}/m.bin`);
          assert.ok(sameBytes(await s.read(t.name), t.data), t.name);
        }
        await rejectsWith(() => s.read("nope"), /tensor "nope": not in this file/);
      } finally {
        s.close();
      }
    });
  }
});

/** Write a checkpoint from a hand-made pickle and raw storages. */
async function customCheckpoint(
  path: string,
  pickled: PickleTensor[],
  storages: Record<string, Uint8Array>,
  extra: ZipInput[] = [],
  deflate = false,
): Promise<void> {
  await Deno.writeFile(
    path,
    await writeZip([
      { name: "ck/data.pkl", data: pickleStateDict(pickled), deflate },
      ...Object.entries(storages).map(([k, data]) => ({ name: `ck/data/${k}`, data, deflate })),
      ...extra,
    ]),
  );
}

Deno.test("torch: views into a shared storage (tied weights) read their own slice", async () => {
  const storage = bytes(4 * 40);
  await inTempDir(async (tmp) => {
    for (const deflate of [false, true]) {
      const p = `${tmp}/tied${deflate}.bin`;
      await customCheckpoint(
        p,
        [
          { name: "embed", dtype: "F32", key: "0", numel: 40, shape: [8, 5] },
          { name: "lm_head", dtype: "F32", key: "0", numel: 40, shape: [8, 5] },
          { name: "tail", dtype: "F32", key: "0", numel: 40, offset: 30, shape: [2, 5] },
        ],
        { "0": storage },
        [],
        deflate,
      );
      const s = await openTorchCheckpoint(p);
      try {
        assert.ok(sameBytes(await s.read("embed"), storage));
        assert.ok(sameBytes(await s.read("lm_head"), storage));
        assert.ok(sameBytes(await s.read("tail"), storage.slice(120, 160)));
      } finally {
        s.close();
      }
    }
  });
});

Deno.test("torch: bad checkpoints are refused with a WeightsError naming the problem", async () => {
  await inTempDir(async (tmp) => {
    const w = { name: "w", dtype: "F32" as const, key: "0", numel: 6, shape: [2, 3] };
    const p = (n: string): string => `${tmp}/${n}.bin`;

    await customCheckpoint(p("short"), [w], { "0": bytes(20) });
    await rejectsWith(
      () => openTorchCheckpoint(p("short")),
      /short\.bin: tensor "w": storage "ck\/data\/0" holds 20 bytes but 24 are declared \(truncated or too small\)/,
    );

    await customCheckpoint(p("missing"), [w], {});
    await rejectsWith(
      () => openTorchCheckpoint(p("missing")),
      /tensor "w": storage entry "ck\/data\/0" is missing/,
    );

    await customCheckpoint(p("nc"), [{ ...w, stride: [1, 2] }], { "0": bytes(24) });
    await rejectsWith(() => openTorchCheckpoint(p("nc")), /tensor "w": not contiguous/);

    await customCheckpoint(p("be"), [w], { "0": bytes(24) }, [
      { name: "ck/byteorder", data: enc.encode("big") },
    ]);
    await rejectsWith(() => openTorchCheckpoint(p("be")), /byte order "big" is not supported/);

    await Deno.writeFile(p("nopkl"), await writeZip([{ name: "ck/data/0", data: bytes(24) }]));
    await rejectsWith(() => openTorchCheckpoint(p("nopkl")), /no data\.pkl in the archive/);

    await Deno.writeFile(
      p("two"),
      await writeZip([
        { name: "a/data.pkl", data: pickleStateDict([w]) },
        { name: "b/data.pkl", data: pickleStateDict([w]) },
      ]),
    );
    await rejectsWith(() => openTorchCheckpoint(p("two")), /several data\.pkl entries/);

    await Deno.writeFile(
      p("evil"),
      await writeZip([
        { name: "ck/data.pkl", data: pickleStateDict([w], { extraGlobal: ["os", "system"] }) },
        { name: "ck/data/0", data: bytes(24) },
      ]),
    );
    await rejectsWith(
      () => openTorchCheckpoint(p("evil")),
      /evil\.bin: pickle: forbidden global os\.system/,
    );

    await Deno.writeTextFile(p("text"), "this is not a checkpoint\n".repeat(4));
    await rejectsWith(() => openTorchCheckpoint(p("text")), /text\.bin: not a ZIP archive/);

    // A pre-1.6 checkpoint: a bare pickle starting with the protocol 2 header and a magic LONG1.
    await Deno.writeFile(
      p("legacy"),
      new Uint8Array([
        0x80,
        2,
        0x8a,
        0x0a,
        0x6c,
        0xfc,
        0x9c,
        0x46,
        0xf9,
        0x20,
        0x6a,
        0xa8,
        0x50,
        0x19,
        0x2e,
        ...new Uint8Array(40),
      ]),
    );
    await rejectsWith(() => openTorchCheckpoint(p("legacy")), /legacy PyTorch serialization/);

    await rejectsWith(() => openTorchCheckpoint(p("absent")), /absent\.bin: cannot open/);
  });
});

Deno.test("torch: a compressed large storage is refused naming the entry", async () => {
  await inTempDir(async (tmp) => {
    const path = `${tmp}/z.bin`;
    await Deno.writeFile(
      path,
      await writeZip([
        {
          name: "ck/data.pkl",
          data: pickleStateDict([{
            name: "w",
            dtype: "U8",
            key: "0",
            numel: 100 << 20,
            shape: [100 << 20],
          }]),
        },
        { name: "ck/data/0", data: bytes(16), deflate: true, claimSize: 100 << 20 },
      ]),
    );
    await rejectsWith(
      () => openTorchCheckpoint(path),
      /tensor "w": storage "ck\/data\/0" is compressed \(method 8/,
    );
  });
});

fixtureTest("torch: corrupted data.pkl inside a real checkpoint (300 variants)", async (dir) => {
  const src = `${dir}r1-f32/pytorch_model.bin`;
  const z = await openZip(src);
  const entries: ZipInput[] = [];
  try {
    for (const e of z.entries.values()) {
      entries.push({ name: e.name, data: await z.readEntry(e), claimCrc: e.crc32 });
    }
  } finally {
    z.close();
  }
  const pklAt = entries.findIndex((e) => e.name.endsWith("/data.pkl"));
  const pkl = entries[pklAt].data;
  const r = rng(7);
  let rejected = 0;
  await inTempDir(async (tmp) => {
    for (let i = 0; i < 300; i++) {
      const bad = pkl.slice();
      const flips = 1 + Math.floor(r() * 3);
      for (let k = 0; k < flips; k++) bad[Math.floor(r() * bad.length)] = Math.floor(r() * 256);
      const cut = r() < 0.1 ? bad.subarray(0, Math.floor(r() * bad.length)) : bad;
      const files = entries.slice();
      files[pklAt] = { name: entries[pklAt].name, data: cut };
      const path = `${tmp}/v${i}.bin`;
      await Deno.writeFile(path, await writeZip(files));
      const t0 = performance.now();
      try {
        const s = await openTorchCheckpoint(path);
        try {
          for (const name of s.tensors.keys()) await s.read(name);
        } finally {
          s.close();
        }
      } catch (e) {
        if (!(e instanceof WeightsError)) throw new Error(`variant ${i}: ${e}`, { cause: e });
        assert.ok(e.message.startsWith(path), e.message);
        rejected++;
      }
      assert.ok(performance.now() - t0 < 500, `variant ${i} was slow`);
      await Deno.remove(path);
    }
  });
  assert.ok(rejected > 100, `only ${rejected} variants rejected`);
});
