/**
 * Small helpers that create GPU resources and remember them for destruction: storage buffers,
 * uniform buffers of u32/f32 words, and bind groups of (binding, buffer) pairs.
 * @module
 */

/** Storage buffers that can be written and copied both ways. */
export const STORAGE_USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST |
  GPUBufferUsage.COPY_SRC;

/** A uniform word: a u32, or `{ f32 }` for a float. */
export type UniformWord = number | { f32: number };

/** Owns the buffers it creates. */
export class GpuResources {
  readonly #device: GPUDevice;
  readonly #owned: GPUBuffer[] = [];

  /** Bind to a device. */
  constructor(device: GPUDevice) {
    this.#device = device;
  }

  /** The device the resources live on. */
  get device(): GPUDevice {
    return this.#device;
  }

  /** A zeroed storage buffer of at least `bytes` (16-byte multiple). */
  storage(label: string, bytes: number, usage: number = STORAGE_USAGE): GPUBuffer {
    const b = this.#device.createBuffer({
      label,
      size: Math.max(16, Math.ceil(bytes / 16) * 16),
      usage,
    });
    this.#owned.push(b);
    return b;
  }

  /** A uniform buffer holding `words` (writable later with `writeUniform`). */
  uniform(words: UniformWord[], label: string): GPUBuffer {
    const b = this.#device.createBuffer({
      label,
      size: Math.max(16, Math.ceil((words.length * 4) / 16) * 16),
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      mappedAtCreation: true,
    });
    encodeWords(words, b.getMappedRange());
    b.unmap();
    this.#owned.push(b);
    return b;
  }

  /** Queue a rewrite of a uniform buffer (ordered before the next submit). */
  writeUniform(buffer: GPUBuffer, words: UniformWord[]): void {
    const data = new ArrayBuffer(words.length * 4);
    encodeWords(words, data);
    this.#device.queue.writeBuffer(buffer, 0, data);
  }

  /** A bind group of `pipeline`'s group 0 from (binding, buffer) pairs. */
  bindGroup(
    pipeline: GPUComputePipeline,
    entries: [number, GPUBuffer][],
    label: string,
  ): GPUBindGroup {
    return this.#device.createBindGroup({
      label,
      layout: pipeline.getBindGroupLayout(0),
      entries: entries.map(([binding, buffer]) => ({ binding, resource: { buffer } })),
    });
  }

  /** Adopt a buffer created elsewhere. */
  adopt(buffer: GPUBuffer): GPUBuffer {
    this.#owned.push(buffer);
    return buffer;
  }

  /** Destroy every owned buffer. */
  destroy(): void {
    for (const b of this.#owned) b.destroy();
    this.#owned.length = 0;
  }
}

function encodeWords(words: UniformWord[], target: ArrayBuffer): void {
  const u = new Uint32Array(target);
  const f = new Float32Array(target);
  words.forEach((w, i) => {
    if (typeof w === "number") u[i] = w;
    else f[i] = w.f32;
  });
}
