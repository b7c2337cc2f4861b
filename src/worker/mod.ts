/**
 * A backend in a Deno `Worker`: `WorkerBackend` runs WebGPU or the CPU backend in its own thread
 * (`entry.ts`), so GPU readbacks (which block their thread in Deno) and CPU prefills never stop the
 * thread that serves HTTP. States travel through shared memory; a crash or a lost device fails the
 * calls in flight with `device_lost` and the worker is started again.
 *
 * @example The CPU backend of the default model in a worker
 * ```ts
 * import { WorkerBackend } from "./mod.ts";
 * import { loadConfig } from "../model/config.ts";
 *
 * const dir = "models/tnl-shakespeare-6m/";
 * const config = await loadConfig(dir + "config.json");
 * const backend = await WorkerBackend.load(
 *   { kind: "cpu", dir, quantize: "none", options: { maxBatch: 8, maxSlots: 12 } },
 *   config,
 * );
 * const slot = backend.allocState();
 * await backend.prefill(slot, Int32Array.of(1, 2, 3), "none");
 * console.log(slot.position); // 3
 * await backend.dispose();
 * ```
 * @module
 */

export { WorkerBackend, type WorkerProgress } from "./backend.ts";
export type { WorkerLoadSpec } from "./protocol.ts";
