/**
 * Small readbacks without the map's timer. Deno's `mapAsync` waits for the device to go idle, then
 * sleeps 10 ms on a timer before it resolves (`ext/webgpu/buffer.rs`), whatever was read: a 4 KB
 * read takes 10-12 ms. An `OffscreenCanvas` with a "webgpu" context reads its texture back when it
 * is encoded (`convertToBlob`, `ext/webgpu/canvas.rs`): a copy, a wait for that submission, and no
 * timer. `CanvasReadback` copies the bytes to read into such a canvas's rgba8 texture, takes the
 * canvas as an uncompressed 32-bit BMP and returns the texels' bytes as they were in the buffer.
 * A round trip of every byte value is checked before it is used; the backend falls back to the
 * map where the runtime has no such canvas or the check fails.
 * @module
 */

/**
 * Texels per row of the readback canvases (rgba8: 4,096 bytes, a multiple of the 256 that
 * buffer-texture copies need).
 */
const TEXELS_PER_ROW = 1024;
/** Bytes per texel row. */
export const READBACK_ROW_BYTES = TEXELS_PER_ROW * 4;
/**
 * Default largest read: the host's BMP encoding and byte shuffle grow with the size, the map's
 * 10 ms do not.
 */
const DEFAULT_MAX_BYTES = 256 * 1024;

/** A canvas of one height and its configured context. */
interface ReadbackCanvas {
  canvas: OffscreenCanvas;
  context: GPUCanvasContext;
}

/**
 * Reads up to `maxBytes` from a `COPY_SRC` buffer through an `OffscreenCanvas`, without the map's
 * 10 ms timer; the calling thread waits for the device as a map does.
 *
 * @example
 * ```ts ignore
 * const reader = await CanvasReadback.create(device); // null where the runtime cannot
 * const src = device.createBuffer({
 *   size: reader!.stagingSize(1000),
 *   usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
 * });
 * // ... copy results into src ...
 * const bytes = new Uint8Array(await reader!.read(src, 1000));
 * ```
 */
export class CanvasReadback {
  /** Largest read this reader takes (a whole number of texel rows). */
  readonly maxBytes: number;
  readonly #device: GPUDevice;
  /** Canvases by height (powers of two up to `maxBytes / READBACK_ROW_BYTES` rows). */
  readonly #canvases = new Map<number, ReadbackCanvas>();

  private constructor(device: GPUDevice, maxBytes: number) {
    this.#device = device;
    this.maxBytes = Math.max(1, Math.floor(maxBytes / READBACK_ROW_BYTES)) * READBACK_ROW_BYTES;
  }

  /**
   * A reader for `device`, or null where this runtime has no `OffscreenCanvas` with a "webgpu"
   * context, or a round trip of known bytes through it does not come back exact.
   */
  static async create(
    device: GPUDevice,
    maxBytes = DEFAULT_MAX_BYTES,
  ): Promise<CanvasReadback | null> {
    if (typeof OffscreenCanvas !== "function") return null;
    const reader = new CanvasReadback(device, maxBytes);
    let src: GPUBuffer | null = null;
    let same = false;
    device.pushErrorScope("validation");
    try {
      // Every byte value in every channel, over more than one row and a partial last row.
      const bytes = Math.min(reader.maxBytes, READBACK_ROW_BYTES + 1028);
      const pattern = new Uint8Array(bytes);
      for (let i = 0; i < bytes; i++) pattern[i] = ((i >> 2) + 37 * (i & 3)) & 255;
      src = device.createBuffer({
        size: reader.stagingSize(bytes),
        usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
      });
      device.queue.writeBuffer(src, 0, pattern);
      const got = new Uint8Array(await reader.read(src, bytes));
      same = got.length === bytes && got.every((v, i) => v === pattern[i]);
    } catch {
      same = false;
    } finally {
      src?.destroy();
    }
    const err = await device.popErrorScope();
    if (same && !err) return reader;
    reader.destroy();
    return null;
  }

  /** Bytes a staging buffer read by `read(buffer, bytes)` must have: whole texel rows. */
  stagingSize(bytes: number): number {
    return Math.max(1, Math.ceil(bytes / READBACK_ROW_BYTES)) * READBACK_ROW_BYTES;
  }

