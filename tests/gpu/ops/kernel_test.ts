/**
 * Kernels wired by name (`src/gpu/ops/`): the names come from the expanded WGSL; a buffer or a
 * uniform field under a name the kernel does not declare, a field left out, or a binding the
 * kernel uses and nobody gave is an error naming the kernel; the builders' ops run.
 */

import assert from "node:assert/strict";
import {
  bindKernel,
  encodeOps,
  loadKernel,
  normOp,
  paramWords,
  shaderBindings,
  shaderParams,
} from "../../../src/gpu/ops/mod.ts";
import { GpuResources } from "../../../src/gpu/resources.ts";
import { PipelineCache, preprocess } from "../../../src/gpu/shaders.ts";
import { gpuTest } from "../support.ts";

Deno.test("ops: bindings and Params fields are read from the expanded WGSL", async () => {
  const code = await preprocess("norm", { LAYER_NORM: true, GATE: false });
  assert.deepEqual(
    [...shaderBindings(code)],
    [["P", 0], ["ctl", 1], ["x", 2], ["y", 3], ["w", 4], ["bias", 5]],
  );
  assert.deepEqual(shaderParams(code).map((f) => f.name), [
    "dim",
    "in_stride",
    "in_off",
    "out_stride",
    "out_off",
    "rows_from_ctl",
    "rows",
    "gate_stride",
    "gate_off",
  ]);
  const embed = await preprocess("embed", { E_DTYPE: "q8" });
  assert.equal(shaderBindings(embed).get("E_scales"), 5, "weight accessors' bindings too");
  assert.deepEqual(shaderParams(embed).find((f) => f.name === "scale"), {
    name: "scale",
    type: "f32",
  });
});

gpuTest("ops: a wrong name, a missing field or a missing binding names the kernel", async (ctx) => {
  const res = new GpuResources(ctx.device);
  try {
    const pipelines = PipelineCache.for(ctx.device);
    const k = await loadKernel(pipelines, "norm", { LAYER_NORM: false, GATE: false });
    const values = {
      dim: 8,
      in_stride: 8,
      in_off: 0,
      out_stride: 8,
      out_off: 0,
      rows_from_ctl: 0,
      rows: 2,
      gate_stride: 0,
      gate_off: 0,
    };
    assert.deepEqual(paramWords(k, values), [8, 8, 0, 8, 0, 0, 2, 0, 0]);
    assert.throws(() => paramWords(k, { ...values, stride: 1 }), /norm.*no field "stride"/);
    const { gate_off: _, ...partial } = values;
    assert.throws(() => paramWords(k, partial), /norm.*Params\.gate_off not given/);
    assert.throws(() => paramWords(k, { ...values, rows: -1 }), /rows must be a u32/);
    const buf = () => res.storage("t", 64);
    const P = res.uniform(paramWords(k, values), "p");
    await assert.rejects(
      bindKernel(res, k, { P, ctl: buf(), x: buf(), y: buf(), gate: buf() }, "t"),
      /kernel norm \(t\): no binding "gate"/,
    );
    await assert.rejects(
      bindKernel(res, k, { P, ctl: buf(), x: buf() }, "t2"),
      /kernel norm \(t2\): bind group of \[P,ctl,x\] refused/,
    );
  } finally {
    res.destroy();
  }
});

gpuTest("ops: a norm op built by name normalizes rows (n from the op, not ctl)", async (ctx) => {
  const dev = ctx.device;
  const res = new GpuResources(dev);
  try {
    const rows = 3, dim = 8;
    const xs = Float32Array.from({ length: rows * dim }, (_, i) => (i % 7) - 3 + i / 10);
    const x = res.storage("x", xs.byteLength);
    dev.queue.writeBuffer(x, 0, xs);
    const y = res.storage("y", xs.byteLength, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC);
    const ctl = res.storage("ctl", 16);
    const m = { pipelines: PipelineCache.for(dev), ctl, ctx };
    const op = await normOp({ m, res }, {
      label: "norm",
      dim,
      input: { buffer: x, stride: dim },
      output: { buffer: y, stride: dim },
      ln: null,
      rows: "n",
    });
    res.writeUniform(op.params, op.words(rows, 0, 0));
    const read = dev.createBuffer({
      size: xs.byteLength,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const enc = dev.createCommandEncoder();
    const pass = enc.beginComputePass();
    encodeOps(pass, [op], rows);
    pass.end();
    enc.copyBufferToBuffer(y, 0, read, 0, xs.byteLength);
    dev.queue.submit([enc.finish()]);
    await read.mapAsync(GPUMapMode.READ);
    const got = new Float32Array(read.getMappedRange().slice(0));
    read.destroy();
    for (let r = 0; r < rows; r++) {
      const row = xs.subarray(r * dim, (r + 1) * dim);
      const rms = Math.sqrt(row.reduce((a, v) => a + v * v, 0) / dim + 1e-6);
      for (let i = 0; i < dim; i++) {
        assert.ok(Math.abs(got[r * dim + i] - row[i] / rms) < 1e-5, `row ${r} col ${i}`);
      }
    }
  } finally {
    res.destroy();
  }
});
