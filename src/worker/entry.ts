/**
 * The worker that runs a backend (the WebGPU device, or the CPU kernels): it loads the model and
 * runs the backend's calls one after another, in the order they were sent (a call's GPU work is encoded after the
 * previous call's). Readbacks (`mapAsync`), which in Deno block their thread until the GPU queue is
 * empty, happen here, never on the thread that serves HTTP. Started by `WorkerBackend`.
 * @module
 */

/// <reference lib="deno.worker" />

import type { Backend, BackendState, PrefillItem, SampledRow } from "../engine/backend.ts";
import { CpuBackend } from "../cpu/backend.ts";
import { HostSampling } from "../engine/host_sampling.ts";
import { TnlError } from "../errors.ts";
import { loadConfig } from "../model/config.ts";
import { FingerprintingSource } from "../model/fingerprint.ts";
import { buffersOf, type ModelState, stateIsFinite } from "../model/state.ts";
import { openWeights } from "../model/weights/open.ts";
import { WebGpuBackend } from "../gpu/backend.ts";
import {
  sharedLayers,
  type SharedState,
  toWire,
  type WorkerLoaded,
  type WorkerLoadSpec,
  type WorkerMessage,
  type WorkerRequest,
} from "./protocol.ts";

let backend: Backend | null = null;
/** Set once the device is lost (or destroyed by `crash`): every failure after it is that loss. */
let deviceLost: Error | null = null;
/** Resident states by the handle id the other side chose. */
const states = new Map<number, BackendState>();

function post(m: WorkerMessage, transfer: Transferable[] = []): void {
  self.postMessage(m, transfer);
}

function gpu(): Backend {
  if (!backend) throw new TnlError("backend_unavailable", "the backend worker has no model loaded");
  return backend;
}

/** The optional methods a backend may lack. */
const OPTIONAL = ["decodeSampled", "replayMany", "setTokenHistory", "replay"] as const;

/** An optional method of the backend, or an error naming it. */
function optional<K extends typeof OPTIONAL[number]>(name: K): NonNullable<Backend[K]> {
  const f = gpu()[name];
  if (!f) throw new TnlError("internal", `this backend has no ${name}`);
  return (f as (...a: unknown[]) => unknown).bind(gpu()) as NonNullable<Backend[K]>;
}

function state(id: number): BackendState {
  const s = states.get(id);
  if (!s) throw new TnlError("internal", `the GPU worker has no state ${id}`);
  return s;
}

/** Mark states as checked for non-finite values here, off the serving thread (once). */
function checked(states: ModelState[]): ModelState[] {
  for (const s of states) s.finite ??= stateIsFinite(s);
  return states;
}

/** The buffers of a host state (each once), to transfer instead of copy. */
function stateBuffers(s: ModelState): ArrayBuffer[] {
  return buffersOf(s.layers);
}

async function load(spec: WorkerLoadSpec): Promise<WorkerLoaded> {
  const config = await loadConfig(spec.dir + "config.json");
  let done = 0;
  const weights = new FingerprintingSource(
    await openWeights(spec.dir),
    (tensor) => post({ kind: "progress", tensor, done: ++done, total: weights.tensors.size }),
  );
  const kind = spec.kind ?? "webgpu";
  try {
    if (kind === "cpu") {
      // Sampling next to the kernels: one message per round instead of logits out and a token
      // back per step.
      backend = new HostSampling(
        await CpuBackend.load(weights, config, spec.dir, {
          quantize: spec.quantize,
          maxBatch: spec.options.maxBatch,
        }),
        undefined,
        spec.interrupt ? new Int32Array(spec.interrupt) : undefined,
      );
    } else {
      const gpuBackend = await WebGpuBackend.load(weights, config, spec.dir, {
        ...spec.options,
        quantize: spec.quantize,
      });
      gpuBackend.model.ctx.lostPromise.then((e) => {
        deviceLost ??= e;
        post({ kind: "lost", error: toWire(e) });
      });
      backend = gpuBackend;
    }
  } finally {
    weights.close();
  }
  const b = backend;
  return {
    kind,
    device: b.device,
    capabilities: OPTIONAL.filter((k) => b[k] !== undefined),
    fingerprint: weights.fingerprint(config, spec.quantize),
    maxBatch: b.maxBatch,
    maxSlots: b instanceof WebGpuBackend ? b.model.maxSlots : 1 << 20,
    maxSampledSteps: b.maxSampledSteps,
    decodesAhead: b.decodesAhead === true,
    preferredPrefillChunk: b.preferredPrefillChunk,
  };
}