  /**
   * The first `bytes` (at most `maxBytes`) of `src`, a `COPY_SRC` buffer of at least
   * `stagingSize(bytes)` bytes, as they stand after the work submitted so far.
   */
  async read(src: GPUBuffer, bytes: number): Promise<ArrayBuffer> {
    if (!(bytes > 0 && bytes <= this.maxBytes)) {
      throw new RangeError(`a canvas readback takes 1..${this.maxBytes} bytes, not ${bytes}`);
    }
    const rows = Math.ceil(bytes / READBACK_ROW_BYTES);
    const { canvas, context } = this.#canvas(2 ** Math.ceil(Math.log2(rows)));
    const enc = this.#device.createCommandEncoder();
    enc.copyBufferToTexture(
      { buffer: src, bytesPerRow: READBACK_ROW_BYTES },
      { texture: context.getCurrentTexture() },
      { width: TEXELS_PER_ROW, height: rows },
    );
    this.#device.queue.submit([enc.finish()]);
    // The texture is copied out and waited for inside this call (no timer); the encoding follows.
    const blob = await canvas.convertToBlob({ type: "image/bmp" });
    const texels = bmpTexelBytes(await blob.arrayBuffer(), Math.ceil(bytes / 4) * 4);
    return bytes % 4 ? texels.slice(0, bytes) : texels;
  }

  /** Release the canvases' textures (before their device goes). */
  destroy(): void {
    for (const { context } of this.#canvases.values()) context.unconfigure();
    this.#canvases.clear();
  }

  #canvas(height: number): ReadbackCanvas {
    let c = this.#canvases.get(height);
    if (!c) {
      const canvas = new OffscreenCanvas(TEXELS_PER_ROW, height);
      const context = canvas.getContext("webgpu") as GPUCanvasContext | null;
      if (!context) throw new Error("OffscreenCanvas has no webgpu context");
      context.configure({
        device: this.#device,
        format: "rgba8unorm",
        usage: GPUTextureUsage.COPY_DST,
        alphaMode: "premultiplied",
      });
      c = { canvas, context };
      this.#canvases.set(height, c);
    }
    return c;
  }
}

/** The byte (0-3) of a little-endian 32-bit pixel that a one-byte channel mask selects. */
function maskByte(mask: number, name: string): number {
  for (let k = 0; k < 4; k++) if (mask >>> 0 === (0xff << (8 * k)) >>> 0) return k;
  throw new Error(`BMP ${name} mask 0x${(mask >>> 0).toString(16)} is not one byte`);
}

/**
 * The first `bytes` of an rgba8 image's texels, rows top to bottom, from a 32-bit BMP with
 * channel masks (BI_BITFIELDS, a V3 header or later: the alpha mask is needed for the fourth
 * byte), stored bottom-up or top-down. Anything else is rejected with the field that differs.
 */
export function bmpTexelBytes(file: ArrayBuffer, bytes: number): ArrayBuffer {
  const v = new DataView(file);
  const fail = (what: string): never => {
    throw new Error(`not a 32-bit BMP with channel masks: ${what}`);
  };
  if (file.byteLength < 70 || v.getUint16(0, false) !== 0x424d) fail("no BM header");
  const dataAt = v.getUint32(10, true);
  const headerSize = v.getUint32(14, true);
  const width = v.getInt32(18, true);
  const height = v.getInt32(22, true);
  const bpp = v.getUint16(28, true);
  const compression = v.getUint32(30, true);
  if (headerSize < 56) fail(`header of ${headerSize} bytes has no alpha mask`);
  if (bpp !== 32) fail(`${bpp} bits per pixel`);
  if (compression !== 3) fail(`compression ${compression}`);
  if (width <= 0 || height === 0) fail(`size ${width}×${height}`);
  const rows = Math.abs(height), rowBytes = width * 4;
  if (dataAt + rows * rowBytes > file.byteLength) fail("pixel data past the end of the file");
  if (bytes > rows * rowBytes || bytes % 4) fail(`${bytes} bytes asked of ${rows * rowBytes}`);
  // Which byte of a stored pixel holds each texel byte (r, g, b, a in memory order).
  const at = ["red", "green", "blue", "alpha"].map((n, i) =>
    maskByte(v.getUint32(54 + 4 * i, true), n)
  );
  if (new Set(at).size !== 4) fail("channel masks overlap");
  const [r, g, b, a] = at.map((k) => 8 * k);
  const pixels = new Uint32Array(file.slice(dataAt, dataAt + rows * rowBytes));
  const out = new Uint32Array(bytes / 4);
  for (let row = 0, i = 0; i < out.length; row++) {
    const from = (height > 0 ? rows - 1 - row : row) * width;
    const end = Math.min(out.length, i + width);
    for (let c = from; i < end; i++, c++) {
      const t = pixels[c];
      out[i] = ((t >>> r) & 255) | (((t >>> g) & 255) << 8) | (((t >>> b) & 255) << 16) |
        (((t >>> a) & 255) << 24);
    }
  }
  return out.buffer;
}
