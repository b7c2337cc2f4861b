/**
 * What an op builder needs from the model: its pipeline cache, the control buffer every kernel
 * reads its batch size from, and the device it compiles for.
 * @module
 */

import type { GpuContext } from "../device.ts";
import type { GpuResources } from "../resources.ts";
import type { PipelineCache } from "../shaders.ts";
import type { GpuMatrix } from "../weights.ts";

/** The parts of a `GpuModel` the op builders use. */
export interface OpModel {
  /** Pipeline cache of the device. */
  readonly pipelines: PipelineCache;
  /** Control words ([0] = batch size). */
  readonly ctl: GPUBuffer;
  /** Device context (limits, subgroup size, whether the adapter is a fallback). */
  readonly ctx: GpuContext;
}

/** Where an op builder creates its uniform blocks and bind groups. */
export interface OpTarget {
  /** The model. */
  readonly m: OpModel;
  /** The owner of what the builder creates. */
  readonly res: GpuResources;
}

/** A range of rows in a buffer: row r starts at `off + r·stride` (floats). */
export interface Rows {
  /** The buffer. */
  readonly buffer: GPUBuffer;
  /** Floats between rows. */
  readonly stride: number;
  /** First float of row 0 (default 0). */
  readonly off?: number;
}

/**
 * The bindings of weight chunk `c` of `w` under the name the kernel's `//#weights NAME` gives it
 * (the matrix, and its per-row scales when int8).
 */
export function weightBindings(
  name: string,
  w: GpuMatrix | undefined,
  c: number,
): Record<string, GPUBuffer | null | undefined> {
  if (!w) return {};
  return { [name]: w.chunks[c].buffer, [`${name}_scales`]: w.scales };
}

/** The WGSL define of a q/k activation (the kernels' `ACT_*` switch). */
export function activationDefine(activation: string): string {
  const d = ({
    silu: "ACT_SILU",
    relu: "ACT_RELU",
    elu: "ACT_ELU",
    "1+elu": "ACT_1ELU",
    "2+elu": "ACT_2ELU",
    sigmoid: "ACT_SIGMOID",
    gelu: "ACT_GELU",
    none: "ACT_NONE",
  } as Record<string, string>)[activation];
  if (!d) throw new RangeError(`no kernel activation ${activation}`);
  return d;
}
