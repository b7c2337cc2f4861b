/**
 * Run one WGSL kernel on given data and read buffers back: the per-kernel test harness.
 * @module
 */

import assert from "node:assert/strict";
import { dequantizeInt8, quantizeInt8 } from "../../src/model/quantize.ts";
import type { GpuContext } from "../../src/gpu/device.ts";
import { type Defines, PipelineCache } from "../../src/gpu/shaders.ts";
import { f32ToBf16, f32ToF16 } from "../../src/model/weights/dtype.ts";
import type { ModelState } from "../../src/model/state.ts";

/** A weight dtype of the kernels (`q8`: int8 with per-row f32 scales). */
export type WeightDType = "f32" | "bf16" | "f16" | "q8";

/** Running on the GL backend (llvmpipe), where large workgroup arrays compile very slowly. */
export const GL: boolean = Deno.env.get("DENO_WEBGPU_BACKEND") === "gl";

/**
 * Assert that `got` matches the reference `want` within `tol`, relative to max(1, |want|) (so an
 * absolute tolerance near zero); names the worst element.
 */
export function assertClose(
  got: Float32Array,
  want: ArrayLike<number>,
  tol: number,
  what: string,
): void {
  let worst = 0, at = -1;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]) / Math.max(1, Math.abs(want[i]));
    if (!(d <= worst)) {
      worst = d;
      at = i;
    }
  }
  assert.ok(
    worst <= tol,
    `${what}: element ${at} differs by ${worst} (got ${got[at]}, want ${
      want[at]
    }; tolerance ${tol})`,
  );
}

/** The same bits, or a failure naming the first difference (a diff of it all is too large). */
export function sameBits(a: ArrayBufferView, b: ArrayBufferView, what: string): void {
  const x = new Uint32Array(a.buffer, a.byteOffset, a.byteLength / 4);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.byteLength / 4);
  assert.equal(x.length, y.length, `${what}: length`);
  const i = x.findIndex((v, k) => v !== y[k]);
  if (i >= 0) assert.fail(`${what}: first difference at ${i} (${x[i]} against ${y[i]})`);
}

/** Model states with the same positions and the same bits, layer by layer. */
export function sameStates(a: ModelState[], b: ModelState[]): void {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) {
    assert.equal(a[i].position, b[i].position, `sequence ${i} position`);
    a[i].layers.forEach((l, j) => sameBits(l, b[i].layers[j], `${i}/${j}`));
  }
}

const caches = new WeakMap<GPUDevice, PipelineCache>();

/** A binding's initial contents (or a zeroed size in bytes) and whether to read it back. */
export type Binding =
  | { data: ArrayBufferView | number; read?: boolean; uniform?: boolean }
  | { buffer: GPUBuffer; read?: boolean; bytes?: number };

/** A persistent storage buffer for chaining kernels (destroy it when done). */
export function storageBuffer(ctx: GpuContext, data: ArrayBufferView | number): GPUBuffer {
  const bytes = typeof data === "number" ? data : data.byteLength;
  const buf = ctx.device.createBuffer({
    size: Math.max(16, Math.ceil(bytes / 16) * 16),
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC,
  });
  if (typeof data !== "number") {
    ctx.device.queue.writeBuffer(
      buf,
      0,
      new Uint8Array(data.buffer, data.byteOffset, data.byteLength).slice(),
    );
  }
  return buf;
}

