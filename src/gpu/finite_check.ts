/**
 * `FiniteCheck`: whether resident states hold only finite values, computed on the GPU in the
 * submission that copies them out (`wgsl/finite_check.wgsl`), so the host copies a read-back state
 * once and never scans its 13 MB (a scan cost about 9 ms per 385M state on the H200's host).
 * @module
 */

import type { GpuModel } from "./model.ts";

/** Workgroups per slot and layer (each thread strides over the layer's values). */
const GROUPS = 16;

/** The non-finite check of up to `maxBatch` slots per submission. */
export class FiniteCheck {
  readonly #model: GpuModel;
  readonly #pipeline: GPUComputePipeline;
  readonly #groups: GPUBindGroup[];
  /** The slots to check, in row order (u32 each). */
  readonly #slots: GPUBuffer;
  /** One u32 per row: 0 when finite, else 1. */
  readonly flags: GPUBuffer;
  /** Most slots one `encode` checks. */
  readonly capacity: number;

  private constructor(model: GpuModel, pipeline: GPUComputePipeline, capacity: number) {
    this.#model = model;
    this.#pipeline = pipeline;
    this.capacity = capacity;
    this.#slots = model.res.storage("finite-check slots", capacity * 4);
    this.flags = model.res.storage("finite-check flags", capacity * 4);
    this.#groups = model.states.map((state, l) =>
      model.res.bindGroup(pipeline, [
        [0, model.res.uniform([model.slotFloats[l], GROUPS, 0, 0], `finite-check ${l}`)],
        [1, state],
        [2, this.#slots],
        [3, this.flags],
      ], `finite-check ${l}`)
    );
  }

  /** Build the check for `model` (its pipeline compiled now), for `capacity` slots at a time. */
  static async create(model: GpuModel, capacity: number): Promise<FiniteCheck> {
    const pipeline = await model.pipelines.get("finite_check", {});
    return new FiniteCheck(model, pipeline, capacity);
  }

  /**
   * Encode the check of `slots` (at most `capacity`): afterwards `flags` holds one u32 per slot in
   * the same order, 0 when every value of every layer is finite. The slot list is written with
   * `queue.writeBuffer`, so submit `enc` before the next `encode`.
   */
  encode(enc: GPUCommandEncoder, slots: readonly number[]): void {
    if (slots.length === 0) return;
    if (slots.length > this.capacity) {
      throw new RangeError(`${slots.length} slots to check, at most ${this.capacity}`);
    }
    const dev = this.#model.ctx.device;
    dev.queue.writeBuffer(this.#slots, 0, Uint32Array.from(slots));
    enc.clearBuffer(this.flags, 0, Math.ceil((slots.length * 4) / 16) * 16);
    const pass = enc.beginComputePass();
    pass.setPipeline(this.#pipeline);
    for (const g of this.#groups) {
      pass.setBindGroup(0, g);
      pass.dispatchWorkgroups(GROUPS, slots.length);
    }
    pass.end();
  }
}
