/**
 * GPU timing from timestamp queries, for benchmarks and profiles.
 * @module
 */

/**
 * Encode `count` items, each in its own compute pass with timestamps at its start and end, submit,
 * and return each item's GPU time in nanoseconds. `before` may encode untimed commands ahead of
 * each pass (copies that restore an input). The device needs `timestamp-query`.
 */
export async function timePasses(
  device: GPUDevice,
  count: number,
  encode: (pass: GPUComputePassEncoder, index: number) => void,
  before?: (encoder: GPUCommandEncoder, index: number) => void,
): Promise<number[]> {
  const qs = device.createQuerySet({ type: "timestamp", count: 2 * count });
  const resolve = device.createBuffer({
    size: 16 * count,
    usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
  });
  const read = device.createBuffer({
    size: 16 * count,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  try {
    const enc = device.createCommandEncoder();
    for (let i = 0; i < count; i++) {
      before?.(enc, i);
      const pass = enc.beginComputePass({
        timestampWrites: {
          querySet: qs,
          beginningOfPassWriteIndex: 2 * i,
          endOfPassWriteIndex: 2 * i + 1,
        },
      });
      encode(pass, i);
      pass.end();
    }
    enc.resolveQuerySet(qs, 0, 2 * count, resolve, 0);
    enc.copyBufferToBuffer(resolve, 0, read, 0, 16 * count);
    device.queue.submit([enc.finish()]);
    await read.mapAsync(GPUMapMode.READ);
    const t = new BigUint64Array(read.getMappedRange().slice(0));
    read.unmap();
    return Array.from({ length: count }, (_, i) => Number(t[2 * i + 1] - t[2 * i]));
  } finally {
    qs.destroy();
    resolve.destroy();
    read.destroy();
  }
}