/** Run `kernel` once; returns the read-back bindings as Float32Array / Uint32Array views of bytes. */
export async function runKernel(
  ctx: GpuContext,
  kernel: string,
  defines: Defines,
  bindings: Record<number, Binding>,
  groups: [number, number?, number?],
): Promise<Record<number, ArrayBuffer>> {
  const dev = ctx.device;
  let cache = caches.get(dev);
  if (!cache) caches.set(dev, cache = new PipelineCache(dev));
  const pipeline = await cache.get(kernel, defines);
  const buffers: Record<number, GPUBuffer> = {};
  const owned: GPUBuffer[] = [];
  for (const [k, b] of Object.entries(bindings)) {
    if ("buffer" in b) {
      buffers[Number(k)] = b.buffer;
      continue;
    }
    const bytes = typeof b.data === "number" ? b.data : b.data.byteLength;
    const size = Math.max(16, Math.ceil(bytes / 16) * 16);
    const usage = b.uniform
      ? GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST
      : GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
    const buf = dev.createBuffer({ size, usage });
    if (typeof b.data !== "number") {
      const padded = new Uint8Array(size);
      padded.set(new Uint8Array(b.data.buffer, b.data.byteOffset, b.data.byteLength));
      dev.queue.writeBuffer(buf, 0, padded);
    }
    buffers[Number(k)] = buf;
    owned.push(buf);
  }
  dev.pushErrorScope("validation");
  const bg = dev.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: Object.entries(buffers).map(([k, buffer]) => ({
      binding: Number(k),
      resource: { buffer },
    })),
  });
  const enc = dev.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, bg);
  pass.dispatchWorkgroups(groups[0], groups[1] ?? 1, groups[2] ?? 1);
  pass.end();
  const reads: [number, GPUBuffer, number][] = [];
  for (const [k, b] of Object.entries(bindings)) {
    if (!b.read) continue;
    const buf = buffers[Number(k)];
    const staging = dev.createBuffer({
      size: buf.size,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    enc.copyBufferToBuffer(buf, 0, staging, 0, buf.size);
    const bytes = "buffer" in b
      ? (b.bytes ?? buf.size)
      : typeof b.data === "number"
      ? b.data
      : b.data.byteLength;
    reads.push([Number(k), staging, bytes]);
  }
  dev.queue.submit([enc.finish()]);
  const err = await dev.popErrorScope();
  if (err) throw new Error(`${kernel}: ${err.message}`);
  const out: Record<number, ArrayBuffer> = {};
  for (const [k, staging, bytes] of reads) {
    await staging.mapAsync(GPUMapMode.READ);
    out[k] = staging.getMappedRange().slice(0, bytes);
    staging.unmap();
    staging.destroy();
  }
  for (const b of owned) b.destroy();
  return out;
}

/** Deterministic pseudo-random floats in [-scale, scale]. */
export function randomF32(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = ((s >>> 0) / 4294967296 * 2 - 1) * scale;
  }
  return out;
}

/** Weights encoded in a dtype, plus their exact f32 values (what the kernel must compute with). */
export function encodeWeights(
  values: Float32Array,
  dtype: WeightDType,
  rows = 1,
): { bytes: Uint8Array; exact: Float32Array; scales?: Float32Array } {
  if (dtype === "f32") return { bytes: new Uint8Array(values.buffer.slice(0)), exact: values };
  if (dtype === "q8") {
    const q = quantizeInt8(values, rows, values.length / rows);
    return { bytes: new Uint8Array(q.q.buffer), exact: dequantizeInt8(q), scales: q.scales };
  }
  const h = new Uint16Array(values.length);
  const exact = new Float32Array(values.length);
  const conv = dtype === "bf16" ? f32ToBf16 : f32ToF16;
  for (let i = 0; i < values.length; i++) h[i] = conv(values[i]);
  // Widen back on the CPU for the reference.
  const widen = new Float32Array(new Uint32Array(values.length).buffer);
  if (dtype === "bf16") {
    const u = new Uint32Array(widen.buffer);
    for (let i = 0; i < values.length; i++) u[i] = h[i] << 16;
    exact.set(widen);
  } else {
    for (let i = 0; i < values.length; i++) {
      const v = h[i];
      const e = (v >> 10) & 31, m = v & 1023, sgn = v & 0x8000 ? -1 : 1;
      exact[i] = e === 0
        ? sgn * m * 2 ** -24
        : e === 31
        ? (m ? NaN : sgn * Infinity)
        : sgn * (1 + m / 1024) * 2 ** (e - 15);
    }
  }
  return { bytes: new Uint8Array(h.buffer), exact };
}
