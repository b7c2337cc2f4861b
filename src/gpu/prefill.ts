/**
 * Prefill on the GPU: a prompt is processed in chunks of up to `capacity` tokens (a multiple of the
 * Lightning block), each chunk in a few submissions: embedding, then per layer norm → GEMM(qkvu)
 * → Lightning Attention (prep, block KV, scan, block output) → gated norm → GEMM(out, +residual)
 * → norm → GEMM(SGLU) → GEMM(down, +residual), then the final norm and the head on the rows asked
 * for (the last row alone: the decode head's matrix-vector product). Bind groups are built once;
 * only the small uniform blocks are rewritten per chunk.
 * @module
 */

import { timePasses } from "./timing.ts";
import type { LogitsMode } from "../engine/backend.ts";
import { stateKeyDim } from "../model/config.ts";
import type { GpuModel } from "./model.ts";
import { GpuResources } from "./resources.ts";
import type { GpuMatrix } from "./weights.ts";
import { GEMM_TILES, type GemmTile, tileName } from "./gemm_tiling.ts";
import { gemmTileFor } from "./gemm_tune.ts";
import {
  activationDefine,
  embedOps,
  encodeOps,
  gemmOps,
  type GemmSpec,
  gemmSplitParts,
  lightningBlock,
  lightningOps,
  matvecOps,
  normOp,
  type NormSpec,
  type Op,
} from "./ops/mod.ts";

/**
 * Tokens per prefill submission unless asked otherwise. On the H200 at 385M bf16
 * (`bench/prefill_probe.ts`, 2026-12-05, `prefill_probe_nvidia-h200_s7.md`): an 8,192-token prompt
 * took 255.6 ms in chunks of 2,048, 234.0 in chunks of 4,096 and 229.9 in one; a 2,048-token one
 * 73.5-75.0 ms at every capacity (the GEMMs fill the GPU better with more rows, and there are
 * fewer passes).
 */
const DEFAULT_CAPACITY = 4096;

/** Submissions a prefill chunk is split into, so the GPU starts before the CPU has encoded it all. */
const PREFILL_SUBMITS = 4;

/**
 * Chunks of at most this many tokens run GEMM tiles tuned at this length: a short prompt has few
 * tiles along its tokens, and a tile that fills the GPU at the capacity can leave most of it idle
 * there. Every tile gives the same bits (`src/gpu/gemm_tiling.ts`), so this changes speed only.
 */
export const SHORT_CHUNK = 512;

/** Options of the prefill. */
export interface GpuPrefillOptions {
  /**
   * The GEMM tile of chunks of at most `SHORT_CHUNK` (512) tokens, instead of tuning one at load
   * (tests; every tile gives the same bits).
   */
  shortChunkTile?: GemmTile;
}

/** The prefill machinery of one model. */
export class GpuPrefill {
  /** Most tokens per chunk. */
  readonly capacity: number;
  /** Rows of logits computed per head pass when all positions are asked for. */
  readonly logitRows: number;
  /** The GEMM tile of each projection label (tuned at build, see `src/gpu/gemm_tune.ts`). */
  readonly tiles: Map<string, GemmTile> = new Map();
  /** The same for chunks of at most `SHORT_CHUNK` tokens (the `tiles` when not shorter than it). */
  readonly shortTiles: Map<string, GemmTile> = new Map();
  readonly #m: GpuModel;
  readonly #res: GpuResources;
  readonly #tokens: GPUBuffer;
  readonly #tokHost: Uint32Array<ArrayBuffer>;
  readonly #logits: GPUBuffer;
  /** The last row of the normalized hidden states, the head's input when only it is asked for. */
  readonly #lastRow: GPUBuffer;
  /** Control words of the head's matrix-vector product: one sequence. */
  readonly #one: GPUBuffer;
  /** [T, D] normalized hidden states (the GEMMs' input; the head's after the final norm). */
  #normed: GPUBuffer | null = null;
  #layers: Op[] = [];
  /** `#layers` with the short chunks' GEMM tiles (the same ops where the tiles agree). */
  #shortLayers: Op[] = [];
  readonly #options: GpuPrefillOptions;
  #headLast: Op[] = [];
  #headAll: Op[] = [];
  #embed: Op[] = [];
  #finalNorm: Op | null = null;

