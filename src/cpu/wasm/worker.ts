/**
 * A kernel thread of a {@link WasmArena} (started by `WasmArena.startThreads`): it instantiates the
 * shared-memory kernels on the arena's memory, then runs the row blocks the arena hands it through
 * a shared control block (`threads.ts`) until it is told to stop.
 * @module
 */

/// <reference lib="deno.worker" />

import { CTRL, type LinearFn, THREAD_SLOT, threadSlot } from "./threads.ts";

self.onmessage = (e: MessageEvent) => {
  const { module, memory, ctrl, index } = e.data as {
    module: WebAssembly.Module;
    memory: WebAssembly.Memory;
    ctrl: SharedArrayBuffer;
    index: number;
  };
  const k = new WebAssembly.Instance(module, { env: { memory } }).exports as Record<
    string,
    LinearFn
  >;
  const fns = [k.linear_f32, k.linear_bf16, k.linear_f16, k.linear_i8];
  const c = new Int32Array(ctrl);
  const base = threadSlot(index);
  // The generation is read before "ready": a job posted right after it must not be missed.
  let gen = Atomics.load(c, CTRL.gen);
  self.postMessage("ready");
  for (;;) {
    // Spin briefly (the next linear of a step follows within microseconds), then sleep.
    const t0 = performance.now();
    while (Atomics.load(c, CTRL.gen) === gen && performance.now() - t0 < 0.2) { /* spin */ }
    Atomics.wait(c, CTRL.gen, gen);
    gen = Atomics.load(c, CTRL.gen);
    const fn = c[CTRL.fn];
    if (fn < 0) break;
    if (c[base + THREAD_SLOT.active]) {
      fns[fn](
        c[base + THREAD_SLOT.w],
        c[base + THREAD_SLOT.x],
        c[base + THREAD_SLOT.b],
        c[base + THREAD_SLOT.y],
        c[base + THREAD_SLOT.out],
        c[base + THREAD_SLOT.inp],
        c[base + THREAD_SLOT.T],
        c[base + THREAD_SLOT.s],
        c[base + THREAD_SLOT.ys],
        c[base + THREAD_SLOT.c],
      );
    }
    Atomics.add(c, CTRL.done, 1);
    Atomics.notify(c, CTRL.done);
  }
  self.close();
};
