/**
 * Shared pieces of the GPU micro benchmarks (`matvec_micro.ts`, `l2_prefetch.ts`): buffers and
 * uniform blocks, and the decode matrix-vector kernel over bf16 weights as the model builds it.
 * @module
 */

import type { GpuContext } from "../src/gpu/device.ts";
import { type MatvecTiling, matvecTiling, matvecTilingDefines } from "../src/gpu/matvec_tiling.ts";
import type { PipelineCache } from "../src/gpu/shaders.ts";

/** Buffer makers of one device: storage (16-byte padded) and u32 uniform blocks. */
export function microBuffers(dev: GPUDevice): {
  buf: (bytes: number, usage?: number) => GPUBuffer;
  uni: (words: number[]) => GPUBuffer;
} {
  const buf = (bytes: number, usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST) =>
    dev.createBuffer({ size: Math.max(16, Math.ceil(bytes / 16) * 16), usage });
  const uni = (words: number[]) => {
    const b = buf(words.length * 4, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST);
    dev.queue.writeBuffer(b, 0, new Uint32Array(words));
    return b;
  };
  return { buf, uni };
}

/** A bf16 matrix-vector product of the decode plan, ready to bind (inputs at 2, output at 4). */
export interface MicroMatvec {
  /** Its tiling. */
  tiling: MatvecTiling;
  /** The pipeline (`wgsl/matvec.wgsl`, srms input scale, no bias, no residual). */
  pipeline: GPUComputePipeline;
  /** Its uniform block (binding 0): rows × cols, inputs and outputs packed. */
  params: GPUBuffer;
  /** Its control words (binding 1): the batch size. */
  ctl: GPUBuffer;
  /** Workgroups of one dispatch. */
  groups: [number, number];
}

/**
 * The model's matrix-vector kernel for `rows` × `cols` bf16 weights at batch `batch`: `glu` the
 * SGLU pair (second matrix at binding 6), `gate` a gated input (at binding 3), `shape` another
 * layout (sequences, rows and lanes per thread), `subgroups` false for the path without them.
 */
export async function microMatvec(
  ctx: GpuContext,
  cache: PipelineCache,
  spec: {
    rows: number;
    cols: number;
    batch: number;
    glu?: boolean;
    gate?: boolean;
    shape?: { nb: number; rpg: number; lanes?: number };
    subgroups?: boolean;
  },
): Promise<MicroMatvec> {
  const { rows, cols, batch, glu = false } = spec;
  const dev = ctx.device;
  const tiling = matvecTiling(
    rows,
    cols,
    batch,
    false,
    glu,
    dev.limits.maxComputeWorkgroupStorageSize,
    spec.shape,
    spec.subgroups === false ? 0 : ctx.info.subgroupSize,
  );
  const pipeline = await cache.get("matvec", {
    ...matvecTilingDefines(tiling, cols),
    VEC8: true,
    X4: true,
    W_DTYPE: "bf16",
    W2_DTYPE: glu ? "bf16" : "",
    GLU: glu,
    GATE: spec.gate ?? false,
    RMS_SCALE: true,
    OUT_ADD: false,
    BIAS: false,
  });
  const { buf, uni } = microBuffers(dev);
  const params = uni([rows, cols, 0, cols, 0, cols, 0, rows, 0, 0, 0, 0]);
  const ctl = buf(16);
  dev.queue.writeBuffer(ctl, 0, new Uint32Array([batch, 0, 0, 0]));
  const groups: [number, number] = [
    Math.ceil(rows / tiling.rowsPerWorkgroup),
    Math.ceil(batch / tiling.nb),
  ];
  return { tiling, pipeline, params, ctl, groups };
}
