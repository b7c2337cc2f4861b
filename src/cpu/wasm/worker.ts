/**
 * A kernel thread of a {@link WasmArena} (started by `WasmArena.startThreads`): it instantiates the
 * shared-memory kernels on the arena's memory, then runs its share of the jobs the arena hands it
 * through a shared control block (`threads.ts`) until it is told to stop.
 * @module
 */

/// <reference lib="deno.worker" />

import { CTRL, KERNELS, threadSlot } from "./threads.ts";

type Kernel = (...args: number[]) => void;

self.onmessage = (e: MessageEvent) => {
  const { module, memory, ctrl, index } = e.data as {
    module: WebAssembly.Module;
    memory: WebAssembly.Memory;
    ctrl: SharedArrayBuffer;
    index: number;
  };
  const k = new WebAssembly.Instance(module, { env: { memory } }).exports as Record<
    string,
    Kernel
  >;
  const fns = KERNELS.map((name) => k[name]);
  const c = new Int32Array(ctrl);
  const at = threadSlot(index), a = at + 1;
  // The generation is read before "ready": a job posted right after it must not be missed.
  let gen = Atomics.load(c, CTRL.gen);
  self.postMessage("ready");
  for (;;) {
    // Spin briefly (the next job of a step follows within microseconds), then sleep.
    const t0 = performance.now();
    while (Atomics.load(c, CTRL.gen) === gen && performance.now() - t0 < 0.2) { /* spin */ }
    Atomics.wait(c, CTRL.gen, gen);
    gen = Atomics.load(c, CTRL.gen);
    const fn = c[CTRL.fn];
    if (fn < 0) break;
    if (c[at]) {
      fns[fn](
        c[a],
        c[a + 1],
        c[a + 2],
        c[a + 3],
        c[a + 4],
        c[a + 5],
        c[a + 6],
        c[a + 7],
        c[a + 8],
        c[a + 9],
        c[a + 10],
        c[a + 11],
        c[a + 12],
        c[a + 13],
        c[a + 14],
      );
    }
    Atomics.add(c, CTRL.done, 1);
    Atomics.notify(c, CTRL.done);
  }
  self.close();
};
