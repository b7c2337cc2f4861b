/**
 * The layer encodings of the state format (`f32`, `f32+deflate`, `bf16`, `q8`, each `+deflate`):
 *
 * - Fidelity, on the default model (CPU backend) and held-out Shakespeare
 *   (`bench/data/shakespeare_heldout.txt`): two disjoint 2,305-token segments; at positions 256,
 *   1,024 and 2,048 the exact state goes through `encodeSession` / `decodeSession` in each
 *   encoding, then the next 256 tokens are fed from it. Per encoding: the mean NLL of the true
 *   continuation against the exact state's (and the perplexity ratio), teacher-forced top-1
 *   agreement of the logits, and free-running greedy decoding: tokens equal to the exact state's
 *   greedy tokens, and where they first differ. Also the encoded sizes of these real states.
 * - Size and speed at the released 385M, 1B and 7B shapes (random states: a normal value times a
 *   per-row magnitude, so deflate sizes there are those of incompressible mantissas, a worst case;
 *   the real states above give the ratio to expect): `encodeSession` and `decodeSession` in the
 *   calling thread, unsigned, `--rounds` rounds of `--reps` each (median, and the range of the
 *   rounds' medians).
 *
 * Writes `bench/results/state_codec.{json,md}` (`state_codec_<part>` for one part, or `--out NAME`)
 * and, with the fidelity part, `state_codec_{fidelity,size}.svg`.
 *
 *   deno task bench:state [--part all|fidelity|speed] [--rounds 3] [--reps 3] [--shapes 385M,1B,7B]
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { loadModel } from "../src/load.ts";
import type { ModelConfig } from "../src/model/config.ts";
import { stateLayerSize } from "../src/model/config.ts";
import { shapeConfig } from "../src/model/random_weights.ts";
import type { SessionSnapshot } from "../src/model/snapshot.ts";
import { cloneState, createState, type ModelState } from "../src/model/state.ts";
import {
  decodeSession,
  encodeSession,
  STATE_ENCODINGS,
  stateByteSize,
  type StateEncoding,
} from "../src/state/codec.ts";
import { lineChart, markdownTable } from "./report.ts";

const TEXT = new URL("./data/shakespeare_heldout.txt", import.meta.url);
const RESULTS = new URL("./results/", import.meta.url).pathname;
const POSITIONS = [256, 1024, 2048];
const CONTINUATION = 256;

/** Fidelity of one encoding at one position of one segment. */
interface FidelityRow {
  segment: number;
  position: number;
  encoding: StateEncoding;
  bytes: number;
  nll: number;
  exactNll: number;
  top1Agreement: number;
  greedyMatches: number;
  firstDivergence: number;
}

/** Size and speed of one encoding at one shape. */
interface SpeedRow {
  shape: string;
  encoding: StateEncoding;
  stateBytes: number;
  bytes: number;
  encodeMs: number;
  encodeMsRange: [number, number];
  decodeMs: number;
  decodeMsRange: [number, number];
  loadavg: number[];
}

function snapshotOf(state: ModelState, history: Int32Array, id = "s_bench"): SessionSnapshot {
  return {
    id,
    generation: 1,
    state,
    tokens: history,
    generated: new Uint8Array(history.length),
    pending: history.length ? history[history.length - 1] : -1,
    sampling: { temperature: 0 },
    rng: { seed: 1, counter: 0 },
    text: { pendingBytes: new Uint8Array(0), heldStop: "" },
    createdAt: 1_700_000_000_000,
    updatedAt: 1_700_000_000_000,
  };
}

function argmax(a: Float32Array, off: number, n: number): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (a[off + i] > a[off + best]) best = i;
  return best;
}

/** -log softmax(z)[target], in f64. */
function nllAt(z: Float32Array, off: number, n: number, target: number): number {
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, z[off + i]);
  let s = 0;
  for (let i = 0; i < n; i++) s += Math.exp(z[off + i] - max);
  return max + Math.log(s) - z[off + target];
}

