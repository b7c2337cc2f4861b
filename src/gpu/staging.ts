/**
 * `StagingPool`: mappable buffers for readbacks, kept and reused. Creating a 13 MB `MAP_READ`
 * buffer per readback (and destroying it after) cost more worker time than the copy itself when
 * kept sessions' states came back every round; the pool hands out the smallest free buffer that
 * fits and keeps what it gets back, up to a byte limit.
 * @module
 */

/** Reusable `MAP_READ | COPY_DST` buffers of one device. */
export class StagingPool {
  readonly #device: GPUDevice;
  readonly #keepBytes: number;
  readonly #free: GPUBuffer[] = [];
  #freeBytes = 0;

  /** A pool for `device` that keeps at most `keepBytes` of free buffers (default 1 GiB). */
  constructor(device: GPUDevice, keepBytes = 1 << 30) {
    this.#device = device;
    this.#keepBytes = keepBytes;
  }

  /** A buffer of at least `bytes` (rounded up to 4), unmapped, owned by the caller until `give`. */
  take(bytes: number): GPUBuffer {
    const size = Math.max(4, Math.ceil(bytes / 4) * 4);
    let best = -1;
    for (let i = 0; i < this.#free.length; i++) {
      const b = this.#free[i];
      if (b.size >= size && b.size <= 2 * size && (best < 0 || b.size < this.#free[best].size)) {
        best = i;
      }
    }
    if (best >= 0) {
      const [b] = this.#free.splice(best, 1);
      this.#freeBytes -= b.size;
      return b;
    }
    return this.#device.createBuffer({
      size,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
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

  /** Destroy every free buffer. */
  destroy(): void {
    for (const b of this.#free) b.destroy();
    this.#free.length = 0;
    this.#freeBytes = 0;
  }
}
