/**
 * A kernel thread of a {@link WasmArena} (started by `WasmArena.startThreads`): it instantiates the
 * shared-memory kernels on the arena's memory, then claims chunks of the jobs the arena posts in
 * a shared control block (`threads.ts`) until it is told to stop.
 * @module
 */

/// <reference lib="deno.worker" />

import { CTRL, KERNELS, runChunks, SPIN_MS } from "./threads.ts";

self.onmessage = (e: MessageEvent) => {
  const { module, memory, ctrl } = e.data as {
    module: WebAssembly.Module;
    memory: WebAssembly.Memory;
    ctrl: SharedArrayBuffer;
  };
  const k = new WebAssembly.Instance(module, { env: { memory } }).exports as Record<
    string,
    (...args: number[]) => void
  >;
  const fns = KERNELS.map((name) => k[name]);
  const c = new Int32Array(ctrl);
  const args: number[] = new Array(15).fill(0);
  const mem = new Float32Array(memory.buffer);
  // The generation is read before "ready": a job posted right after it must not be missed.
  let gen = Atomics.load(c, CTRL.gen);
  self.postMessage("ready");
  for (;;) {
    // Spin briefly (the next job of a step follows within microseconds), then sleep.
    const t0 = performance.now();
    while (Atomics.load(c, CTRL.gen) === gen && performance.now() - t0 < SPIN_MS) { /* spin */ }
    Atomics.wait(c, CTRL.gen, gen);
    gen = Atomics.load(c, CTRL.gen);
    if (c[CTRL.fn] < 0) break;
    runChunks(c, fns, args, mem);
  }
  self.close();
};
