/**
 * The model's weights on the GPU in their stored dtype: f32 as is, bf16 and f16 packed two per u32
 * (widened in the shaders, so no `shader-f16` is needed); or, with int8 quantization, every matrix
 * as int8 packed four per u32 with one f32 scale per row (`q8`, src/model/quantize.ts; the shaders
 * rebuild q·s exactly as the CPU reference does). A matrix larger than the binding limit is
 * split into row chunks, each bound on its own. Small vectors (norm weights, biases, LRPE θ) are
 * widened to f32. Tensors are read and uploaded one at a time.
 * @module
 */

import type { ModelConfig } from "../model/config.ts";
import {
  type CheckpointSpec,
  checkTensor,
  readFloat32,
  type TensorSpec,
  validateCheckpoint,
} from "../model/checkpoint.ts";
import type { FloatDType } from "../model/weights/dtype.ts";
import type { TensorSource } from "../model/weights/source.ts";
import { quantizeInt8, type WeightQuantization } from "../model/quantize.ts";

/** WGSL-side name of a weight dtype (`q8`: int8 with per-row f32 scales). */
export type GpuDType = "f32" | "bf16" | "f16" | "q8";

/** Bytes per element of a weight dtype. */
export function dtypeBytes(dtype: GpuDType): number {
  return dtype === "f32" ? 4 : dtype === "q8" ? 1 : 2;
}

/** A row range of a matrix in one buffer. */
export interface MatrixChunk {
  /** The buffer (16-byte padded). */
  readonly buffer: GPUBuffer;
  /** First row held. */
  readonly rowBase: number;
  /** Rows held. */
  readonly rows: number;
}

/** A [rows, cols] weight matrix on the GPU. */
export interface GpuMatrix {
  /** Element type as stored. */
  readonly dtype: GpuDType;
  /** Rows (output features). */
  readonly rows: number;
  /** Columns (input features). */
  readonly cols: number;
  /** Row chunks, in order. */
  readonly chunks: readonly MatrixChunk[];
  /** `q8`: [rows] f32 scales, indexed by the global row; null otherwise. */
  readonly scales: GPUBuffer | null;
}

/** One layer's tensors on the GPU. */
export interface GpuLayerWeights {
  /** [4H, D]. */
  qkvu: GpuMatrix;
  /** [D, H]. */
  out: GpuMatrix;
  /** [G, D]. */
  l1: GpuMatrix;
  /** [G, D]. */
  l2: GpuMatrix;
  /** [D, G]. */
  l3: GpuMatrix;
  /** f32 vectors: biases, LayerNorm weights, θ ([h·hd]); absent when the config has none. */
  vectors: Partial<
    Record<
      | "qkvuBias"
      | "outBias"
      | "l1Bias"
      | "l2Bias"
      | "l3Bias"
      | "theta"
      | "tokenNormW"
      | "tokenNormB"
      | "mixerNormW"
      | "mixerNormB"
      | "channelNormW"
      | "channelNormB",
      GPUBuffer
    >
  >;
}

/** All weights of a model on the GPU. */
export interface GpuWeights {
  /** [V, D] embedding. */
  embed: GpuMatrix;
  /** [V, D] output head (the embedding when tied). */
  head: GpuMatrix;
  /** Final LayerNorm weight and bias (f32), when the config uses LayerNorm. */
  finalNorm: { w: GPUBuffer; b: GPUBuffer } | null;
  /** Per layer. */
  layers: GpuLayerWeights[];
  /** Bytes uploaded. */
  bytes: number;
}

const DTYPE_OF: Record<FloatDType, GpuDType> = { F32: "f32", BF16: "bf16", F16: "f16" };

/** Upload options. */
export interface UploadOptions {
  /** Largest bytes per binding (default: the device's maxStorageBufferBindingSize). */
  maxBindingBytes?: number;
  /** Called after each tensor, for progress. */
  onTensor?: (name: string, bytes: number) => void;
  /** Matrix weights as stored (default) or int8 with per-row scales. */
  quantize?: WeightQuantization;
}

/** Bytes written through the queue since the last flush (see `createFilled`). */
let pendingUploadBytes = 0;

/**
 * A storage buffer holding `data`. Written through the queue (a memcpy into wgpu's staging area):
 * a buffer mapped at creation costs far more per byte in Deno on a discrete GPU. The staging area is
 * handed to the GPU every 256 MiB so host memory stays bounded while a large model uploads.
 */
function createFilled(device: GPUDevice, data: Uint8Array, label: string): GPUBuffer {
  const size = Math.max(16, Math.ceil(data.byteLength / 16) * 16);
  const buffer = device.createBuffer({
    label,
    size,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
  });
  const whole = data.byteLength - (data.byteLength % 4);
  if (whole) device.queue.writeBuffer(buffer, 0, data as Uint8Array<ArrayBuffer>, 0, whole);
  if (whole < data.byteLength) {
    const tail = new Uint8Array(4);
    tail.set(data.subarray(whole));
    device.queue.writeBuffer(buffer, whole, tail);
  }
  pendingUploadBytes += data.byteLength;
  if (pendingUploadBytes >= 256 << 20) {
    device.queue.submit([]);
    pendingUploadBytes = 0;
  }
  return buffer;
}

/**
 * Upload a matrix in its stored dtype, split in row chunks no larger than `maxBytes`; `q8` takes
 * the int8 values in `bytes` and the row scales in `scales`.
 */
