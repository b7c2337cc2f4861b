/**
 * `StagingPool`: mappable buffers for readbacks, kept and reused. Creating a 13 MB `MAP_READ`
 * buffer per readback (and destroying it after) cost more worker time than the copy itself when
 * kept sessions' states came back every round; the pool hands out the smallest free buffer that
 * fits and keeps what it gets back, up to a byte limit. Reads a `CanvasReadback` takes (small ones,
 * where the runtime can) get `COPY_SRC` buffers read through it instead of mappable ones.
 * @module
 */

import type { CanvasReadback } from "./readback.ts";

/**
 * Reusable readback buffers of one device: `MAP_READ | COPY_DST`, or `COPY_SRC | COPY_DST` for
 * the canvas.
 */
export class StagingPool {
  readonly #device: GPUDevice;
  readonly #keepBytes: number;
  readonly #free: GPUBuffer[] = [];
  #freeBytes = 0;
  /** The canvas reader for reads it can take, if this runtime has one. */
  readonly reader: CanvasReadback | null;

  /**
   * A pool for `device` that keeps at most `keepBytes` of free buffers (default 1 GiB); reads of
   * at most `reader.maxBytes` go through `reader` when one is given.
   */
  constructor(device: GPUDevice, reader: CanvasReadback | null = null, keepBytes = 1 << 30) {
    this.#device = device;
    this.reader = reader;
    this.#keepBytes = keepBytes;
  }

  /** Whether `buffer` (from `take`) is read through `reader` rather than mapped. */
  readsThroughCanvas(buffer: GPUBuffer): boolean {
    return !(buffer.usage & GPUBufferUsage.MAP_READ);
  }

  /**
   * A buffer for a read of `bytes`, unmapped, owned by the caller until `give`: at least `bytes`
   * (rounded up to 4, or to `reader`'s rows), mappable unless `reader` takes the read.
   */
  take(bytes: number): GPUBuffer {
    const canvas = this.reader !== null && bytes <= this.reader.maxBytes;
    const usage = canvas
      ? GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST
      : GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST;
    const size = canvas ? this.reader!.stagingSize(bytes) : Math.max(4, Math.ceil(bytes / 4) * 4);
    let best = -1;
    for (let i = 0; i < this.#free.length; i++) {
      const b = this.#free[i];
      if (
        b.usage === usage && b.size >= size && b.size <= 2 * size &&
        (best < 0 || b.size < this.#free[best].size)
      ) {
        best = i;
      }
    }
    if (best >= 0) {
      const [b] = this.#free.splice(best, 1);
      this.#freeBytes -= b.size;
      return b;
    }
    return this.#device.createBuffer({ size, usage });
  }

  /** Give a buffer back (unmapped): kept for reuse while the pool is under its limit. */
  give(buffer: GPUBuffer): void {
    if (buffer.mapState !== "unmapped") buffer.unmap();
    this.#free.push(buffer);
    this.#freeBytes += buffer.size;
    // Over the limit: the oldest free buffers go first.
    while (this.#freeBytes > this.#keepBytes && this.#free.length) {
      const old = this.#free.shift()!;
      this.#freeBytes -= old.size;
      old.destroy();
    }
  }

  /** Destroy every free buffer and the reader's canvases. */
  destroy(): void {
    this.reader?.destroy();
    for (const b of this.#free) b.destroy();
    this.#free.length = 0;
    this.#freeBytes = 0;
  }
}
