/**
 * The model's weights on the CPU, in their stored precision: matrices stay f32, bf16 or f16 as the
 * checkpoint holds them, or become int8 with per-row scales (`quantize: "int8"`, the same q and
 * scales as `src/model/quantize.ts` gives the GPU). On the wasm path they are read straight into
 * the kernels' arena (`TensorSource.readInto` where the source has it), one tensor at a time, and
 * int8 is quantized from slices of rows: no f32 copy of a whole matrix is made, and no whole stored
 * matrix is held next to its int8 copy.
 * @module
 */

import { WeightsError } from "../errors.ts";
import type { ModelConfig } from "../model/config.ts";
import {
  type CheckpointSpec,
  checkTensor,
  readFloat32,
  type TensorSpec,
  validateCheckpoint,
} from "../model/checkpoint.ts";
import { readTensorInto, type TensorSource } from "../model/weights/source.ts";
import { DTYPE_BYTES, toFloat32 } from "../model/weights/dtype.ts";
import { quantizeRowInto, type WeightQuantization } from "../model/quantize.ts";
import { HEAP_ALLOCATOR, type MatrixAllocator, storedBytes, type StoredMatrix } from "./stored.ts";
import { I8_SLACK, WasmArena } from "./wasm/mod.ts";

/** One decoder layer's weights (biases and norm weights null when the config has none). */
export interface CpuLayerWeights {
  /** [4H, D] fused q,k,v,u projection. */
  qkvu: StoredMatrix;
  /** [4H] or null. */
  qkvuBias: Float32Array | null;
  /** [D, H] output projection. */
  out: StoredMatrix;
  /** [D] or null. */
  outBias: Float32Array | null;
  /** [h, hd] LRPE angles per head (null without LRPE). */
  theta: Float32Array | null;
  /** SGLU [G, D], [G, D], [D, G] and their biases. */
  l1: StoredMatrix;
  /** [G, D]. */
  l2: StoredMatrix;
  /** [D, G]. */
  l3: StoredMatrix;
  /** [G] or null. */
  l1Bias: Float32Array | null;
  /** [G] or null. */
  l2Bias: Float32Array | null;
  /** [D] or null. */
  l3Bias: Float32Array | null;
  /** LayerNorm weights (null with SimpleRMSNorm). */
  tokenNorm: { w: Float32Array; b: Float32Array } | null;
  /** LayerNorm of the token mixer output over H. */
  mixerNorm: { w: Float32Array; b: Float32Array } | null;
  /** LayerNorm before the channel mixer. */
  channelNorm: { w: Float32Array; b: Float32Array } | null;
}

/** All weights of a model. */
export interface CpuWeights {
  /** [V, D] token embedding (also the output head when tied). */
  embed: StoredMatrix;
  /** [V, D] output head (the embedding when tied). */
  head: StoredMatrix;
  /** Final LayerNorm (null with SimpleRMSNorm). */
  finalNorm: { w: Float32Array; b: Float32Array } | null;
  /** Per layer. */
  layers: CpuLayerWeights[];
  /**
   * The wasm arena holding the matrices and biases (with room left for the model's scratch), or
   * null when they are plain typed arrays.
   */
  arena: WasmArena | null;
}

/** Options of {@link loadCpuWeights}. */
export interface LoadCpuWeightsOptions {
  /** Weight-only int8 (`"int8"`) or the stored precision (`"none"`, default). */
  quantize?: WeightQuantization;
  /**
   * Load into a wasm arena with this many bytes left free for scratch (when the runtime supports
   * the kernels); null or absent: plain typed arrays.
   */
  arenaScratchBytes?: number | null;
  /** Make the arena shared (for kernel threads; where the runtime supports it). */
  sharedArena?: boolean;
  /**
   * With `quantize: "int8"`: bytes of a stored matrix read at a time (whole rows, at least one;
   * default 4 MiB), so the load never holds a whole stored matrix next to its int8 copy.
   */
  quantSliceBytes?: number;
}

/** Bytes of one allocation in the arena (each starts on a 64-byte line). */
const line = (bytes: number) => Math.ceil(bytes / 64) * 64;

/** Arena bytes the matrices and biases of `spec` take with `quantize`. */
function arenaBytes(source: TensorSource, spec: CheckpointSpec, q: WeightQuantization): number {
  let bytes = 64;
  const matrix = (s: TensorSpec | undefined) => {
    if (!s) return;
    const n = s.shape[0] * s.shape[1];
    const dtype = storedDType(source.tensors.get(s.name)!.dtype, q);
    // int8: the arena's slack after the matrix (allocI8), then the scales.
    bytes += dtype === "int8"
      ? line(n + I8_SLACK) + line(4 * s.shape[0])
      : line(storedBytes(dtype, n));
  };
  const vector = (s: TensorSpec | undefined) => {
    if (s) bytes += line(4 * s.shape[0]);
  };
  matrix(spec.global.embed);
  matrix(spec.global.head);
  for (const t of spec.layers) {
    for (const m of [t.qkvu, t.out, t.l1, t.l2, t.l3]) matrix(m);
    for (const v of [t.qkvuBias, t.outBias, t.l1Bias, t.l2Bias, t.l3Bias]) vector(v);
  }
  return bytes;
}

function storedDType(dtype: string, q: WeightQuantization): StoredMatrix["dtype"] {
  if (q === "int8") return "int8";
  return dtype === "F32" ? "f32" : dtype === "BF16" ? "bf16" : "f16";
}