export function uploadMatrix(
  device: GPUDevice,
  bytes: Uint8Array,
  dtype: GpuDType,
  rows: number,
  cols: number,
  maxBytes: number,
  label: string,
  scales?: Float32Array,
): GpuMatrix {
  if ((dtype === "q8") !== Boolean(scales)) {
    throw new Error(`${label}: q8 weights need row scales, other dtypes none`);
  }
  const rowBytes = cols * dtypeBytes(dtype);
  // Chunks start on 16-byte boundaries: a multiple of 8 rows always does.
  let perChunk = Math.max(1, Math.floor(maxBytes / rowBytes));
  if (perChunk < rows) perChunk = Math.max(8, perChunk - (perChunk % 8));
  const chunks: MatrixChunk[] = [];
  for (let r = 0; r < rows; r += perChunk) {
    const n = Math.min(perChunk, rows - r);
    chunks.push({
      buffer: createFilled(
        device,
        bytes.subarray(r * rowBytes, (r + n) * rowBytes),
        `${label}[${r}..${r + n})`,
      ),
      rowBase: r,
      rows: n,
    });
  }
  const scaleBuffer = scales ? uploadF32(device, scales, `${label}.scales`) : null;
  return { dtype, rows, cols, chunks, scales: scaleBuffer };
}

/** The bind-group entry of a matrix's row scales at `binding` (none unless it is `q8`). */
export function scaleEntries(binding: number, m: GpuMatrix | undefined): [number, GPUBuffer][] {
  return m?.scales ? [[binding, m.scales]] : [];
}

/** Upload an f32 vector. */
export function uploadF32(device: GPUDevice, values: Float32Array, label: string): GPUBuffer {
  return createFilled(
    device,
    new Uint8Array(values.buffer, values.byteOffset, values.byteLength),
    label,
  );
}

/** Read every tensor the config needs and upload it. */
export async function uploadWeights(
  device: GPUDevice,
  source: TensorSource,
  config: ModelConfig,
  label: string,
  options: UploadOptions = {},
): Promise<GpuWeights> {
  const spec: CheckpointSpec = validateCheckpoint(source, config, label);
  const maxBytes = options.maxBindingBytes ?? device.limits.maxStorageBufferBindingSize;
  let total = 0;
  const matrix = async (s: TensorSpec | undefined): Promise<GpuMatrix> => {
    if (options.quantize === "int8") {
      const [rows, cols] = s!.shape;
      const v = await readFloat32(source, s!, label);
      const q = quantizeInt8(v, rows, cols, s!.name);
      const bytes = new Uint8Array(q.q.buffer, q.q.byteOffset, q.q.byteLength);
      total += bytes.byteLength + q.scales.byteLength;
      const m = uploadMatrix(device, bytes, "q8", rows, cols, maxBytes, s!.name, q.scales);
      options.onTensor?.(s!.name, bytes.byteLength);
      return m;
    }
    const info = checkTensor(source, s!, label);
    const bytes = await source.read(s!.name);
    total += bytes.byteLength;
    const m = uploadMatrix(
      device,
      bytes,
      DTYPE_OF[info.dtype],
      s!.shape[0],
      s!.shape[1],
      maxBytes,
      s!.name,
    );
    options.onTensor?.(s!.name, bytes.byteLength);
    return m;
  };
  const vector = async (s: TensorSpec | undefined): Promise<GPUBuffer | undefined> => {
    if (!s) return undefined;
    const v = await readFloat32(source, s, label);
    total += v.byteLength;
    options.onTensor?.(s.name, v.byteLength);
    return uploadF32(device, v, s.name);
  };
  const embed = await matrix(spec.global.embed);
  const head = spec.global.head ? await matrix(spec.global.head) : embed;
  const finalNorm = spec.global.finalNormW
    ? { w: (await vector(spec.global.finalNormW))!, b: (await vector(spec.global.finalNormB))! }
    : null;
  const layers: GpuLayerWeights[] = [];
  for (const t of spec.layers) {
    const vectors: GpuLayerWeights["vectors"] = {};
    for (
      const k of [
        "qkvuBias",
        "outBias",
        "l1Bias",
        "l2Bias",
        "l3Bias",
        "theta",
        "tokenNormW",
        "tokenNormB",
        "mixerNormW",
        "mixerNormB",
        "channelNormW",
        "channelNormB",
      ] as const
    ) {
      const b = await vector(t[k]);
      if (b) vectors[k] = b;
    }
    layers.push({
      qkvu: await matrix(t.qkvu),
      out: await matrix(t.out),
      l1: await matrix(t.l1),
      l2: await matrix(t.l2),
      l3: await matrix(t.l3),
      vectors,
    });
  }
  return { embed, head, finalNorm, layers, bytes: total };
}

/** Destroy every buffer of the weights. */
export function destroyWeights(w: GpuWeights): void {
  const mats = [w.embed, w.head, ...w.layers.flatMap((l) => [l.qkvu, l.out, l.l1, l.l2, l.l3])];
  for (const m of new Set(mats)) {
    for (const c of m.chunks) c.buffer.destroy();
    m.scales?.destroy();
  }
  for (const l of w.layers) for (const b of Object.values(l.vectors)) b?.destroy();
  w.finalNorm?.w.destroy();
  w.finalNorm?.b.destroy();
}