/** Run one request; returns its value and the buffers to transfer with it. */
async function handle(op: string, args: unknown[]): Promise<[unknown, Transferable[]]> {
  const a = args as never[];
  switch (op) {
    case "load":
      return [await load(a[0]), []];
    case "alloc":
      states.set(a[0], gpu().allocState());
      return [null, []];
    case "release": {
      const s = states.get(a[0]);
      states.delete(a[0]);
      if (s) gpu().releaseState(s);
      return [null, []];
    }
    case "writeState": {
      // The backend copies the values (into its slot or a GPU buffer) before this returns.
      const up = a[1] as SharedState;
      await gpu().writeState(state(a[0]), { position: up.position, layers: sharedLayers(up) });
      return [null, []];
    }
    case "readStates": {
      const ids = (a[0] as number[]).map(state);
      const b = gpu();
      const out = checked(
        b.readStates ? await b.readStates(ids) : await Promise.all(ids.map((s) => b.readState(s))),
      );
      return [out, out.flatMap(stateBuffers)];
    }
    case "copyState":
      await gpu().copyState(state(a[0]), state(a[1]));
      return [null, []];
    case "prefill": {
      const logits = await gpu().prefill(state(a[0]), a[1], a[2]);
      return [logits, buffersOf([logits])];
    }
    case "prefillMany":
    case "replayMany": {
      const items = (a[0] as { id: number; tokens: Int32Array }[]).map((it): PrefillItem => ({
        state: state(it.id),
        tokens: it.tokens,
      }));
      const b = gpu();
      if (op === "replayMany") await optional("replayMany")(items);
      else if (b.prefillMany) await b.prefillMany(items);
      else for (const it of items) await b.prefill(it.state, it.tokens, "none");
      return [null, []];
    }
    case "decode": {
      const logits = await gpu().decode((a[0] as number[]).map(state), a[1]);
      return [logits, buffersOf([logits])];
    }
    case "decodeSampled": {
      type PlainRow = Omit<SampledRow, "state" | "aheadSnapshot"> & {
        id: number;
        aheadSnapshotId?: number;
      };
      const rows = (a[0] as PlainRow[]).map((r) => ({
        ...r,
        state: state(r.id),
        aheadSnapshot: r.aheadSnapshotId === undefined ? undefined : state(r.aheadSnapshotId),
      }));
      const tokens = await optional("decodeSampled")(rows, a[1], a[2] ?? 0);
      const captured = rows.map((r) => (r.captured ? checked([r.captured])[0] : null));
      const value = { tokens, rng: rows.map((r) => r.rng.counter), captured };
      const transfer = [
        ...buffersOf(tokens),
        ...captured.flatMap((c) => (c ? stateBuffers(c) : [])),
      ];
      return [value, transfer];
    }
    case "setTokenHistory":
      await optional("setTokenHistory")(state(a[0]), a[1], a[2]);
      return [null, []];
    case "replay":
      await optional("replay")(state(a[0]), a[1]);
      return [null, []];
    case "forward": {
      const host = a[0] as ModelState;
      const logits = await gpu().forward(host, a[1], a[2]);
      return [{ logits, state: host }, buffersOf([logits, ...host.layers])];
    }
    case "dispose":
      await backend?.dispose();
      // The device is this worker's alone: destroy it before the thread ends (a live device torn
      // down with its thread is a hazard for the driver's heap).
      deviceLost = new TnlError("device_lost", "simulated device loss");
      if (backend instanceof WebGpuBackend) backend.model.ctx.device.destroy();
      backend = null;
      states.clear();
      return [null, []];
    case "crash":
      // Simulates a device loss that kills the worker mid-work (tests of the restart path).
      if (backend instanceof WebGpuBackend) backend.model.ctx.device.destroy();
      setTimeout(() => {
        throw new Error("simulated backend worker crash");
      });
      return [null, []];
    default:
      throw new TnlError("internal", `unknown backend worker operation ${op}`);
  }
}

let chain: Promise<void> = Promise.resolve();
self.onmessage = (ev: MessageEvent<WorkerRequest>) => {
  const { id, op, args } = ev.data;
  chain = chain.then(async () => {
    try {
      const [value, transfer] = await handle(op, args);
      post({ kind: "result", id, value }, transfer);
    } catch (e) {
      // An operation that fails because the device was lost fails as that loss (503), whichever
      // of its own error and the loss notice comes first; one timer turn lets the notice land.
      if (backend instanceof WebGpuBackend && !deviceLost) await new Promise((r) => setTimeout(r));
      const error = deviceLost && !(e instanceof TnlError && e.code === "device_lost")
        ? new TnlError("device_lost", `the GPU device was lost: ${deviceLost.message}`)
        : e;
      post({ kind: "error", id, error: toWire(error) });
    }
  });
};
