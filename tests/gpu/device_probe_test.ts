/**
 * `--backend auto` and the adapter probe: software adapters (a fallback adapter, a "cpu" device
 * type, llvmpipe / lavapipe / SwiftShader / WARP names, Mesa's software vendor id) send the model
 * to the CPU, hardware adapters to WebGPU. Stub adapters stand in for both kinds.
 * @module
 */

import assert from "node:assert/strict";
import { type AdapterInfoLike, probeAdapter, softwareAdapterReason } from "../../src/gpu/device.ts";
import { loadModel } from "../../src/load.ts";

/** A stub of `navigator.gpu` whose one adapter reports `info`. */
function stubGpu(info: AdapterInfoLike | null): Pick<GPU, "requestAdapter"> {
  return {
    requestAdapter: () =>
      Promise.resolve(
        info === null ? null : ({ info, features: new Set(), limits: {} } as unknown as GPUAdapter),
      ),
  };
}

const NVIDIA: AdapterInfoLike = {
  vendor: "4318",
  architecture: "",
  device: "8997",
  description: "NVIDIA H200",
  isFallbackAdapter: false,
};

Deno.test("device: software adapters are told apart from hardware ones", () => {
  const soft: AdapterInfoLike[] = [
    { description: "llvmpipe (LLVM 15.0.6, 256 bits)", vendor: "65541", isFallbackAdapter: false },
    { description: "", device: "lavapipe", vendor: "" },
    { description: "SwiftShader Device (Subzero)", vendor: "6880" },
    { description: "Microsoft Basic Render Driver", vendor: "5140" },
    { description: "Some GPU", isFallbackAdapter: true },
    { description: "Some GPU", deviceType: "Cpu" },
    { description: "", vendor: "65541" },
  ];
  for (const info of soft) assert.ok(softwareAdapterReason(info), JSON.stringify(info));
  assert.equal(softwareAdapterReason(NVIDIA), null);
  assert.equal(softwareAdapterReason({ description: "AMD Radeon RX 7900", vendor: "4098" }), null);
});

Deno.test("device: probeAdapter reports hardware, software, none and failure with a reason", async () => {
  const hw = await probeAdapter(stubGpu(NVIDIA));
  assert.deepEqual(hw, {
    hardware: true,
    adapter: "NVIDIA H200",
    reason: "hardware WebGPU adapter NVIDIA H200",
  });
  const sw = await probeAdapter(stubGpu({ description: "llvmpipe (LLVM 15.0.6, 256 bits)" }));
  assert.equal(sw.hardware, false);
  assert.match(sw.reason, /llvmpipe.*software rasterizer/);
  assert.equal((await probeAdapter(stubGpu(null))).hardware, false);
  assert.equal((await probeAdapter(null)).reason, "no WebGPU in this runtime");
  const failing = await probeAdapter({ requestAdapter: () => Promise.reject(new Error("boom")) });
  assert.equal(failing.hardware, false);
  assert.match(failing.reason, /boom/);
});

Deno.test("load: backend auto runs on the CPU when the only adapter is a software one", async () => {
  const stub = stubGpu({ description: "SwiftShader Device (stub)", isFallbackAdapter: true });
  Object.defineProperty(navigator, "gpu", { value: stub, configurable: true });
  let choice: { backend: string; reason: string } | undefined;
  try {
    const model = await loadModel(undefined, {
      backend: "auto",
      onBackendChoice: (c) => choice = c,
    });
    try {
      assert.equal(model.backend.kind, "cpu");
      assert.equal(choice?.backend, "cpu");
      assert.match(
        choice!.reason,
        /^backend auto: WebGPU adapter SwiftShader Device \(stub\) is a/,
      );
    } finally {
      await model.dispose();
    }
  } finally {
    delete (navigator as unknown as Record<string, unknown>).gpu; // the prototype's getter again
  }
  const cpu = await loadModel(undefined, { backend: "cpu", onBackendChoice: (c) => choice = c });
  await cpu.dispose();
  assert.deepEqual(choice, { backend: "cpu", reason: "backend cpu requested" });
});
