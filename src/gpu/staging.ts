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
  readonly #reader: CanvasReadback | null;
  #destroyed = false;

  /**
   * A pool for `device` that keeps at most `keepBytes` of free buffers (default 1 GiB); reads of
   * at most `reader.maxBytes` go through `reader` when one is given.
   */
  constructor(device: GPUDevice, reader: CanvasReadback | null = null, keepBytes = 1 << 30) {
    this.#device = device;
    this.#reader = reader;
    this.#keepBytes = keepBytes;
  }

  /**
   * Read the first `bytes` of `buffer` (from `take`; the work that fills it already submitted) as
   * the pool made it: through the canvas reader, or mapped. `use` copies what it needs out of the
   * bytes (valid only during the call); the buffer then comes back to the pool, or is destroyed
   * when the read failed or `abort` (device loss) rejected first. Either way the calling thread
   * waits for the device to finish what was submitted; only the map then waits for Deno's 10 ms
   * timer.
   */
  async read<T>(
    buffer: GPUBuffer,
    bytes: number,
    use: (data: ArrayBuffer) => T,
    abort: Promise<never>,
  ): Promise<T> {
    let ok = false;
    try {
      let out: T;
      if (buffer.usage & GPUBufferUsage.MAP_READ) {
        await Promise.race([buffer.mapAsync(GPUMapMode.READ, 0, bytes), abort]);
        out = use(buffer.getMappedRange(0, bytes));
        buffer.unmap();
      } else {
        out = use(await Promise.race([this.#reader!.read(buffer, bytes), abort]));
      }
      ok = true;
      return out;
    } finally {
      if (ok) this.give(buffer);
      else buffer.destroy();
    }
  }

  /**
   * A buffer for a read of `bytes`, unmapped, owned by the caller until `give`: at least `bytes`
   * (rounded up to 4, or to `reader`'s rows), mappable unless `reader` takes the read.
   */
  take(bytes: number): GPUBuffer {
    const canvas = this.#reader !== null && bytes <= this.#reader.maxBytes;
    const usage = canvas
      ? GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST
      : GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST;
    const size = canvas ? this.#reader!.stagingSize(bytes) : Math.max(4, Math.ceil(bytes / 4) * 4);
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

  /**
   * Give a buffer back: kept for reuse while the pool is under its limit (destroyed once the pool
   * is).
   */
  give(buffer: GPUBuffer): void {
    if (this.#destroyed) return buffer.destroy();
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
    this.#destroyed = true;
    this.#reader?.destroy();
    for (const b of this.#free) b.destroy();
    this.#free.length = 0;
    this.#freeBytes = 0;
  }
}
