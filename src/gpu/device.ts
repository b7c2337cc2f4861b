/**
 * WebGPU adapter and device acquisition: the adapter's own limits and the optional features we
 * can use are requested explicitly (the defaults cap bindings at 128 MiB), and what was granted is
 * recorded. Device loss is observed so callers fail fast instead of hanging.
 * @module
 */

import { TnlError } from "../errors.ts";

/** Optional features the backend uses when the adapter has them. */
export const OPTIONAL_FEATURES: readonly GPUFeatureName[] = [
  "shader-f16",
  "subgroups",
  "timestamp-query",
] as GPUFeatureName[];

/** The device limits requested at the adapter's values and recorded in `GpuInfo`. */
export type GpuLimitName =
  | "maxBufferSize"
  | "maxStorageBufferBindingSize"
  | "maxComputeWorkgroupStorageSize"
  | "maxComputeInvocationsPerWorkgroup"
  | "maxComputeWorkgroupSizeX"
  | "maxComputeWorkgroupSizeY"
  | "maxComputeWorkgroupsPerDimension"
  | "maxStorageBuffersPerShaderStage"
  | "maxBindingsPerBindGroup";

/** Limits requested at the adapter's maximum. */
const LIMITS: readonly GpuLimitName[] = [
  "maxBufferSize",
  "maxStorageBufferBindingSize",
  "maxComputeWorkgroupStorageSize",
  "maxComputeInvocationsPerWorkgroup",
  "maxComputeWorkgroupSizeX",
  "maxComputeWorkgroupSizeY",
  "maxComputeWorkgroupsPerDimension",
  "maxStorageBuffersPerShaderStage",
  "maxBindingsPerBindGroup",
];

/** What the device was created with. */
export interface GpuInfo {
  /** Adapter description (e.g. "NVIDIA H200" or "llvmpipe ..."). */
  readonly description: string;
  /** Vendor string or id. */
  readonly vendor: string;
  /** Features granted. */
  readonly features: readonly string[];
  /** Limits granted (the ones we request). */
  readonly limits: Readonly<Record<GpuLimitName, number>>;
  /** Whether the adapter is a software fallback (llvmpipe, lavapipe, WARP). */
  readonly fallback: boolean;
  /**
   * Threads per subgroup as measured by a kernel (`subgroupAdd(1)`): 0 without `subgroups`, or
   * when the subgroups of a 256-thread workgroup are not runs of consecutive invocations of one
   * size (kernels that shuffle between neighbouring lanes rely on it).
   */
  readonly subgroupSize: number;
}

/** A device plus what it offers and whether it is still alive. */
export interface GpuContext {
  /** The device. */
  readonly device: GPUDevice;
  /** Recorded adapter information. */
  readonly info: GpuInfo;
  /** Set once the device is lost; every later use fails with this error. */
  lost: TnlError | null;
  /** Resolves when the device is lost. */
  readonly lostPromise: Promise<TnlError>;
}

/** Options of device acquisition. */
export interface DeviceOptions {
  /** Power preference (default high-performance). */
  powerPreference?: GPUPowerPreference;
  /** Features to leave off even when offered (for tests of fallbacks). */
  disableFeatures?: readonly string[];
}

/** Adapter names of software rasterizers: Mesa's llvmpipe / lavapipe / softpipe, SwiftShader, WARP. */
const SOFTWARE_NAMES = /llvmpipe|lavapipe|softpipe|swiftshader|\bwarp\b|basic render driver/i;
/** PCI vendor id Mesa gives its software Vulkan driver (lavapipe): VK_VENDOR_ID_MESA. */
const MESA_SOFTWARE_VENDOR = 0x10005;

/** The parts of `GPUAdapterInfo` (and wgpu's extras) that tell a software adapter. */
export interface AdapterInfoLike {
  /** The WebGPU flag for a fallback (software) adapter. */
  isFallbackAdapter?: boolean;
  /** wgpu's device type where the runtime exposes it ("cpu" for software rasterizers). */
  deviceType?: string;
  /** Vendor name or PCI id as a string. */
  vendor?: string;
  /** Architecture. */
  architecture?: string;
  /** Device name or id. */
  device?: string;
  /** Driver description ("llvmpipe (LLVM 15.0.6, 256 bits)"). */
  description?: string;
}

/**
 * Why an adapter runs on the CPU (a software rasterizer), or null for a hardware adapter: the
 * `isFallbackAdapter` flag, a "cpu" device type, a software driver's name, or Mesa's software
 * vendor id.
 */
