/**
 * Kernels wired by name: a compiled pipeline with the names of its bindings and of its uniform
 * block's fields, read from its expanded WGSL, so a builder hands buffers and parameters by the
 * names the shader uses and a wrong or missing one is an error that names the kernel, never a
 * silently swapped buffer. `Op` is what both dispatch plans (decode and prefill) encode.
 * @module
 */

import type { GpuResources, UniformWord } from "../resources.ts";
import type { Defines, PipelineCache } from "../shaders.ts";

/** A compiled kernel and the names its WGSL declares. */
export interface Kernel {
  /** Kernel file name (`wgsl/<name>.wgsl`). */
  readonly name: string;
  /** The compute pipeline (entry point `main`, automatic layout). */
  readonly pipeline: GPUComputePipeline;
  /** Group-0 bindings by variable name. */
  readonly bindings: ReadonlyMap<string, number>;
  /** Fields of the uniform block `P` in declaration order, with their WGSL types. */
  readonly params: readonly { name: string; type: string }[];
}

/** A kernel bound to its buffers, with its uniform block: what the plans encode. */
export interface Op {
  /** Kernel label, for timing. */
  readonly label: string;
  /** Pipeline. */
  readonly pipeline: GPUComputePipeline;
  /** Its bind group. */
  readonly bindGroup: GPUBindGroup;
  /** Its uniform block (rewritten per prefill chunk; fixed in the decode plan). */
  readonly params: GPUBuffer;
  /** The uniform words for `n` rows (tokens of a chunk, or sequences) at `pos0` in `slot`. */
  readonly words: (n: number, pos0: number, slot: number) => UniformWord[];
  /** Workgroups for `n` rows. */
  readonly groups: (n: number) => readonly [number, number, number];
}

/** Values of a uniform block's fields by name: a number, or `{ f32 }` for an f32 field. */
export type ParamValues = Readonly<Record<string, number | { f32: number }>>;

/** The group-0 bindings of a WGSL text by variable name. */
export function shaderBindings(code: string): Map<string, number> {
  const out = new Map<string, number>();
  const re = /@group\(0\)\s*@binding\((\d+)\)\s*var(?:<[^>]*>)?\s+(\w+)\s*:/g;
  for (const m of code.matchAll(re)) out.set(m[2], Number(m[1]));
  return out;
}

/** The fields of `struct Params` of a WGSL text, in order (empty when it has none). */
export function shaderParams(code: string): { name: string; type: string }[] {
  const body = /struct\s+Params\s*\{([^}]*)\}/.exec(code)?.[1];
  if (!body) return [];
  const fields: { name: string; type: string }[] = [];
  for (const line of body.split("\n")) {
    const m = /^\s*(\w+)\s*:\s*([\w<>]+)/.exec(line.replace(/\/\/.*$/, ""));
    if (m) fields.push({ name: m[1], type: m[2] });
  }
  return fields;
}

/** Compile (or take from the cache) `wgsl/<name>.wgsl` under `defines`, with its names. */
export async function loadKernel(
  pipelines: PipelineCache,
  name: string,
  defines: Defines,
): Promise<Kernel> {
  const pipeline = await pipelines.get(name, defines);
  const code = pipelines.sourceOf(pipeline);
  if (code === undefined) throw new Error(`kernel ${name}: its WGSL is not known`);
  return { name, pipeline, bindings: shaderBindings(code), params: shaderParams(code) };
}

/**
 * The uniform words of `k`'s block `P` from values by field name: every field given, no other
 * name; f32 fields take plain numbers too.
 */
export function paramWords(k: Kernel, values: ParamValues, label = k.name): UniformWord[] {
  const known = new Set(k.params.map((f) => f.name));
  for (const n of Object.keys(values)) {
    if (!known.has(n)) {
      throw new Error(
        `kernel ${k.name} (${label}): its Params has no field "${n}" (fields: ${[...known]})`,
      );
    }
  }
  return k.params.map((f) => {
    const v = values[f.name];
    if (v === undefined) throw new Error(`kernel ${k.name} (${label}): Params.${f.name} not given`);
    if (f.type === "f32") return typeof v === "number" ? { f32: v } : v;
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 0xffffffff) {
      throw new Error(`kernel ${k.name} (${label}): Params.${f.name} must be a u32, got ${v}`);
    }
    return v;
  });
}

