/**
 * The cost of resuming a session against re-running the prefill of the same context, on the default
 * model: for contexts of 256, 1,024 and 4,096 tokens,
 *
 * - resume = load the encoded state from a store + verify its HMAC signature and decode it (every
 *   check of `decodeSession`) + rebuild the `Session` + import the state into a backend slot;
 * - prefill = feed the context's tokens into a fresh slot, in the engine's 256-token chunks.
 *
 * Both leave the same slot (position N - 1, the last token pending), so the ratio resume / prefill
 * is what a server saves by keeping states instead of prompts. Medians of several runs.
 *
 * ```sh
 * deno run -A bench/resume_bench.ts                       # CPU backend, memory store
 * deno run -A bench/resume_bench.ts --store memory,redis://127.0.0.1:6379 --backend webgpu
 * ```
 * `--store` takes several specs (comma-separated): each gets its own rows.
 * Writes `bench/results/resume_<adapter>.json` (adapter: `cpu`, or the GPU's name).
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { Session } from "../src/engine/session.ts";
import { type BackendChoice, loadModel } from "../src/load.ts";
import { decodeSession, encodeSession } from "../src/state/codec.ts";
import { openStore } from "../src/state/mod.ts";

const args = parseArgs(Deno.args, {
  string: ["backend", "store", "contexts", "out"],
  default: { backend: "cpu", store: "memory", contexts: "256,1024,4096" },
});
const SECRET = "resume bench secret";
const contexts = String(args.contexts).split(",").map(Number);

const model = await loadModel(undefined, { backend: args.backend as BackendChoice });
const backend = model.backend;
const stores = await Promise.all(
  String(args.store).split(",").map((spec) => openStore(spec, { prefix: "tnl-bench" })),
);
const codec = {
  config: model.config,
  modelFingerprint: model.fingerprint,
  tokenizerFingerprint: model.tokenizer.fingerprint,
  secret: SECRET,
};
const CHUNK = 256;

/** Context tokens: Shakespeare-like text, tiled to `n`. */
function contextTokens(n: number): Int32Array {
  const text = "ROMEO:\nBut soft, what light through yonder window breaks?\n" +
    "It is the east, and Juliet is the sun.\n\nJULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n";
  const ids = model.tokenizer.encode(text);
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = ids[i % ids.length];
  return out;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

/** Feed `tokens` into a fresh slot in engine-sized chunks; returns ms. */
async function prefill(tokens: Int32Array): Promise<number> {
  const slot = backend.allocState();
  const t0 = performance.now();
  for (let at = 0; at < tokens.length; at += CHUNK) {
    await backend.prefill(slot, tokens.subarray(at, Math.min(tokens.length, at + CHUNK)), "none");
  }
  // A GPU backend queues work: reading the state back waits for it (counted in both measures).
  await backend.readState(slot);
  const ms = performance.now() - t0;
  backend.releaseState(slot);
  return ms;
}

interface Row {
  store: string;
  context: number;
  encodedBytes: number;
  prefillMs: number;
  resumeMs: number;
  loadMs: number;
  verifyDecodeMs: number;
  importMs: number;
  ratio: number;
  speedup: number;
}

const rows: Row[] = [];
const prefills = new Map<number, number>();
for (const store of stores) {
  for (const n of contexts) {
    // The session after the context: N - 1 tokens consumed, the last one pending.
    const engine = model.engine();
    const session = engine.newSession(`bench-${n}`);
    const tokens = contextTokens(n);
    for await (const ev of engine.generate({ session, prompt: tokens, maxTokens: 0 })) {
      if (ev.type === "done" && ev.finishReason !== "length") throw new Error(ev.finishReason);
    }
    session.generation = 1;
    const bytes = await encodeSession(session.toSnapshot(), codec);
    await store.put(session.id, bytes, { generation: 1 });

    if (!prefills.has(n)) {
      const runs = n >= 4096 ? 3 : 5;
      await prefill(tokens.subarray(0, n - 1)); // warm-up
      const pre: number[] = [];
      for (let i = 0; i < runs; i++) pre.push(await prefill(tokens.subarray(0, n - 1)));
      prefills.set(n, median(pre));
    }

    const load: number[] = [], dec: number[] = [], imp: number[] = [], tot: number[] = [];
    for (let i = 0; i < 50; i++) {
      const t0 = performance.now();
      const entry = await store.getEntry(session.id);
      const t1 = performance.now();
      const snap = await decodeSession(entry!.bytes, codec);
      const live = Session.fromSnapshot(model.config, snap);
      const t2 = performance.now();
      const slot = backend.allocState();
      await backend.writeState(slot, live.state);
      await backend.readState(slot); // GPU: wait for the upload (as prefill waits for its work)
      const t3 = performance.now();
      backend.releaseState(slot);
      if (i >= 10) {
        load.push(t1 - t0);
        dec.push(t2 - t1);
        imp.push(t3 - t2);
        tot.push(t3 - t0);
      }
    }
    const prefillMs = prefills.get(n)!;
    const resumeMs = median(tot);
    const row: Row = {
      store: store.kind,
      context: n,
      encodedBytes: bytes.length,
      prefillMs: Number(prefillMs.toFixed(2)),
      resumeMs: Number(resumeMs.toFixed(3)),
      loadMs: Number(median(load).toFixed(3)),
      verifyDecodeMs: Number(median(dec).toFixed(3)),
      importMs: Number(median(imp).toFixed(3)),
      ratio: Number((resumeMs / prefillMs).toFixed(5)),
      speedup: Number((prefillMs / resumeMs).toFixed(1)),
    };
    rows.push(row);
    console.error(JSON.stringify(row));
    await store.delete(session.id);
  }
}

const adapter = backend.kind === "cpu"
  ? "cpu"
  : backend.device.toLowerCase().replace(/[^a-z0-9]+/g, "_").replace(/^_|_$/g, "").slice(0, 40);
const result = {
  bench: "resume",
  date: new Date().toISOString(),
  model: "tnl-shakespeare-6m",
  backend: backend.kind,
  device: backend.device,
  stores: stores.map((s) => s.kind),
  signed: true,
  note: "resume = store get + HMAC verify + decode + Session + writeState; " +
    "prefill = backend.prefill of the same N - 1 tokens in 256-token chunks; ratio = resume / prefill",
  results: rows,
};
const out = typeof args.out === "string"
  ? args.out
  : new URL(`./results/resume_${adapter}.json`, import.meta.url).pathname;
await Deno.writeTextFile(out, JSON.stringify(result, null, 2) + "\n");
console.table(rows.map((r) => ({
  store: r.store,
  context: r.context,
  "prefill ms": r.prefillMs,
  "resume ms": r.resumeMs,
  "load ms": r.loadMs,
  "verify+decode ms": r.verifyDecodeMs,
  "import ms": r.importMs,
  "resume/prefill": r.ratio,
})));
console.error(`wrote ${out}`);
for (const s of stores) await s.close();
await model.dispose();