async function fidelity(): Promise<{ rows: FidelityRow[]; model: string }> {
  const model = await loadModel(undefined, { backend: "cpu" });
  try {
    const { config } = model;
    const V = config.vocabSize;
    const fp = {
      modelFingerprint: model.fingerprint,
      tokenizerFingerprint: model.tokenizer.fingerprint,
    };
    const ids = Int32Array.from(model.tokenizer.encode(await Deno.readTextFile(TEXT)));
    const span = POSITIONS[POSITIONS.length - 1] + CONTINUATION + 1;
    if (ids.length < 2 * span) {
      throw new Error(`the text has ${ids.length} tokens, need ${2 * span}`);
    }
    const segments = [0, ids.length - span];
    const rows: FidelityRow[] = [];
    for (const [segment, start] of segments.entries()) {
      const seg = ids.subarray(start, start + span);
      const state = createState(config);
      let done = 0;
      for (const P of POSITIONS) {
        await model.backend.forward(state, seg.subarray(done, P), "none");
        done = P;
        // Resume: the pending token x_P is fed first; logits t predict x_{P+t+1}.
        const cont = seg.subarray(P, P + CONTINUATION);
        const snap = snapshotOf(cloneState(state), seg.slice(0, P + 1));
        let exact: { logits: Float32Array; greedy: Int32Array; nll: number } | null = null;
        for (const encoding of STATE_ENCODINGS) {
          const bytes = await encodeSession(snap, { config, ...fp, encoding });
          const decoded = await decodeSession(bytes, { config, ...fp });
          const resumed = decoded.state;
          const logits = await model.backend.forward(cloneState(resumed), cont, "all");
          let nll = 0;
          for (let t = 0; t < CONTINUATION; t++) nll += nllAt(logits, t * V, V, seg[P + t + 1]);
          nll /= CONTINUATION;
          const greedy = new Int32Array(CONTINUATION);
          const s = cloneState(resumed);
          let next = seg[P];
          for (let t = 0; t < CONTINUATION; t++) {
            const z = await model.backend.forward(s, Int32Array.of(next), "last");
            next = greedy[t] = argmax(z, 0, V);
          }
          exact ??= { logits, greedy, nll }; // f32 comes first: the exact state
          let agree = 0;
          let matches = 0;
          let first = CONTINUATION;
          for (let t = 0; t < CONTINUATION; t++) {
            if (argmax(logits, t * V, V) === argmax(exact.logits, t * V, V)) agree++;
            if (greedy[t] === exact.greedy[t]) matches++;
            else if (first === CONTINUATION) first = t;
          }
          rows.push({
            segment,
            position: P,
            encoding,
            bytes: bytes.length,
            nll,
            exactNll: exact.nll,
            top1Agreement: agree / CONTINUATION,
            greedyMatches: matches,
            firstDivergence: first,
          });
          console.error(
            `segment ${segment} @${P} ${encoding}: ${bytes.length} B, NLL ${nll.toFixed(5)} ` +
              `(exact ${exact.nll.toFixed(5)}), top-1 ${agree}/${CONTINUATION}, greedy ${matches}`,
          );
        }
      }
    }
    return { rows, model: model.dir };
  } finally {
    await model.dispose();
  }
}

/** A random state at `config`'s shape: per row a magnitude in [0.01, 1], normal values times it. */
function randomState(config: ModelConfig): ModelState {
  const state = createState(config);
  let x = 12345;
  const u = () => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) + 0.5) / 2 ** 32;
  for (let l = 0; l < config.numLayers; l++) {
    const a = state.layers[l];
    for (let r = 0; r < stateLayerSize(config, l) / config.headDim; r++) {
      const mag = 0.01 * 100 ** u();
      for (let c = 0; c < config.headDim; c++) {
        // Box-Muller: a standard normal from two uniforms.
        a[r * config.headDim + c] = mag * Math.sqrt(-2 * Math.log(u())) *
          Math.cos(2 * Math.PI * u());
      }
    }
  }
  return state;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

