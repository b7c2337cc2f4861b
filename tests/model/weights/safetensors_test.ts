/** safetensors reader: round trip, concurrent reads, and malformed files. */

import assert from "node:assert/strict";
import { WeightsError } from "../../../src/errors.ts";
import { encodeSafetensors, openSafetensors } from "../../../src/model/weights/safetensors.ts";

function tensor(name: string, n: number, seed: number) {
  return {
    name,
    dtype: "F32" as const,
    shape: [n],
    data: new Uint8Array(Float32Array.from({ length: n }, (_, i) => i * seed).buffer),
  };
}

Deno.test("safetensors: round trip and concurrent reads return the right bytes", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const ts = Array.from({ length: 12 }, (_, i) => tensor(`t${i}`, 1000 + 37 * i, i + 1));
    await Deno.writeFile(`${dir}/m.safetensors`, encodeSafetensors(ts, { format: "pt" }));
    const src = await openSafetensors(`${dir}/m.safetensors`);
    try {
      assert.equal(src.metadata.format, "pt");
      const all = await Promise.all(ts.map((t) => src.read(t.name)));
      all.forEach((b, i) => assert.deepEqual(b, ts[i].data));
      await assert.rejects(() => src.read("nope"), WeightsError);
    } finally {
      src.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("safetensors: malformed files name the problem", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const good = encodeSafetensors([tensor("w", 100, 2)]);
    const cases: [string, Uint8Array, RegExp][] = [
      ["short", new Uint8Array(4), /too short/],
      ["truncated", good.subarray(0, good.length - 10), /truncated|data ends/],
      [
        "huge header",
        (() => {
          const b = good.slice();
          new DataView(b.buffer).setBigUint64(0, 1n << 40n, true);
          return b;
        })(),
        /header length/,
      ],
      [
        "not json",
        (() => {
          const b = good.slice();
          b[8] = 0x7a;
          return b;
        })(),
        /not valid JSON/,
      ],
      [
        "bad dtype",
        encodeWithHeader({ w: { dtype: "Q4", shape: [2], data_offsets: [0, 8] } }, 8),
        /unknown dtype/,
      ],
      [
        "bad span",
        encodeWithHeader({ w: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, 8),
        /needs 12/,
      ],
      [
        "bad shape",
        encodeWithHeader({ w: { dtype: "F32", shape: [-1], data_offsets: [0, 8] } }, 8),
        /bad shape/,
      ],
    ];
    for (const [name, bytes, re] of cases) {
      const p = `${dir}/${name.replace(" ", "_")}.safetensors`;
      await Deno.writeFile(p, bytes);
      await assert.rejects(
        () => openSafetensors(p),
        (e: unknown) => e instanceof WeightsError && re.test(e.message) && e.message.includes(p),
        name,
      );
    }
    await assert.rejects(() => openSafetensors(`${dir}/missing.safetensors`), WeightsError);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

function encodeWithHeader(header: unknown, dataBytes: number): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  return out;
}