export function softwareAdapterReason(info: AdapterInfoLike): string | null {
  if (info.isFallbackAdapter) return "a fallback adapter (isFallbackAdapter)";
  if (typeof info.deviceType === "string" && /^cpu$/i.test(info.deviceType)) {
    return 'device type "cpu"';
  }
  for (const v of [info.description, info.device, info.architecture, info.vendor]) {
    const m = typeof v === "string" ? SOFTWARE_NAMES.exec(v) : null;
    if (m) return `a software rasterizer (${m[0]})`;
  }
  if (Number(info.vendor) === MESA_SOFTWARE_VENDOR) return "Mesa's software vendor id 0x10005";
  return null;
}

/** A readable name of an adapter. */
function adapterName(info: AdapterInfoLike): string {
  return info.description || info.device || info.vendor || "unknown adapter";
}

/** What `probeAdapter` found: whether WebGPU should run the model here, and why. */
export interface AdapterProbe {
  /** True when a hardware adapter exists. */
  hardware: boolean;
  /** The adapter's name ("" when there is none). */
  adapter: string;
  /** Why: the adapter, or what is missing. */
  reason: string;
}

/**
 * Look for a hardware WebGPU adapter (for `--backend auto`): a software adapter (llvmpipe,
 * lavapipe, SwiftShader, WARP) runs the model many times slower than the CPU backend.
 */
export async function probeAdapter(
  gpu: Pick<GPU, "requestAdapter"> | null = hasWebGpu() ? navigator.gpu : null,
): Promise<AdapterProbe> {
  if (!gpu) return { hardware: false, adapter: "", reason: "no WebGPU in this runtime" };
  quietDisplayProbe();
  let adapter: GPUAdapter | null;
  try {
    adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  } catch (e) {
    return {
      hardware: false,
      adapter: "",
      reason: `the WebGPU adapter request failed (${(e as Error).message})`,
    };
  }
  if (!adapter) return { hardware: false, adapter: "", reason: "no WebGPU adapter" };
  const info = adapterInfo(adapter);
  const name = adapterName(info);
  const soft = softwareAdapterReason(info);
  if (soft) return { hardware: false, adapter: name, reason: `WebGPU adapter ${name} is ${soft}` };
  return { hardware: true, adapter: name, reason: `hardware WebGPU adapter ${name}` };
}

function adapterInfo(adapter: GPUAdapter): AdapterInfoLike {
  const info = (adapter.info ?? {}) as unknown as AdapterInfoLike;
  const legacy = (adapter as unknown as { isFallbackAdapter?: boolean }).isFallbackAdapter;
  return {
    isFallbackAdapter: Boolean(info.isFallbackAdapter || legacy),
    deviceType: info.deviceType,
    vendor: info.vendor,
    architecture: info.architecture,
    device: info.device,
    description: info.description,
  };
}

let displayChecked = false;

/**
 * Mesa's Wayland probe (run while the adapters are enumerated) prints "error: XDG_RUNTIME_DIR is
 * invalid or not set" on machines without a session (servers, containers, CI). When the variable is
 * unset, point it at a private empty directory so the probe finds no display and stays quiet. Done
 * once, only on Linux/BSD, and only with the env and write permissions already granted.
 */
export function quietDisplayProbe(): void {
  if (displayChecked) return;
  displayChecked = true;
  if (Deno.build.os === "windows" || Deno.build.os === "darwin") return;
  const granted = (d: Deno.PermissionDescriptor) =>
    Deno.permissions.querySync(d).state === "granted";
  if (!granted({ name: "env", variable: "XDG_RUNTIME_DIR" }) || !granted({ name: "write" })) return;
  if (Deno.env.get("XDG_RUNTIME_DIR")) return;
  const dir = Deno.makeTempDirSync({ prefix: "tnl-xdg-" });
  Deno.env.set("XDG_RUNTIME_DIR", dir);
  globalThis.addEventListener("unload", () => {
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch { /* already gone */ }
  });
}

/** Whether WebGPU is present in this runtime at all. */
export function hasWebGpu(): boolean {
  return typeof navigator !== "undefined" && "gpu" in navigator && navigator.gpu !== undefined;
}

