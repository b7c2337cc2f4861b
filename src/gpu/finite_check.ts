/**
 * `FiniteCheck`: whether resident states hold only finite values, computed on the GPU in the
 * submission that copies them out (`wgsl/finite_check.wgsl`), so the host copies a read-back state
 * once and never scans its 13 MB (a scan cost about 9 ms per 385M state on the H200's host).
 * @module
 */

import type { GpuModel } from "./model.ts";
import { bindKernel, loadKernel, paramWords } from "./ops/mod.ts";

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

  private constructor(
    model: GpuModel,
    pipeline: GPUComputePipeline,
    groups: GPUBindGroup[],
    slots: GPUBuffer,
    flags: GPUBuffer,
    capacity: number,
  ) {
    this.#model = model;
    this.#pipeline = pipeline;
    this.#groups = groups;
    this.#slots = slots;
    this.flags = flags;
    this.capacity = capacity;
  }

  /** Build the check for `model` (its pipeline compiled now), for `capacity` slots at a time. */
  static async create(model: GpuModel, capacity: number): Promise<FiniteCheck> {
    const k = await loadKernel(model.pipelines, "finite_check", {});
    const res = model.res;
    const slots = res.storage("finite-check slots", capacity * 4);
    const flags = res.storage("finite-check flags", capacity * 4);
    const groups = await Promise.all(model.states.map((state, l) => {
      const label = `finite-check ${l}`;
      const words = paramWords(k, {
        per_slot: model.slotFloats[l],
        groups: GROUPS,
        _pad0: 0,
        _pad1: 0,
      }, label);
      return bindKernel(res, k, { P: res.uniform(words, label), state, slots, flags }, label);
    }));
    return new FiniteCheck(model, k.pipeline, groups, slots, flags, capacity);
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