  private constructor(
    m: GpuModel,
    capacity: number,
    logitRows: number,
    options: GpuPrefillOptions,
  ) {
    this.#m = m;
    this.#options = options;
    this.capacity = capacity;
    this.logitRows = logitRows;
    this.#res = new GpuResources(m.ctx.device);
    this.#tokens = this.#res.storage("prefill.tokens", capacity * 4);
    this.#tokHost = new Uint32Array(capacity);
    this.#logits = this.#res.storage("prefill.logits", logitRows * m.config.vocabSize * 4);
    this.#lastRow = this.#res.storage("prefill.last_row", m.config.embedDim * 4);
    this.#one = this.#res.storage("prefill.one", 16);
    m.ctx.device.queue.writeBuffer(this.#one, 0, new Uint32Array([1]));
  }

  /** Chunk capacity that keeps every prefill buffer within the binding limit. */
  static chooseCapacity(m: GpuModel, wanted = DEFAULT_CAPACITY): number {
    const c = m.config;
    const blk = lightningBlock(c.headDim);
    const limit = m.ctx.device.limits.maxStorageBufferBindingSize;
    const dkMax = 2 * c.headDim;
    let T = wanted;
    const biggest = (t: number) =>
      Math.max(
        t * 4 * c.hiddenDim * 4,
        t * c.gluDim * 4,
        t * c.numHeads * dkMax * 4,
        Math.ceil(t / blk) * c.numHeads * dkMax * c.headDim * 4,
      );
    while (T > blk && biggest(T) > limit) T = T / 2;
    return Math.max(blk, T - (T % blk));
  }

  /** Build buffers, pipelines and bind groups. */
  static async create(
    m: GpuModel,
    wanted?: number,
    options: GpuPrefillOptions = {},
  ): Promise<GpuPrefill> {
    const capacity = GpuPrefill.chooseCapacity(m, wanted);
    const V = m.config.vocabSize;
    const limit = m.ctx.device.limits.maxStorageBufferBindingSize;
    const logitRows = Math.max(1, Math.min(capacity, 256, Math.floor(limit / (V * 4))));
    const p = new GpuPrefill(m, capacity, logitRows, options);
    await p.#build();
    return p;
  }

  /**
   * The GEMM ops of a projection: `long` with the tile tuned for its shape at the chunk capacity,
   * `short` with the one tuned at `SHORT_CHUNK` tokens (the same ops when the tiles agree).
   */
  async #gemm(spec: Omit<GemmSpec, "tile">): Promise<{ long: Op[]; short: Op[] }> {
    const w: GpuMatrix = spec.w;
    const tuned = (tokens: number) =>
      gemmTileFor(this.#m.ctx, this.#m.pipelines, {
        rows: w.chunks[0].rows,
        cols: w.cols,
        dtype: w.dtype,
        tokens,
        glu: Boolean(spec.w2),
      });
    const tile = await tuned(this.capacity);
    const shortTile = this.capacity <= SHORT_CHUNK
      ? tile
      : this.#options.shortChunkTile ?? await tuned(SHORT_CHUNK);
    this.tiles.set(spec.label, tile);
    this.shortTiles.set(spec.label, shortTile);
    const t = { m: this.#m, res: this.#res };
    const long = await gemmOps(t, { ...spec, tile });
    const short = tileName(tile) === tileName(shortTile)
      ? long
      : await gemmOps(t, { ...spec, tile: shortTile });
    return { long, short };
  }

