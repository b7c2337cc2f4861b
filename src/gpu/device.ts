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
  const features = OPTIONAL_FEATURES.filter((f) => adapter!.features.has(f) && !disabled.has(f));
  const requiredLimits: Record<string, number> = {};
  for (const k of LIMITS) {
    const v = (adapter.limits as unknown as Record<string, number>)[k];
    if (typeof v === "number") requiredLimits[k] = v;
  }
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({ requiredFeatures: features, requiredLimits });
  } catch (e) {
    throw new TnlError(
      "backend_unavailable",
      `WebGPU device request failed: ${(e as Error).message}`,
      {
        cause: e,
      },
    );
  }
  const limits = {} as Record<GpuLimitName, number>;
  for (const k of LIMITS) limits[k] = (device.limits as unknown as Record<string, number>)[k];
  const ai = adapter.info;
  const info: GpuInfo = {
    description: ai.description || ai.device || ai.vendor || "unknown adapter",
    vendor: ai.vendor,
    features: [...device.features].sort(),
    limits,
    fallback: Boolean((ai as unknown as { isFallbackAdapter?: boolean }).isFallbackAdapter) ||
      /llvmpipe|lavapipe|swiftshader|warp/i.test(ai.description ?? ""),
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