/** Request an adapter and a device with the adapter's limits and our optional features. */
export async function acquireDevice(options: DeviceOptions = {}): Promise<GpuContext> {
  if (!hasWebGpu()) {
    throw new TnlError(
      "backend_unavailable",
      "WebGPU is not available in this runtime (no navigator.gpu)",
    );
  }
  quietDisplayProbe();
  let adapter: GPUAdapter | null = null;
  try {
    adapter = await navigator.gpu.requestAdapter({
      powerPreference: options.powerPreference ?? "high-performance",
    });
  } catch (e) {
    throw new TnlError(
      "backend_unavailable",
      `WebGPU adapter request failed: ${(e as Error).message}`,
      {
        cause: e,
      },
    );
  }
  if (!adapter) throw new TnlError("backend_unavailable", "no WebGPU adapter found");
  const disabled = new Set(options.disableFeatures ?? []);
  const features = OPTIONAL_FEATURES.filter((f) =>
    (adapter!.features.has(f) || f === "subgroups") && !disabled.has(f)
  );
  const requiredLimits: Record<string, number> = {};
  for (const k of LIMITS) {
    const v = (adapter.limits as unknown as Record<string, number>)[k];
    if (typeof v === "number") requiredLimits[k] = v;
  }
  let device: GPUDevice;
  try {
    // Deno 2.9.6 grants `subgroups` although `adapter.features` does not list it: ask for it, and
    // ask again without it when the adapter refuses.
    device = await adapter.requestDevice({ requiredFeatures: features, requiredLimits }).catch(
      (e) => {
        if (!features.includes("subgroups")) throw e;
        const rest = features.filter((f) => f !== "subgroups");
        return adapter!.requestDevice({ requiredFeatures: rest, requiredLimits });
      },
    );
  } catch (e) {
    throw new TnlError(
      "backend_unavailable",
      `WebGPU device request failed: ${(e as Error).message}`,
      {
        cause: e,
      },
    );
  }
  const subgroupSize = device.features.has("subgroups") ? await measureSubgroupSize(device) : 0;
  const limits = {} as Record<GpuLimitName, number>;
  for (const k of LIMITS) limits[k] = (device.limits as unknown as Record<string, number>)[k];
  const ai = adapterInfo(adapter);
  const info: GpuInfo = {
    description: adapterName(ai),
    vendor: ai.vendor ?? "",
    features: [...device.features].sort(),
    limits,
    fallback: softwareAdapterReason(ai) !== null,
    subgroupSize,
  };
  // Errors outside an error scope would otherwise be silent: report them (each is a bug).
  device.addEventListener("uncapturederror", (e) => {
    console.error(`WebGPU error: ${(e as GPUUncapturedErrorEvent).error.message}`);
  });
  const ctx: GpuContext = {
    device,
    info,
    lost: null,
    lostPromise: device.lost.then((l) => {
      const err = new TnlError("device_lost", `WebGPU device lost (${l.reason}): ${l.message}`);
      ctx.lost = err;
      return err;
    }),
  };
  return ctx;
}

/**
 * The subgroup size of `device` (which has `subgroups`): every thread of one 256-thread workgroup
 * writes `subgroupAdd(1)` if its subgroup invocation id is its index modulo the subgroup size, else
 * 0. The WGSL has no `enable subgroups;` (Naga in Deno 2.9.6 rejects the directive). 0 when the
 * kernel does not compile, the threads disagree, or the size is not a power of two up to 256.
 */
export async function measureSubgroupSize(device: GPUDevice): Promise<number> {
  const code = `@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(256)
fn main(
  @builtin(local_invocation_index) i: u32,
  @builtin(subgroup_invocation_id) si: u32,
  @builtin(subgroup_size) ss: u32,
) {
  let n = subgroupAdd(1u);
  out[i] = select(0u, n, n == ss && si == i % ss);
}`;
  device.pushErrorScope("validation");
  const module = device.createShaderModule({ code, label: "subgroup_size" });
  const info = await module.getCompilationInfo();
  if (info.messages.some((m) => m.type === "error")) {
    await device.popErrorScope();
    return 0;
  }
  const pipeline = device.createComputePipeline({
    layout: "auto",
    compute: { module, entryPoint: "main" },
  });
  const out = device.createBuffer({
    size: 1024,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC,
  });
  const read = device.createBuffer({
    size: 1024,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const err = await device.popErrorScope();
  if (err) {
    out.destroy();
    read.destroy();
    return 0;
  }
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(
    0,
    device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [{ binding: 0, resource: { buffer: out } }],
    }),
  );
  pass.dispatchWorkgroups(1);
  pass.end();
  enc.copyBufferToBuffer(out, 0, read, 0, 1024);
  device.queue.submit([enc.finish()]);
  await read.mapAsync(GPUMapMode.READ);
  const all = new Uint32Array(read.getMappedRange().slice(0));
  read.unmap();
  out.destroy();
  read.destroy();
  const n = all[0];
  const same = all.every((v) => v === n);
  return same && n > 0 && n <= 256 && (n & (n - 1)) === 0 ? n : 0;
}
