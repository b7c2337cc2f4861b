/**
 * `CanvasReadback`: bytes read through an `OffscreenCanvas` equal the buffer's, at every size up to
 * its limit; the BMP it takes them from is parsed whichever way its rows and channels are stored,
 * and anything else is rejected by name; the backend's results are the same bits read either way,
 * and it refuses a readback option it does not know.
 */

import assert from "node:assert/strict";
import { bmpTexelBytes, CanvasReadback, READBACK_ROW_BYTES } from "../../src/gpu/readback.ts";
import { validateSamplingParams } from "../../src/engine/sampling_params.ts";
import { newRngState } from "../../src/engine/rng.ts";
import type { WebGpuBackend } from "../../src/gpu/backend.ts";
import { gpuTest, withDefaultBackend } from "./support.ts";

/** Channel masks (red, green, blue, alpha) of the BMPs Deno writes: pixels stored as B, G, R, A. */
const BGRA_MASKS = [0x00ff0000, 0x0000ff00, 0x000000ff, 0xff000000];

/** A 32-bit BMP (V4 header) of `texels` (rgba8 bytes, rows top to bottom). */
function bmp(
  texels: Uint8Array,
  width: number,
  rows: number,
  o: { topDown?: boolean; masks?: number[]; bpp?: number; compression?: number; header?: number } =
    {},
): ArrayBuffer {
  const header = o.header ?? 108, dataAt = 14 + header;
  const file = new ArrayBuffer(dataAt + width * rows * 4);
  const v = new DataView(file);
  v.setUint16(0, 0x424d, false);
  v.setUint32(2, file.byteLength, true);
  v.setUint32(10, dataAt, true);
  v.setUint32(14, header, true);
  v.setInt32(18, width, true);
  v.setInt32(22, o.topDown ? -rows : rows, true);
  v.setUint16(26, 1, true);
  v.setUint16(28, o.bpp ?? 32, true);
  v.setUint32(30, o.compression ?? 3, true);
  const masks = o.masks ?? BGRA_MASKS;
  masks.forEach((m, i) => v.setUint32(54 + 4 * i, m >>> 0, true));
  const shift = masks.map((m) => Math.log2((m >>> 0) / 255));
  for (let row = 0; row < rows; row++) {
    const stored = o.topDown ? row : rows - 1 - row;
    for (let c = 0; c < width; c++) {
      const t = (row * width + c) * 4;
      let px = 0;
      for (let ch = 0; ch < 4; ch++) px += texels[t + ch] * 2 ** shift[ch];
      v.setUint32(dataAt + (stored * width + c) * 4, px, true);
    }
  }
  return file;
}

function randomBytes(n: number, seed: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13, x ^= x >>> 17, x ^= x << 5;
    out[i] = x & 255;
  }
  return out;
}

Deno.test("bmpTexelBytes reads bottom-up and top-down rows, any one-byte channel masks", () => {
  const width = 5, rows = 3;
  const texels = randomBytes(width * rows * 4, 11);
  for (const topDown of [false, true]) {
    for (const masks of [BGRA_MASKS, [0xff, 0xff00, 0xff0000, 0xff000000]]) {
      const file = bmp(texels, width, rows, { topDown, masks });
      assert.deepEqual(new Uint8Array(bmpTexelBytes(file, texels.length)), texels);
      // A prefix: whole texels, ending inside a row.
      assert.deepEqual(new Uint8Array(bmpTexelBytes(file, 28)), texels.subarray(0, 28));
    }
  }
});

Deno.test("bmpTexelBytes rejects what it cannot read exactly, naming the field", () => {
  const texels = randomBytes(4 * 4 * 2, 5);
  const reject = (file: ArrayBuffer, what: RegExp, bytes = texels.length) =>
    assert.throws(() => bmpTexelBytes(file, bytes), what);
  const good = bmp(texels, 4, 2);
  const bad = new Uint8Array(good.slice(0));
  bad[0] = 0x50;
  reject(bad.buffer, /no BM header/);
  reject(bmp(texels, 4, 2, { bpp: 24 }), /24 bits per pixel/);
  reject(bmp(texels, 4, 2, { compression: 0 }), /compression 0/);
  reject(bmp(texels, 4, 2, { header: 40 }), /no alpha mask/);
  reject(bmp(texels, 4, 2, { masks: [0xff0000, 0xff00, 0xff, 0xff0000] }), /overlap/);
  reject(bmp(texels, 4, 2, { masks: [0xff0000, 0xff00, 0xff, 0xf000000f] }), /alpha mask/);
  reject(good.slice(0, good.byteLength - 4), /past the end/);
  reject(good, /36 bytes asked of 32/, 36);
});

