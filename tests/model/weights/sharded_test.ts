import assert from "node:assert/strict";
import { WeightsError } from "../../../src/errors.ts";
import { openWeights } from "../../../src/model/weights/open.ts";
import {
  encodeSafetensors,
  openSafetensors,
  type TensorData,
} from "../../../src/model/weights/safetensors.ts";
import type { TensorSource } from "../../../src/model/weights/source.ts";
import { fixtureTest } from "../../fixtures.ts";
import { writeCheckpoint } from "./torch_writer.ts";

async function readAll(src: TensorSource): Promise<TensorData[]> {
  const out: TensorData[] = [];
  for (const [name, info] of src.tensors) {
    out.push({ name, dtype: info.dtype, shape: [...info.shape], data: await src.read(name) });
  }
  return out;
}

async function assertSame(actual: TensorSource, expected: TensorData[]): Promise<void> {
  assert.deepEqual([...actual.tensors.keys()].sort(), expected.map((t) => t.name).sort());
  for (const t of expected) {
    const info = actual.tensors.get(t.name)!;
    assert.equal(info.dtype, t.dtype);
    assert.deepEqual([...info.shape], t.shape);
    const got = await actual.read(t.name);
    assert.ok(got.byteLength === t.data.byteLength && got.every((v, i) => v === t.data[i]), t.name);
  }
}

/** Split tensors into `n` shards (round robin) and write them plus an index in `dir`. */
async function writeSharded(
  dir: string,
  tensors: TensorData[],
  n: number,
  kind: "bin" | "safetensors",
): Promise<void> {
  const shards: TensorData[][] = Array.from({ length: n }, () => []);
  tensors.forEach((t, i) => shards[i % n].push(t));
  const weightMap: Record<string, string> = {};
  const base = kind === "bin" ? "pytorch_model" : "model";
  for (let s = 0; s < n; s++) {
    const file = `${base}-${String(s + 1).padStart(5, "0")}-of-${
      String(n).padStart(5, "0")
    }.${kind}`;
    for (const t of shards[s]) weightMap[t.name] = file;
    const bytes = kind === "bin"
      ? await writeCheckpoint(shards[s], file.replace(/\.bin$/, ""))
      : encodeSafetensors(shards[s]);
    await Deno.writeFile(`${dir}/${file}`, bytes);
  }
  const total = tensors.reduce((a, t) => a + t.data.byteLength, 0);
  await Deno.writeTextFile(
    `${dir}/${base}.${kind === "bin" ? "bin" : "safetensors"}.index.json`,
    JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2),
  );
}

fixtureTest("sharded: pytorch_model.bin.index.json over hand-written .bin shards", async (dir) => {
  const st = await openSafetensors(`${dir}r1-f32/model.safetensors`);
  const tensors = await readAll(st);
  st.close();
  const tmp = await Deno.makeTempDir();
  try {
    await writeSharded(tmp, tensors, 3, "bin");
    const w = await openWeights(tmp);
    try {
      await assertSame(w, tensors);
      assert.ok(w.tensors.get("model.embed_tokens.weight")!.file.endsWith("-00001-of-00003.bin"));
    } finally {
      w.close();
    }
    // An index naming the wrong shard for a tensor is refused.
    const indexPath = `${tmp}/pytorch_model.bin.index.json`;
    const index = JSON.parse(await Deno.readTextFile(indexPath));
    index.weight_map["model.embed_tokens.weight"] = "pytorch_model-00002-of-00003.bin";
    await Deno.writeTextFile(indexPath, JSON.stringify(index));
    await assert.rejects(() => openWeights(tmp), (e: unknown) => {
      assert.ok(e instanceof WeightsError);
      assert.match(e.message, /model\.embed_tokens\.weight/);
      return true;
    });
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

fixtureTest("sharded: model.safetensors.index.json over encodeSafetensors shards", async (dir) => {
  const st = await openSafetensors(`${dir}r1-f32/model.safetensors`);
  const tensors = await readAll(st);
  st.close();
  const tmp = await Deno.makeTempDir();
  try {
    await writeSharded(tmp, tensors, 2, "safetensors");
    const w = await openWeights(tmp);
    try {
      await assertSame(w, tensors);
    } finally {
      w.close();
    }
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("sharded: a shard missing from disk or a truncated .bin shard is a WeightsError", async () => {
  const tensors: TensorData[] = Array.from({ length: 4 }, (_, i) => ({
    name: `layer.${i}.weight`,
    dtype: "BF16",
    shape: [8, 16],
    data: new Uint8Array(256).map((_, j) => (i * 31 + j) & 0xff),
  }));
  const tmp = await Deno.makeTempDir();
  try {
    await writeSharded(tmp, tensors, 2, "bin");
    const w = await openWeights(tmp);
    try {
      await assertSame(w, tensors);
    } finally {
      w.close();
    }
    const shard = `${tmp}/pytorch_model-00002-of-00002.bin`;
    await Deno.truncate(shard, (await Deno.stat(shard)).size - 10);
    await assert.rejects(() => openWeights(tmp), WeightsError);
    await Deno.remove(shard);
    await assert.rejects(() => openWeights(tmp), (e: unknown) => {
      assert.ok(e instanceof WeightsError);
      assert.match(e.message, /pytorch_model-00002-of-00002\.bin: cannot open/);
      return true;
    });
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