/**
 * A bind group of `k` from buffers by the names its WGSL gives them (entries without a buffer
 * are left out). A name the shader does not declare, or a binding its entry point uses
 * and that was not given (the device's validation), fails with the kernel and label named.
 */
export async function bindKernel(
  res: GpuResources,
  k: Kernel,
  buffers: Readonly<Record<string, GPUBuffer | null | undefined>>,
  label: string,
): Promise<GPUBindGroup> {
  const entries: [number, GPUBuffer][] = [];
  for (const [name, buffer] of Object.entries(buffers)) {
    if (!buffer) continue;
    const binding = k.bindings.get(name);
    if (binding === undefined) {
      throw new Error(
        `kernel ${k.name} (${label}): no binding "${name}" in its WGSL (it declares: ${[
          ...k.bindings.keys(),
        ]})`,
      );
    }
    entries.push([binding, buffer]);
  }
  const device = res.device;
  device.pushErrorScope("validation");
  const group = res.bindGroup(k.pipeline, entries, label);
  const err = await device.popErrorScope();
  if (err) {
    const given = entries.map(([b]) => [...k.bindings].find(([, n]) => n === b)![0]);
    throw new Error(
      `kernel ${k.name} (${label}): bind group of [${given}] refused (${err.message})`,
    );
  }
  return group;
}

/**
 * Build an `Op`: its bind group from buffers by name, its uniform block from field values by name.
 * The values for a first size are checked against the kernel's `Params` here (every field, no
 * other); later sizes (prefill chunks) only map the same fields to words, in the struct's order.
 */
export async function makeOp(
  res: GpuResources,
  k: Kernel,
  spec: {
    label: string;
    buffers: Readonly<Record<string, GPUBuffer | null | undefined>>;
    values: (n: number, pos0: number, slot: number) => ParamValues;
    groups: Op["groups"];
  },
): Promise<Op> {
  const params = res.uniform(
    paramWords(k, spec.values(1, 0, 0), spec.label),
    `${spec.label}.params`,
  );
  const bindGroup = await bindKernel(res, k, { P: params, ...spec.buffers }, spec.label);
  const fields = k.params;
  // Workgroup counts per n, kept: encoding a plan allocates nothing once each batch size was seen.
  const seen = new Map<number, readonly [number, number, number]>();
  const groups = (n: number) => {
    let g = seen.get(n);
    if (!g) {
      if (seen.size >= 1024) seen.clear();
      seen.set(n, g = spec.groups(n));
    }
    return g;
  };
  return {
    label: spec.label,
    pipeline: k.pipeline,
    bindGroup,
    params,
    words: (n, pos0, slot) => {
      const v = spec.values(n, pos0, slot);
      return fields.map((f) => {
        const x = v[f.name];
        return f.type === "f32" && typeof x === "number" ? { f32: x } : x;
      });
    },
    groups,
  };
}

/**
 * Encode ops for `n` rows into an open compute pass, skipping `setPipeline` when the pipeline is
 * the one set last (`last` carries it across calls).
 */
export function encodeOps(
  pass: GPUComputePassEncoder,
  ops: readonly Op[],
  n: number,
  last: { pipeline: GPUComputePipeline | null } = { pipeline: null },
): void {
  for (const op of ops) {
    if (last.pipeline !== op.pipeline) {
      pass.setPipeline(op.pipeline);
      last.pipeline = op.pipeline;
    }
    pass.setBindGroup(0, op.bindGroup);
    const g = op.groups(n);
    pass.dispatchWorkgroups(g[0], g[1], g[2]);
  }
}

/** Workgroups for one per row, rows spread over y past the 65,535 limit of x. */
export function rowGroups(n: number): [number, number, number] {
  return [Math.min(n, 65535), Math.ceil(n / 65535), 1];
}