gpuTest("CanvasReadback returns a buffer's bytes exactly, up to its limit", async (ctx) => {
  const dev = ctx.device;
  const reader = await CanvasReadback.create(dev);
  assert.ok(reader, "the test adapters read through the canvas");
  assert.equal(reader.maxBytes, 64 * READBACK_ROW_BYTES);
  const sizes = [1, 4, 99, READBACK_ROW_BYTES, READBACK_ROW_BYTES + 4, 3 * READBACK_ROW_BYTES + 36];
  sizes.push(reader.maxBytes - 8, reader.maxBytes);
  for (const [i, n] of sizes.entries()) {
    const data = randomBytes(reader.stagingSize(n), 100 + i);
    const src = dev.createBuffer({
      size: reader.stagingSize(n),
      usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    try {
      dev.queue.writeBuffer(src, 0, data);
      const got: Uint8Array = new Uint8Array(await reader.read(src, n));
      assert.equal(got.length, n);
      const at = got.findIndex((v, k) => v !== data[k]);
      assert.equal(at, -1, `${n} bytes: byte ${at} differs`);
    } finally {
      src.destroy();
    }
  }
  await assert.rejects(
    () => reader.read(dev.createBuffer({ size: 4, usage: 4 }), 0),
    /1\.\.262144/,
  );
  await assert.rejects(
    () => reader.read(dev.createBuffer({ size: 4, usage: 4 }), reader.maxBytes + 4),
    /not 262148/,
  );
});

/**
 * Prefill logits (the last row: through the canvas; every row: 750 KiB, mapped either way) and 12
 * sampled tokens of 3 rows, as read.
 */
async function results(
  b: WebGpuBackend,
): Promise<{ last: Float32Array; each: Float32Array; tokens: Int32Array[] }> {
  const states = [b.allocState(), b.allocState(), b.allocState()];
  try {
    const last = await b.prefill(states[0], Int32Array.of(3, 14, 15, 92, 65), "last");
    const each = await b.prefill(states[1], Int32Array.of(35, 89, 79), "all");
    await b.prefill(states[2], Int32Array.of(32, 38), "none");
    const sampling = validateSamplingParams(
      { temperature: 0.9, seed: 4, topK: 40 },
      b.config.vocabSize,
    );
    const tokens = await b.decodeSampled(
      states.map((state, i) => ({
        state,
        token: 7 + i,
        budget: 12,
        sampling,
        rng: newRngState(40 + i),
        stopAtEos: false,
        penalties: false,
      })),
      12,
    );
    return { last, each, tokens };
  } finally {
    for (const s of states) b.releaseState(s);
  }
}

gpuTest("a readback option other than auto or map is refused at load", async (ctx) => {
  let opened = false;
  await assert.rejects(
    () =>
      withDefaultBackend(
        ctx,
        { maxSlots: 1, maxBatch: 1, readback: "canvas" as "map" },
        () => Promise.resolve(void (opened = true)),
      ),
    /readback.*"auto" or "map", not "canvas"/,
  );
  assert.equal(opened, false);
});

gpuTest(
  "the backend's results are the same bits read through the canvas or mapped",
  async (ctx) => {
    let canvas: Awaited<ReturnType<typeof results>> | null = null;
    await withDefaultBackend(ctx, { maxSlots: 4, maxBatch: 4 }, async (b) => {
      assert.equal(b.readback, "canvas");
      canvas = await results(b);
    });
    await withDefaultBackend(ctx, { maxSlots: 4, maxBatch: 4, readback: "map" }, async (b) => {
      assert.equal(b.readback, "map");
      const mapped = await results(b);
      assert.deepEqual(canvas, mapped);
    });
  },
);
