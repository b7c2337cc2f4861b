/**
 * Where a state readback's host time goes (issue 20, kept sessions): a 13 MB `MAP_READ` buffer is
 * filled on the GPU, mapped, and read back in several ways; each way is timed over several rounds.
 *
 *   deno run -A bench/readback_micro.ts [--mb 13] [--rounds 8]
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { firstNonFinite } from "../src/model/state.ts";

const args = parseArgs(Deno.args, { string: ["mb", "rounds"] });
const bytes = Math.round(Number(args.mb ?? 13) * 1e6 / 4) * 4;
const rounds = Number(args.rounds ?? 8);
const adapter = await navigator.gpu.requestAdapter();
const device = await adapter!.requestDevice({
  requiredLimits: { maxBufferSize: adapter!.limits.maxBufferSize },
});
const src = device.createBuffer({
  size: bytes,
  usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
});
device.queue.writeBuffer(src, 0, new Float32Array(bytes / 4).map((_, i) => Math.sin(i)));
const staging = device.createBuffer({
  size: bytes,
  usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
});
const reused = new ArrayBuffer(bytes);
new Uint8Array(reused).fill(1);
const times: Record<string, number[]> = {};
const time = <T>(name: string, f: () => T): T => {
  const t0 = performance.now();
  const r = f();
  (times[name] ??= []).push(performance.now() - t0);
  return r;
};
for (let r = 0; r < rounds; r++) {
  const enc = device.createCommandEncoder();
  enc.copyBufferToBuffer(src, 0, staging, 0, bytes);
  device.queue.submit([enc.finish()]);
  const t0 = performance.now();
  await staging.mapAsync(GPUMapMode.READ, 0, bytes);
  (times.mapAsync ??= []).push(performance.now() - t0);
  const mapped = time("getMappedRange", () => staging.getMappedRange(0, bytes));
  const way = r % 4;
  if (way === 0) {
    const copy = time("slice (fresh)", () => mapped.slice(0));
    time("scan copy", () => firstNonFinite(new Float32Array(copy)));
  } else if (way === 1) {
    time(
      "set mapped → fresh",
      () => new Uint8Array(new ArrayBuffer(bytes)).set(new Uint8Array(mapped)),
    );
  } else if (way === 2) {
    time("set mapped → reused", () => new Uint8Array(reused).set(new Uint8Array(mapped)));
    time("scan reused", () => firstNonFinite(new Float32Array(reused)));
  } else {
    time("scan mapped", () => firstNonFinite(new Float32Array(mapped)));
    time("fresh alloc + fill", () => new Uint8Array(new ArrayBuffer(bytes)).fill(2));
  }
  time("unmap", () => staging.unmap());
}
const med = (v: number[]) => [...v].sort((a, b) => a - b)[v.length >> 1];
for (const [k, v] of Object.entries(times)) {
  console.log(
    `${k.padEnd(28)} median ${med(v).toFixed(2)} ms  (${v.map((x) => x.toFixed(1)).join(", ")})`,
  );
}
console.log(`${(bytes / 1e6).toFixed(1)} MB, ${adapter!.info?.description ?? ""}`);