async function speed(shapes: string[], rounds: number, reps: number): Promise<SpeedRow[]> {
  const rows: SpeedRow[] = [];
  const fp = { modelFingerprint: "a".repeat(64), tokenizerFingerprint: "b".repeat(64) };
  for (const shape of shapes) {
    const config = shapeConfig(shape);
    const state = randomState(config);
    const n = 2048;
    state.position = n - 1;
    const history = Int32Array.from({ length: n }, (_, i) => (i * 7919) % config.vocabSize);
    const snap = snapshotOf(state, history);
    for (const encoding of STATE_ENCODINGS) {
      const opts = { config, ...fp, encoding };
      let bytes = await encodeSession(snap, opts); // warm up
      await decodeSession(bytes, opts);
      const enc: number[][] = [];
      const dec: number[][] = [];
      for (let r = 0; r < rounds; r++) {
        enc.push([]);
        dec.push([]);
        for (let i = 0; i < reps; i++) {
          let t0 = performance.now();
          bytes = await encodeSession(snap, opts);
          enc[r].push(performance.now() - t0);
          t0 = performance.now();
          await decodeSession(bytes, opts);
          dec[r].push(performance.now() - t0);
        }
      }
      const range = (xs: number[][]): [number, number] => {
        const m = xs.map(median);
        return [Math.min(...m), Math.max(...m)];
      };
      const row: SpeedRow = {
        shape,
        encoding,
        stateBytes: stateByteSize(config),
        bytes: bytes.length,
        encodeMs: median(enc.flat()),
        encodeMsRange: range(enc),
        decodeMs: median(dec.flat()),
        decodeMsRange: range(dec),
        loadavg: Deno.loadavg(),
      };
      rows.push(row);
      console.error(
        `${shape} ${encoding}: ${(row.bytes / 2 ** 20).toFixed(2)} MiB, encode ` +
          `${row.encodeMs.toFixed(0)} ms, decode ${row.decodeMs.toFixed(0)} ms, load ${
            row.loadavg.map((v) => v.toFixed(1)).join(" ")
          }`,
      );
    }
  }
  return rows;
}

async function machine(): Promise<Record<string, unknown>> {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  return {
    cpu: /model name\s*:\s*(.*)/.exec(cpuinfo)?.[1] ?? "unknown",
    cores: navigator.hardwareConcurrency,
    deno: Deno.version.deno,
    os: `${Deno.build.os} ${Deno.build.arch}`,
  };
}

const pct = (v: number) => `${(100 * v).toFixed(2)}%`;
/** A signed percentage with 3 decimals; one that rounds to zero shows as 0.000%. */
const signedPct = (v: number) => {
  const s = (100 * v).toFixed(3);
  return `${Number(s) === 0 ? "0.000" : Number(s) > 0 ? "+" + s : s}%`;
};
const mib = (b: number) => `${(b / 2 ** 20).toFixed(2)} MiB`;

function fidelityTable(rows: FidelityRow[]): string {
  const out: (string | number)[][] = [];
  for (const P of POSITIONS) {
    for (const encoding of STATE_ENCODINGS) {
      const rs = rows.filter((r) => r.position === P && r.encoding === encoding);
      if (!rs.length) continue;
      const nll = rs.reduce((s, r) => s + r.nll, 0) / rs.length;
      const exact = rs.reduce((s, r) => s + r.exactNll, 0) / rs.length;
      const f32 = rows.find((r) =>
        r.position === P && r.encoding === "f32" &&
        r.segment === rs[0].segment
      )!;
      out.push([
        P,
        encoding,
        `${(rs[0].bytes / 1024).toFixed(0)} KB (${(rs[0].bytes / f32.bytes).toFixed(3)}×)`,
        nll.toFixed(5),
        signedPct(Math.exp(nll - exact) - 1),
        pct(rs.reduce((s, r) => s + r.top1Agreement, 0) / rs.length),
        rs.map((r) => `${r.greedyMatches}`).join(", "),
        rs.map((r) => `${r.firstDivergence}`).join(", "),
      ]);
    }
  }
  return markdownTable(
    [
      "position",
      "encoding",
      "size (÷ f32), segment 0",
      "NLL nats/token",
      "perplexity Δ",
      "top-1 agreement",
      "greedy tokens equal /256 (per segment)",
      "first greedy difference",
    ],
    out,
  );
}

function speedTable(rows: SpeedRow[]): string {
  const ms = (m: number, [a, b]: [number, number]) =>
    `${m.toFixed(0)} (${a.toFixed(0)}-${b.toFixed(0)})`;
  return markdownTable(
    ["shape", "encoding", "size", "÷ f32 state", "encode ms", "decode ms", "f32 MB/s enc / dec"],
    rows.map((r) => [
      r.shape,
      r.encoding,
      mib(r.bytes),
      (r.bytes / r.stateBytes).toFixed(3),
      ms(r.encodeMs, r.encodeMsRange),
      ms(r.decodeMs, r.decodeMsRange),
      `${(r.stateBytes / 1e3 / r.encodeMs).toFixed(0)} / ${
        (r.stateBytes / 1e3 / r.decodeMs).toFixed(0)
      }`,
    ]),
  );
}