  /** The layers' ops for a chunk of `T` tokens (short chunks have their own GEMM tiles). */
  #layersFor(T: number): Op[] {
    return T <= SHORT_CHUNK ? this.#shortLayers : this.#layers;
  }

  /** The GEMM tile of projection `label` in a chunk of `T` tokens. */
  tileFor(label: string, T: number): GemmTile | undefined {
    return (T <= SHORT_CHUNK ? this.shortTiles : this.tiles).get(label);
  }

  #norm(
    label: string,
    dim: number,
    input: { buffer: GPUBuffer; stride: number },
    output: { buffer: GPUBuffer; stride: number },
    ln: NormSpec["ln"],
    gate?: NormSpec["gate"],
  ): Promise<Op> {
    return normOp({ m: this.#m, res: this.#res }, {
      label,
      dim,
      input,
      output,
      ln,
      gate,
      rows: "n",
    });
  }

  async #build(): Promise<void> {
    const m = this.#m;
    const c = m.config;
    const { embedDim: D, hiddenDim: H, gluDim: G, numHeads: nh, headDim: hd } = c;
    const Tc = this.capacity;
    const blk = lightningBlock(hd);
    const res = this.#res;
    const t = { m, res };
    const x = res.storage("prefill.x", Tc * D * 4);
    const a = res.storage("prefill.a", Tc * Math.max(D, H) * 4);
    this.#normed = a;
    const qkvu = res.storage("prefill.qkvu", Tc * 4 * H * 4);
    const o = res.storage("prefill.o", Tc * H * 4);
    const g = res.storage("prefill.g", Tc * G * 4);
    const qp = res.storage("prefill.qp", Tc * nh * 2 * hd * 4);
    const kp = res.storage("prefill.kp", Tc * nh * 2 * hd * 4);
    const kvs = res.storage("prefill.kvs", Math.ceil(Tc / blk) * nh * 2 * hd * hd * 4);
    const ln = c.normType === "layernorm";
    const w = m.weights;
    // Partial sums of the products split along their inner dimension (shared: one at a time).
    const partBytes = Math.max(
      gemmSplitParts(w.head.rows, w.head.cols, Tc),
      ...w.layers.flatMap((lw) =>
        [lw.qkvu, lw.out, lw.l3].map((x) => gemmSplitParts(x.rows, x.cols, Tc))
      ),
    );
    const parts = partBytes ? res.storage("prefill.parts", partBytes) : undefined;

    this.#embed = await embedOps(t, {
      table: w.embed,
      scale: c.embedScale,
      x,
      tokens: { buffer: this.#tokens, stride: 1, off: 0 },
      rows: "n",
    });
    const activation = activationDefine(c.activation);
    const xs = { buffer: x, stride: D }, as = { buffer: a, stride: D };
    for (let l = 0; l < c.numLayers; l++) {
      const lw = w.layers[l];
      const v = lw.vectors;
      const long: Op[] = [], short: Op[] = [];
      const both = (...ops: Op[]) => {
        long.push(...ops);
        short.push(...ops);
      };
      const gemm = async (spec: Omit<GemmSpec, "tile">) => {
        const g = await this.#gemm(spec);
        long.push(...g.long);
        short.push(...g.short);
      };
      both(
        await this.#norm(
          "token_norm",
          D,
          xs,
          as,
          ln ? { w: v.tokenNormW!, b: v.tokenNormB! } : null,
        ),
      );
      await gemm({
        label: "qkvu",
        w: lw.qkvu,
        input: as,
        out: { buffer: qkvu, stride: 4 * H },
        bias: v.qkvuBias,
        parts,
      });
      both(
        ...await lightningOps(t, {
          heads: nh,
          headDim: hd,
          dk: stateKeyDim(c, l),
          hidden: H,
          slotFloats: m.slotFloats[l],
          activation,
          theta: c.lrpe[l] ? v.theta! : undefined,
          rates: m.rates[l],
          qkvu,
          qp,
          kp,
          kvs,
          state: m.states[l],
          o,
        }),
      );
      both(
        await this.#norm(
          "mixer_norm",
          H,
          { buffer: o, stride: H },
          { buffer: a, stride: H },
          ln ? { w: v.mixerNormW!, b: v.mixerNormB! } : null,
          { buffer: qkvu, stride: 4 * H, off: 3 * H },
        ),
      );
      await gemm({
        label: "out_proj",
        w: lw.out,
        input: { buffer: a, stride: H },
        out: xs,
        bias: v.outBias,
        add: true,
        parts,
      });
      both(
        await this.#norm(
          "channel_norm",
          D,
          xs,
          as,
          ln ? { w: v.channelNormW!, b: v.channelNormB! } : null,
        ),
      );
      // SGLU: g = (a·W1ᵀ + b1) ⊙ (a·W2ᵀ + b2), both products in one pass.
      await gemm({
        label: "glu",
        w: lw.l1,
        w2: lw.l2,
        input: as,
        out: { buffer: g, stride: G },
        bias: v.l1Bias,
        bias2: v.l2Bias,
      });
      await gemm({
        label: "down_proj",
        w: lw.l3,
        input: { buffer: g, stride: G },
        out: xs,
        bias: v.l3Bias,
        add: true,
        parts,
      });
      this.#layers.push(...long);
      this.#shortLayers.push(...short);
    }
    this.#finalNorm = await this.#norm("final_norm", D, xs, as, w.finalNorm);
    const logitsOut = { buffer: this.#logits, stride: c.vocabSize };
    // The last position alone: the decode head's matrix-vector product on a copy of its row (the
    // GEMM would multiply a whole tile of tokens for one).
    this.#headLast = await matvecOps({
      m: { pipelines: m.pipelines, ctx: m.ctx, ctl: this.#one },
      res,
    }, {
      label: "head.last",
      w: w.head,
      input: { buffer: this.#lastRow, stride: D },
      out: logitsOut,
      rmsScale: false,
      add: false,
    }, 1);
    // "All positions": rows [r0, r0 + n) per pass, r0 given where a chunk gives its position.
    // At most `logitRows` tokens per pass: the default tile, untuned.
    this.tiles.set("head.all", GEMM_TILES[0]);
    this.#headAll = await gemmOps(t, {
      label: "head.all",
      w: w.head,
      input: as,
      out: logitsOut,
      inOff: (_n, r0) => r0 * D,
      tile: GEMM_TILES[0],
      parts,
    });
  }

  /**
   * Run `tokens` (at most `capacity`) of the sequence in `slot`, starting at `pos0`. Logits:
   * "last" → [V], "all" → [T, V], "none" → empty. The slot's state is advanced on the GPU. The
   * logits come back through a staging buffer from `take` (default: a new mappable one), read by
   * `read`.
   */
  async run(
    slot: number,
    pos0: number,
    tokens: Int32Array,
    logits: LogitsMode,
    read: (staging: GPUBuffer, bytes: number) => Promise<ArrayBuffer>,
    take: (bytes: number) => GPUBuffer = (bytes) =>
      this.#m.ctx.device.createBuffer({
        size: bytes,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      }),
  ): Promise<Float32Array> {
    const T = tokens.length;
    if (T === 0 || T > this.capacity) {
      throw new Error(`prefill chunk of ${T} tokens (capacity ${this.capacity})`);
    }
    const m = this.#m;
    const dev = m.ctx.device;
    const V = m.config.vocabSize;
    this.#tokHost.set(tokens);
    dev.queue.writeBuffer(this.#tokens, 0, this.#tokHost, 0, T);
    const main = [...this.#embed, ...this.#layersFor(T), this.#finalNorm!];
    // The chunk goes to the GPU in parts, each part's uniforms written just before it is encoded
    // (~14 dispatches per layer, 5-9 µs of encoding each on the H200's host): the first part is
    // the embedding and one layer, so the GPU starts at once; the last is submitted below with
    // the head.
    const bounds = this.#submissions(main.length);
    const write = (ops: Op[]) => {
      for (const s of ops) this.#res.writeUniform(s.params, s.words(T, pos0, slot));
    };
    for (let i = 0; i + 2 < bounds.length; i++) {
      const ops = main.slice(bounds[i], bounds[i + 1]);
      write(ops);
      const e = dev.createCommandEncoder();
      const p = e.beginComputePass();
      encodeOps(p, ops, T);
      p.end();
      dev.queue.submit([e.finish()]);
    }
    const tail = main.slice(bounds.at(-2)!);
    write(tail);
    const enc = dev.createCommandEncoder();
    const pass = enc.beginComputePass();
    encodeOps(pass, tail, T);
    let staging: GPUBuffer | null = null;
    let bytes = 0;
    if (logits === "last") {
      pass.end();
      const D = m.config.embedDim;
      enc.copyBufferToBuffer(this.#normed!, (T - 1) * D * 4, this.#lastRow, 0, D * 4);
      for (const s of this.#headLast) this.#res.writeUniform(s.params, s.words(1, pos0, slot));
      const head = enc.beginComputePass();
      encodeOps(head, this.#headLast, 1);
      head.end();
      bytes = V * 4;
      staging = take(bytes);
      enc.copyBufferToBuffer(this.#logits, 0, staging, 0, bytes);
      dev.queue.submit([enc.finish()]);
    } else if (logits === "all") {
      pass.end();
      dev.queue.submit([enc.finish()]);
      bytes = T * V * 4;
      staging = take(bytes);
      for (let r0 = 0; r0 < T; r0 += this.logitRows) {
        const n = Math.min(this.logitRows, T - r0);
        for (const s of this.#headAll) this.#res.writeUniform(s.params, s.words(n, r0, slot));
        const e2 = dev.createCommandEncoder();
        const p2 = e2.beginComputePass();
        encodeOps(p2, this.#headAll, n);
        p2.end();
        e2.copyBufferToBuffer(this.#logits, 0, staging, r0 * V * 4, n * V * 4);
        dev.queue.submit([e2.finish()]);
      }
    } else {
      pass.end();
      dev.queue.submit([enc.finish()]);
    }
    if (!staging) return new Float32Array(0);
    return new Float32Array(await read(staging, bytes));
  }

  /**
   * Where the main ops of a chunk are cut into submissions: the embedding and the first layer, then
   * the rest in `PREFILL_SUBMITS - 1` even parts (`[0, ..., count]`).
   */
  #submissions(count: number): number[] {
    const first = Math.min(
      count,
      this.#embed.length + this.#layers.length / this.#m.config.numLayers,
    );
    const bounds = [0, first];
    const rest = count - first, n = PREFILL_SUBMITS - 1;
    for (let i = 1; i <= n; i++) {
      const b = first + Math.ceil((rest * i) / n);
      if (b > bounds.at(-1)!) bounds.push(b);
    }
    return bounds;
  }

  /**
   * GPU time per kernel label of one prefill chunk (each dispatch in its own timestamped pass),
   * for benchmarks. The slot's state is advanced as by `run`.
   */
  async profile(
    slot: number,
    pos0: number,
    tokens: Int32Array,
  ): Promise<{ kernel: string; us: number; dispatches: number }[]> {
    const m = this.#m;
    const dev = m.ctx.device;
    const T = tokens.length;
    if (!dev.features.has("timestamp-query") || T === 0 || T > this.capacity) return [];
    this.#tokHost.set(tokens);
    dev.queue.writeBuffer(this.#tokens, 0, this.#tokHost, 0, T);
    const main = [...this.#embed, ...this.#layersFor(T), this.#finalNorm!];
    const sites = [...main, ...this.#headLast];
    // The head runs on one row (its input is not copied here: the time does not depend on it).
    const n = (i: number) => (i < main.length ? T : 1);
    sites.forEach((s, i) => this.#res.writeUniform(s.params, s.words(n(i), pos0, slot)));
    const ns = await timePasses(dev, sites.length, (pass, i) => encodeOps(pass, [sites[i]], n(i)));
    const sums = new Map<string, { us: number; n: number }>();
    sites.forEach((site, i) => {
      const e = sums.get(site.label) ?? { us: 0, n: 0 };
      e.us += ns[i] / 1000;
      e.n++;
      sums.set(site.label, e);
    });
    return [...sums].map(([kernel, e]) => ({ kernel, us: e.us, dispatches: e.n })).sort((a, b) =>
      b.us - a.us
    );
  }

  /** Free the prefill buffers. */
  destroy(): void {
    this.#res.destroy();
  }
}
