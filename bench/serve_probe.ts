/**
 * Worker of the serving benchmark's client-side lag probe: `GET /health` every `everyMs` until told
 * to stop, then it posts the latencies (ms). In a worker so the clients' own work (reading and
 * parsing hundreds of SSE streams) does not delay the probe.
 *
 * Messages in: `{ url, everyMs }` to start, `"stop"` to stop; out: `number[]`.
 * @module
 */

/// <reference lib="deno.worker" />

let running = false;
const out: number[] = [];

async function probe(url: string, everyMs: number): Promise<void> {
  while (running) {
    const t0 = performance.now();
    try {
      const r = await fetch(`${url}/health`);
      await r.body?.cancel();
      out.push(performance.now() - t0);
    } catch { /* the server went away: no sample */ }
    await new Promise((r) => setTimeout(r, Math.max(0, everyMs - (performance.now() - t0))));
  }
  self.postMessage(out);
}

self.onmessage = (e: MessageEvent<{ url: string; everyMs: number } | "stop">) => {
  if (e.data === "stop") running = false;
  else if (!running) {
    running = true;
    probe(e.data.url, e.data.everyMs);
  }
};
