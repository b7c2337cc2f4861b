import assert from "node:assert/strict";
import { WeightsError } from "../../../src/errors.ts";
import { crc32, MAX_INFLATE_BYTES, openZip } from "../../../src/model/weights/zip.ts";
import { fixtureTest } from "../../fixtures.ts";
import { writeSparseZip64, writeZip, type ZipInput, type ZipOptions } from "./torch_writer.ts";
import { bytes } from "../../support/random.ts";

const enc = new TextEncoder();

async function withZip(
  inputs: ZipInput[],
  opts: ZipOptions,
  fn: (path: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/a.zip`;
    await Deno.writeFile(path, await writeZip(inputs, opts));
    await fn(path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function rejectsWith(p: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof WeightsError, `expected WeightsError, got ${e}`);
    assert.match(e.message, pattern);
    return true;
  });
}

Deno.test("crc32 matches the standard check value", () => {
  assert.deepEqual(crc32(enc.encode("123456789")), 0xcbf43926);
  assert.deepEqual(crc32(new Uint8Array(0)), 0);
});

for (
  const [label, opts] of [
    ["plain", {}],
    ["zip64 records", { zip64: true }],
    ["aligned, with comment", { align: 64, comment: "hello" }],
  ] as [string, ZipOptions][]
) {
  Deno.test(`zip: reads stored, descriptor and deflated entries (${label})`, async () => {
    const a = bytes(1000, 1);
    const b = bytes(70_000, 2);
    const c = enc.encode("x".repeat(5000));
    await withZip(
      [
        { name: "top/a", data: a },
        { name: "top/b", data: b, descriptor: true },
        { name: "top/c.pkl", data: c, deflate: true, descriptor: true },
        { name: "top/empty", data: new Uint8Array(0) },
      ],
      opts,
      async (path) => {
        const z = await openZip(path);
        try {
          assert.deepEqual([...z.entries.keys()], ["top/a", "top/b", "top/c.pkl", "top/empty"]);
          assert.deepEqual(z.entries.get("top/b")!.size, 70_000);
          assert.deepEqual(await z.readEntry("top/a"), a);
          assert.deepEqual(await z.readRange("top/b", 12_345, 100), b.slice(12_345, 12_445));
          assert.deepEqual(await z.readEntry("top/c.pkl"), c);
          assert.deepEqual(await z.readEntry("top/empty"), new Uint8Array(0));
          assert.deepEqual((await z.dataOffset("top/a")) % (opts.align ?? 1), 0);
          // Concurrent ranges must not interleave their seek + read.
          const ranges = await Promise.all(
            Array.from({ length: 20 }, (_, i) => z.readRange("top/b", i * 3000, 2000)),
          );
          ranges.forEach((r, i) => assert.deepEqual(r, b.slice(i * 3000, i * 3000 + 2000)));
          await rejectsWith(z.readRange("top/c.pkl", 0, 10), /entry "top\/c\.pkl".*compressed/);
          await rejectsWith(z.readRange("top/b", 69_999, 2), /outside/);
          await rejectsWith(z.readEntry("top/nope"), /no entry "top\/nope"/);
          await rejectsWith(z.readEntry("top/b", 1000), /more than the 1000 allowed/);
        } finally {
          z.close();
        }
        await rejectsWith(z.readEntry("top/a"), /closed/);
      },
    );
  });
}

Deno.test("zip: CRC mismatch, deflate bombs and oversized deflated entries are refused", async () => {
  const d = enc.encode("y".repeat(10_000));
  await withZip(
    [
      { name: "crc", data: d, claimCrc: 1234 },
      { name: "bomb", data: d, deflate: true, claimSize: 100 },
      { name: "short", data: d, deflate: true, claimSize: 20_000 },
      { name: "big", data: d, deflate: true, claimSize: MAX_INFLATE_BYTES + 1 },
      { name: "garbage", data: d, deflate: false, claimSize: 10_000 },
    ],
    {},
    async (path) => {
      const z = await openZip(path);
      try {
        await rejectsWith(z.readEntry("crc"), /entry "crc" fails its CRC-32 check/);
        await rejectsWith(z.readEntry("bomb", 1 << 30), /inflates to more than/);
        await rejectsWith(z.readEntry("short", 1 << 30), /inflates to 10000 bytes/);
        await rejectsWith(z.readEntry("big", 1 << 30), /entry "big" is deflated and too large/);
      } finally {
        z.close();
      }
    },
  );
  // Corrupt deflate data: a stored body marked as deflated.
  const raw = await writeZip([{ name: "bad", data: bytes(100, 9) }]);
  raw[8] = 8; // local header method
  const cdAt = raw.length - 22 - 46 - 3;
  assert.deepEqual(new DataView(raw.buffer).getUint32(cdAt, true), 0x02014b50);
  raw[cdAt + 10] = 8; // central method
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(`${dir}/x.zip`, raw);
    const z = await openZip(`${dir}/x.zip`);
    try {
      await rejectsWith(z.readEntry("bad"), /corrupt deflate data|inflates to/);
    } finally {
      z.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("zip: non-zip, empty, truncated and missing files give WeightsError", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(
      `${dir}/text.bin`,
      "just some text, not an archive at all\n".repeat(10),
    );
    await rejectsWith(openZip(`${dir}/text.bin`), /not a ZIP archive/);
    await Deno.writeFile(`${dir}/empty.bin`, new Uint8Array(0));
    await rejectsWith(openZip(`${dir}/empty.bin`), /not a ZIP archive/);
    const full = await writeZip([{ name: "a", data: bytes(5000) }, {
      name: "b",
      data: bytes(5000),
    }]);
    for (const cut of [10, 4000, full.length - 30, full.length - 1]) {
      await Deno.writeFile(`${dir}/cut.bin`, full.subarray(0, cut));
      await rejectsWith(openZip(`${dir}/cut.bin`), /truncated|not a ZIP|malformed|run/);
    }
    await rejectsWith(openZip(`${dir}/absent.bin`), /cannot open/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("zip: an entry whose data runs into the central directory is refused at open", async () => {
  const full = await writeZip([{ name: "a", data: bytes(100) }, { name: "b", data: bytes(100) }]);
  // Point the second entry's local header offset near the end of the data area.
  const dv = new DataView(full.buffer);
  let p = full.length - 22 - 2 * (46 + 1);
  assert.deepEqual(dv.getUint32(p, true), 0x02014b50);
  p += 46 + 1;
  dv.setUint32(p + 42, 150, true);
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(`${dir}/x.zip`, full);
    await rejectsWith(openZip(`${dir}/x.zip`), /entry "b".*run past the data area/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("zip: ZIP64 entry beyond 4 GiB (sparse file)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/big.zip`;
    const data = bytes(4096, 3);
    const at = 5 * 1024 ** 3 + 17;
    await writeSparseZip64(path, "archive/data/0", data, at);
    const z = await openZip(path);
    try {
      const e = z.entries.get("archive/data/0")!;
      assert.deepEqual(e.localHeaderOffset, at);
      assert.deepEqual(await z.dataOffset(e), at + 30 + "archive/data/0".length);
      assert.deepEqual(await z.readRange(e, 1000, 96), data.slice(1000, 1096));
      assert.deepEqual(await z.readEntry(e), data);
    } finally {
      z.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

fixtureTest("zip: reads the PyTorch fixture archives", async (dir) => {
  const z = await openZip(`${dir}r1-f32/pytorch_model.bin`);
  try {
    assert.deepEqual(z.entries.size, 19);
    const pkl = z.entries.get("pytorch_model/data.pkl")!;
    assert.deepEqual(pkl.method, 0);
    assert.deepEqual(pkl.flags & 0x08, 0x08);
    assert.deepEqual((await z.readEntry(pkl)).byteLength, pkl.size);
    assert.deepEqual(await z.readEntry("pytorch_model/version"), enc.encode("3\n"));
  } finally {
    z.close();
  }
});