/**
 * Read every tensor the config needs (names and shapes are validated first). Matrices keep their
 * stored precision, or become int8 with `quantize: "int8"` (quantized row by row from the stored
 * values, so that this reference runs exactly the ŵ = q·s the GPU kernels run). f16 matrices must
 * be finite (the kernels widen finite halves only).
 */
export async function loadCpuWeights(
  source: TensorSource,
  config: ModelConfig,
  label: string,
  options: LoadCpuWeightsOptions = {},
): Promise<CpuWeights> {
  const quantize = options.quantize ?? "none";
  const spec: CheckpointSpec = validateCheckpoint(source, config, label);
  const scratch = options.arenaScratchBytes;
  const arena = scratch != null && WasmArena.supported()
    ? new WasmArena(arenaBytes(source, spec, quantize) + scratch, {
      shared: options.sharedArena === true && WasmArena.threadsSupported(),
    })
    : null;
  const alloc: MatrixAllocator = arena ?? HEAP_ALLOCATOR;
  const read = (s: TensorSpec | undefined) =>
    s ? readFloat32(source, s, label) : Promise.resolve(null);
  const bias = async (s: TensorSpec | undefined) => {
    if (!s) return null;
    const v = await readFloat32(source, s, label);
    const out = alloc.allocF32(v.length);
    out.set(v);
    return out;
  };
  const slice = options.quantSliceBytes ?? 4 << 20;
  const matrix = (s: TensorSpec | undefined) =>
    readMatrix(source, s!, label, quantize === "int8" ? slice : null, alloc);
  const pair = async (w: TensorSpec | undefined, b: TensorSpec | undefined) =>
    w && b ? { w: (await read(w))!, b: (await read(b))! } : null;

  const embed = await matrix(spec.global.embed);
  const head = spec.global.head ? await matrix(spec.global.head) : embed;
  const finalNorm = await pair(spec.global.finalNormW, spec.global.finalNormB);
  const layers: CpuLayerWeights[] = [];
  for (const t of spec.layers) {
    layers.push({
      qkvu: await matrix(t.qkvu),
      qkvuBias: await bias(t.qkvuBias),
      out: await matrix(t.out),
      outBias: await bias(t.outBias),
      theta: await read(t.theta),
      l1: await matrix(t.l1),
      l2: await matrix(t.l2),
      l3: await matrix(t.l3),
      l1Bias: await bias(t.l1Bias),
      l2Bias: await bias(t.l2Bias),
      l3Bias: await bias(t.l3Bias),
      tokenNorm: await pair(t.tokenNormW, t.tokenNormB),
      mixerNorm: await pair(t.mixerNormW, t.mixerNormB),
      channelNorm: await pair(t.channelNormW, t.channelNormB),
    });
  }
  return { embed, head, finalNorm, layers, arena };
}

/**
 * One [rows, cols] matrix into `alloc`, in its stored dtype, or quantized to int8 row by row from
 * slices of `int8SliceBytes` (when not null).
 */
async function readMatrix(
  source: TensorSource,
  s: TensorSpec,
  label: string,
  int8SliceBytes: number | null,
  alloc: MatrixAllocator,
): Promise<StoredMatrix> {
  const [rows, cols] = s.shape;
  const n = rows * cols;
  const info = checkTensor(source, s, label);
  if (int8SliceBytes !== null) {
    // Slices of rows (about int8SliceBytes of the stored tensor) through one buffer, so the load
    // never holds the whole stored matrix next to its int8 copy.
    const q = alloc.allocI8(n), scales = alloc.allocF32(rows);
    const row = new Float32Array(cols), rb = cols * DTYPE_BYTES[info.dtype];
    const per = Math.max(1, Math.min(rows, Math.floor(int8SliceBytes / rb)));
    const slice = new Uint8Array(per * rb);
    for (let r0 = 0; r0 < rows; r0 += per) {
      const r1 = Math.min(rows, r0 + per), bytes = slice.subarray(0, (r1 - r0) * rb);
      await readTensorInto(source, s.name, bytes, r0 * rb);
      for (let r = r0; r < r1; r++) {
        toFloat32(bytes.subarray((r - r0) * rb, (r - r0 + 1) * rb), info.dtype, row);
        scales[r] = quantizeRowInto(row, q.subarray(r * cols, (r + 1) * cols), s.name, r);
      }
    }
    return { dtype: "int8", rows, cols, data: q, scales };
  }
  // Stored precision: read straight into the allocation (no second copy of the matrix).
  if (info.dtype === "F32") {
    const data = alloc.allocF32(n);
    await readTensorInto(source, s.name, new Uint8Array(data.buffer, data.byteOffset, n * 4));
    return { dtype: "f32", rows, cols, data };
  }
  const data = alloc.allocU16(n);
  await readTensorInto(source, s.name, new Uint8Array(data.buffer, data.byteOffset, n * 2));
  if (info.dtype === "F16") {
    for (let i = 0; i < n; i++) {
      if ((data[i] & 0x7c00) === 0x7c00) {
        throw new WeightsError(info.file, s.name, `holds a non-finite f16 weight at index ${i}`);
      }
    }
    return { dtype: "f16", rows, cols, data };
  }
  return { dtype: "bf16", rows, cols, data };
}