if (import.meta.main) {
  const args = parseArgs(Deno.args, {
    string: ["part", "shapes", "rounds", "reps", "out"],
    default: { part: "all", shapes: "385M,1B,7B", rounds: "3", reps: "3" },
  });
  const out = args.out ?? (args.part === "all" ? "state_codec" : `state_codec_${args.part}`);
  const date = new Date().toISOString().slice(0, 10);
  const result: Record<string, unknown> = {
    date,
    machine: await machine(),
    command: `deno task bench:state ${Deno.args.join(" ")}`.trim(),
    loadavgStart: Deno.loadavg(),
  };
  const md: string[] = [
    `# State encodings (${date})`,
    "",
    `\`${result.command}\` on ${(result.machine as { cpu: string }).cpu}, ${
      (result.machine as { cores: number }).cores
    } cores (shared), Deno ${Deno.version.deno}. Load average at the start: ${
      Deno.loadavg().map((v) => v.toFixed(2)).join(", ")
    }.`,
  ];
  if (args.part === "all" || args.part === "fidelity") {
    const { rows } = await fidelity();
    result.fidelity = rows;
    md.push(
      "",
      "## Fidelity: default model (CPU), held-out Shakespeare, 2 segments",
      "",
      `Resumed at each position from the state in each encoding, then ${CONTINUATION} tokens. NLL of ` +
        "the true continuation (mean of the 2 segments), perplexity Δ = exp(NLL − exact NLL) − 1, " +
        "top-1 agreement of the teacher-forced logits with the exact state's, and free-running greedy " +
        "decoding compared token by token with the exact state's.",
      "",
      fidelityTable(rows),
    );
    const lossy = STATE_ENCODINGS.filter((e) => !e.startsWith("f32"));
    await Deno.writeTextFile(
      `${RESULTS}state_codec_fidelity.svg`,
      lineChart(
        "Greedy tokens equal to the exact state's (of 256)",
        "resume position (tokens)",
        "greedy tokens equal (mean of 2 segments)",
        lossy.map((e) => ({
          label: e,
          points: POSITIONS.map((P) => {
            const rs = rows.filter((r) => r.position === P && r.encoding === e);
            return [P, rs.reduce((s, r) => s + r.greedyMatches, 0) / rs.length];
          }),
        })),
      ),
    );
    await Deno.writeTextFile(
      `${RESULTS}state_codec_size.svg`,
      lineChart(
        "Default model's real states: encoded size ÷ f32",
        "resume position (tokens)",
        "size ÷ f32 (segment 0)",
        STATE_ENCODINGS.map((e) => ({
          label: e,
          points: POSITIONS.map((P) => {
            const r = rows.find((r) => r.position === P && r.encoding === e && r.segment === 0)!;
            const f = rows.find((r) =>
              r.position === P && r.encoding === "f32" && r.segment === 0
            )!;
            return [P, r.bytes / f.bytes];
          }),
        })),
      ),
    );
  }
  if (args.part === "all" || args.part === "speed") {
    const rows = await speed(args.shapes.split(","), Number(args.rounds), Number(args.reps));
    result.speed = rows;
    md.push(
      "",
      "## Size and speed at the released shapes (random states, 2,048 tokens of history)",
      "",
      `In the calling thread, unsigned; median of ${args.rounds} rounds × ${args.reps} ` +
        "(in brackets: the lowest and highest round median). Random mantissas do not compress, so " +
        "the `+deflate` sizes here are a worst case; see the real states above.",
      "",
      speedTable(rows),
    );
  }
  result.loadavgEnd = Deno.loadavg();
  md.push("", `Load average at the end: ${Deno.loadavg().map((v) => v.toFixed(2)).join(", ")}.`);
  await Deno.writeTextFile(`${RESULTS}${out}.json`, JSON.stringify(result, null, 2) + "\n");
  await Deno.writeTextFile(`${RESULTS}${out}.md`, md.join("\n") + "\n");
  console.error(`wrote ${RESULTS}${out}.{json,md}`);
}
