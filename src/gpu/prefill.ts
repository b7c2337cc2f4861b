/**
 * Prefill on the GPU: a prompt is processed in chunks of up to `capacity` tokens (a multiple of the
 * Lightning block), each chunk as one submission: embedding, then per layer norm → GEMM(qkvu) →
 * Lightning Attention (prep, block KV, scan, block output) → gated norm → GEMM(out, +residual) →
 * norm → GEMM(SGLU) → GEMM(down, +residual), then the final norm and the head on the rows asked for.
 * Bind groups are built once; only the small uniform blocks are rewritten per chunk.
 * @module
 */

import { timePasses } from "./timing.ts";
import type { LogitsMode } from "../engine/backend.ts";
import { stateKeyDim } from "../model/config.ts";
import type { GpuModel } from "./model.ts";
import { GpuResources, type UniformWord } from "./resources.ts";
import type { Defines } from "./shaders.ts";
import { type GpuMatrix, scaleEntries } from "./weights.ts";
import {
  GEMM_TILES,
  gemmGroups,
  type GemmTile,
  gemmTileDefines,
  gemmVectorized,
} from "./gemm_tiling.ts";
import { gemmTileFor } from "./gemm_tune.ts";

/**
 * Tokens per prefill submission unless asked otherwise: on the H200 at 385M (`bench:gpu`, 2026-12-04)
 * 2,048-token chunks prefilled at 15.7k tok/s, 512-token ones at 7.3k (the GEMMs fill the GPU
 * only with enough rows).
 */
const DEFAULT_CAPACITY = 2048;

/** Tokens per Lightning block on the GPU. */
function blockSize(headDim: number): number {
  return headDim <= 128 ? 32 : 16;
}

/** One dispatch site: pipeline, bind group, its uniform block and how to size it. */
interface Site {
  label: string;
  pipeline: GPUComputePipeline;
  bindGroup: GPUBindGroup;
  params: GPUBuffer;
  /** Uniform words for a chunk of T tokens at pos0 in `slot`. */
  words: (T: number, pos0: number, slot: number) => UniformWord[];
  /** Workgroups for a chunk of T tokens. */
  groups: (T: number) => [number, number, number];
}

/** The prefill machinery of one model. */
export class GpuPrefill {
  /** Most tokens per chunk. */
  readonly capacity: number;
  /** Rows of logits computed per head pass when all positions are asked for. */
  readonly logitRows: number;
  /** The GEMM tile of each projection label (tuned at build, see `src/gpu/gemm_tune.ts`). */
  readonly tiles: Map<string, GemmTile> = new Map();
  readonly #m: GpuModel;
  readonly #res: GpuResources;
  readonly #tokens: GPUBuffer;
  readonly #tokHost: Uint32Array<ArrayBuffer>;
  readonly #logits: GPUBuffer;
  #layers: Site[] = [];
  #headLast: Site[] = [];
  #headAll: Site[] = [];
  #embed: Site[] = [];
  #finalNorm: Site | null = null;

  private constructor(m: GpuModel, capacity: number, logitRows: number) {
    this.#m = m;
    this.capacity = capacity;
    this.logitRows = logitRows;
    this.#res = new GpuResources(m.ctx.device);
    this.#tokens = this.#res.storage("prefill.tokens", capacity * 4);
    this.#tokHost = new Uint32Array(capacity);
    this.#logits = this.#res.storage("prefill.logits", logitRows * m.config.vocabSize * 4);
  }

  /** Chunk capacity that keeps every prefill buffer within the binding limit. */
  static chooseCapacity(m: GpuModel, wanted = DEFAULT_CAPACITY): number {
    const c = m.config;
    const blk = blockSize(c.headDim);
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
  static async create(m: GpuModel, wanted?: number): Promise<GpuPrefill> {
    const capacity = GpuPrefill.chooseCapacity(m, wanted);
    const V = m.config.vocabSize;
    const limit = m.ctx.device.limits.maxStorageBufferBindingSize;
    const logitRows = Math.max(1, Math.min(capacity, 256, Math.floor(limit / (V * 4))));
    const p = new GpuPrefill(m, capacity, logitRows);
    await p.#build();
    return p;
  }

  async #site(
    label: string,
    kernel: string,
    defines: Defines,
    entries: [number, GPUBuffer][],
    words: Site["words"],
    groups: Site["groups"],
  ): Promise<Site> {
    const pipeline = await this.#m.pipelines.get(kernel, defines);
    const params = this.#res.uniform(words(1, 0, 0), `${label}.params`);
    const bindGroup = this.#res.bindGroup(pipeline, [[0, params], ...entries], label);
    return { label, pipeline, bindGroup, params, words, groups };
  }

  async #gemm(
    label: string,
    w: GpuMatrix,
    input: { buffer: GPUBuffer; stride: number },
    out: { buffer: GPUBuffer; stride: number },
    opts: {
      bias?: GPUBuffer;
      add?: boolean;
      mul?: boolean;
      inOff?: (T: number) => number;
      tokens?: (T: number) => number;
      /** The tile (default: tuned for this weight shape at the chunk capacity). */
      tile?: GemmTile;
    } = {},
  ): Promise<Site[]> {
    const tile = opts.tile ?? await gemmTileFor(this.#m.ctx, this.#m.pipelines, {
      rows: w.chunks[0].rows,
      cols: w.cols,
      dtype: w.dtype,
      tokens: this.capacity,
    });
    this.tiles.set(label, tile);
    const defines: Defines = {
      ...gemmTileDefines(tile, gemmVectorized(w.cols, input.stride)),
      W_DTYPE: w.dtype,
      BIAS: Boolean(opts.bias),
      OUT_ADD: Boolean(opts.add),
      OUT_MUL: Boolean(opts.mul),
    };
    const sites: Site[] = [];
    for (let c = 0; c < w.chunks.length; c++) {
      const chunk = w.chunks[c];
      const entries: [number, GPUBuffer][] = [[2, input.buffer], [4, out.buffer], [
        5,
        chunk.buffer,
      ]];
      if (opts.bias) entries.push([7, opts.bias]);
      entries.push(...scaleEntries(9, w));
      const tokens = opts.tokens ?? ((T: number) => T);
      sites.push(
        await this.#site(
          label,
          "gemm",
          defines,
          entries,
          (
            T,
          ) => [
            chunk.rows,
            w.cols,
            chunk.rowBase,
            tokens(T),
            input.stride,
            opts.inOff?.(T) ?? 0,
            out.stride,
            0,
          ],
          (T) => gemmGroups(tile, chunk.rows, tokens(T)),
        ),
      );
    }
    return sites;
  }

  async #norm(
    label: string,
    dim: number,
    input: { buffer: GPUBuffer; stride: number },
    out: { buffer: GPUBuffer; stride: number },
    ln: { w: GPUBuffer; b: GPUBuffer } | null,
    gate?: { buffer: GPUBuffer; stride: number; off: number },
  ): Promise<Site> {
    const entries: [number, GPUBuffer][] = [[1, this.#m.ctl], [2, input.buffer], [3, out.buffer]];
    if (ln) entries.push([4, ln.w], [5, ln.b]);
    if (gate) entries.push([6, gate.buffer]);
    return await this.#site(
      label,
      "norm",
      { LAYER_NORM: Boolean(ln), GATE: Boolean(gate) },
      entries,
      (T) => [dim, input.stride, 0, out.stride, 0, 0, T, gate?.stride ?? 0, gate?.off ?? 0],
      (T) => [Math.min(T, 65535), Math.ceil(T / 65535), 1],
    );
  }

  async #build(): Promise<void> {
    const m = this.#m;
    const c = m.config;
    const { embedDim: D, hiddenDim: H, gluDim: G, numHeads: nh, headDim: hd, vocabSize: V } = c;
    const Tc = this.capacity;
    const blk = blockSize(hd);
    const res = this.#res;
    const x = res.storage("prefill.x", Tc * D * 4);
    const a = res.storage("prefill.a", Tc * Math.max(D, H) * 4);
    const qkvu = res.storage("prefill.qkvu", Tc * 4 * H * 4);
    const o = res.storage("prefill.o", Tc * H * 4);
    const g = res.storage("prefill.g", Tc * G * 4);
    const qp = res.storage("prefill.qp", Tc * nh * 2 * hd * 4);
    const kp = res.storage("prefill.kp", Tc * nh * 2 * hd * 4);
    const kvs = res.storage("prefill.kvs", Math.ceil(Tc / blk) * nh * 2 * hd * hd * 4);
    const ln = c.normType === "layernorm";
    const w = m.weights;

    for (const chunk of w.embed.chunks) {
      this.#embed.push(
        await this.#site(
          "embed",
          "embed",
          { E_DTYPE: w.embed.dtype },
          [[1, m.ctl], [2, this.#tokens], [3, x], [4, chunk.buffer], ...scaleEntries(5, w.embed)],
          (T) => [D, chunk.rowBase, chunk.rows, { f32: c.embedScale }, 1, 0, 0, T],
          (T) => [Math.min(T, 65535), Math.ceil(T / 65535), 1],
        ),
      );
    }
    const act = {
      silu: "ACT_SILU",
      relu: "ACT_RELU",
      elu: "ACT_ELU",
      "1+elu": "ACT_1ELU",
      "2+elu": "ACT_2ELU",
      sigmoid: "ACT_SIGMOID",
      gelu: "ACT_GELU",
      none: "ACT_NONE",
    }[c.activation];
    const xs = { buffer: x, stride: D }, as = { buffer: a, stride: D };
    for (let l = 0; l < c.numLayers; l++) {
      const lw = w.layers[l];
      const v = lw.vectors;
      const dk = stateKeyDim(c, l);
      const slotFloats = m.slotFloats[l];
      const sites: Site[] = [];
      sites.push(
        await this.#norm(
          "token_norm",
          D,
          xs,
          as,
          ln ? { w: v.tokenNormW!, b: v.tokenNormB! } : null,
        ),
      );
      sites.push(
        ...await this.#gemm("qkvu", lw.qkvu, as, { buffer: qkvu, stride: 4 * H }, {
          bias: v.qkvuBias,
        }),
      );
      const lDefines: Defines = {
        [act]: true,
        LRPE: c.lrpe[l],
        BLK: blk,
        BLK2_4: (blk * blk) / 4,
      };
      const lwords = (T: number, pos0: number, slot: number): UniformWord[] => [
        T,
        nh,
        hd,
        dk,
        H,
        pos0,
        slot * slotFloats,
        Math.ceil(T / blk),
        c.lrpe[l] ? 1 : 0,
      ];
      const rates = m.rates[l];
      const prepEntries: [number, GPUBuffer][] = [[2, qkvu], [3, qp], [4, kp]];
      if (c.lrpe[l]) prepEntries.push([5, v.theta!]);
      sites.push(
        await this.#site(
          "lightning.prep",
          "lightning",
          { ...lDefines, STAGE_PREP: true },
          prepEntries,
          lwords,
          (T) => {
            const n = Math.ceil((T * H) / 256);
            return [Math.min(n, 65535), Math.ceil(n / 65535), 1];
          },
        ),
      );
      sites.push(
        await this.#site(
          "lightning.kv",
          "lightning",
          { ...lDefines, STAGE_KV: true },
          [[1, rates], [2, qkvu], [4, kp], [6, kvs]],
          lwords,
          (T) => [Math.ceil(dk / 64), Math.ceil(T / blk), nh],
        ),
      );
      sites.push(
        await this.#site(
          "lightning.scan",
          "lightning",
          { ...lDefines, STAGE_SCAN: true },
          [[1, rates], [6, kvs], [7, m.states[l]]],
          lwords,
          () => {
            const n = Math.ceil((nh * dk * hd) / 256);
            return [Math.min(n, 65535), Math.ceil(n / 65535), 1];
          },
        ),
      );
      sites.push(
        await this.#site(
          "lightning.out",
          "lightning",
          { ...lDefines, STAGE_OUT: true },
          [[1, rates], [2, qkvu], [3, qp], [4, kp], [6, kvs], [8, o]],
          lwords,
          (T) => [Math.ceil(T / blk), nh, 1],
        ),
      );
      sites.push(
        await this.#norm(
          "mixer_norm",
          H,
          { buffer: o, stride: H },
          { buffer: a, stride: H },
          ln ? { w: v.mixerNormW!, b: v.mixerNormB! } : null,
          { buffer: qkvu, stride: 4 * H, off: 3 * H },
        ),
      );
      sites.push(
        ...await this.#gemm("out_proj", lw.out, { buffer: a, stride: H }, xs, {
          bias: v.outBias,
          add: true,
        }),
      );
      sites.push(
        await this.#norm(
          "channel_norm",
          D,
          xs,
          as,
          ln ? { w: v.channelNormW!, b: v.channelNormB! } : null,
        ),
      );
      sites.push(
        // SGLU: g = a·W1ᵀ, then g ⊙= a·W2ᵀ.
        ...await this.#gemm("glu", lw.l1, as, { buffer: g, stride: G }, { bias: v.l1Bias }),
        ...await this.#gemm("glu", lw.l2, as, { buffer: g, stride: G }, {
          bias: v.l2Bias,
          mul: true,
        }),
      );
      sites.push(
        ...await this.#gemm("down_proj", lw.l3, { buffer: g, stride: G }, xs, {
          bias: v.l3Bias,
          add: true,
        }),
      );
      this.#layers.push(...sites);
    }
    this.#finalNorm = await this.#norm("final_norm", D, xs, as, w.finalNorm);
    const logitsOut = { buffer: this.#logits, stride: V };
    this.#headLast = await this.#gemm("head.last", w.head, as, logitsOut, {
      inOff: (T) => (T - 1) * D,
      tokens: () => 1,
      tile: GEMM_TILES[0],
    });
    // "All positions": rows [r0, r0 + n) per pass; the words are rewritten per pass (see #runHead).
    this.#headAll = await this.#gemm("head.all", w.head, as, logitsOut, { tile: GEMM_TILES[0] });
  }

  #encode(pass: GPUComputePassEncoder, sites: readonly Site[], T: number): void {
    let last: GPUComputePipeline | null = null;
    for (const s of sites) {
      if (s.pipeline !== last) {
        pass.setPipeline(s.pipeline);
        last = s.pipeline;
      }
      pass.setBindGroup(0, s.bindGroup);
      const [gx, gy, gz] = s.groups(T);
      pass.dispatchWorkgroups(gx, gy, gz);
    }
  }

  /**
   * Run `tokens` (at most `capacity`) of the sequence in `slot`, starting at `pos0`. Logits:
   * "last" → [V], "all" → [T, V], "none" → empty. The slot's state is advanced on the GPU.
   */
  async run(
    slot: number,
    pos0: number,
    tokens: Int32Array,
    logits: LogitsMode,
    read: (staging: GPUBuffer, bytes: number) => Promise<ArrayBuffer>,
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
    const main = [...this.#embed, ...this.#layers, this.#finalNorm!];
    for (const s of main) this.#res.writeUniform(s.params, s.words(T, pos0, slot));
    const enc = dev.createCommandEncoder();
    const pass = enc.beginComputePass();
    this.#encode(pass, main, T);
    let staging: GPUBuffer | null = null;
    let bytes = 0;
    if (logits === "last") {
      for (const s of this.#headLast) this.#res.writeUniform(s.params, s.words(T, pos0, slot));
      this.#encode(pass, this.#headLast, T);
      pass.end();
      bytes = V * 4;
      staging = dev.createBuffer({
        size: bytes,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      enc.copyBufferToBuffer(this.#logits, 0, staging, 0, bytes);
      dev.queue.submit([enc.finish()]);
    } else if (logits === "all") {
      pass.end();
      dev.queue.submit([enc.finish()]);
      bytes = T * V * 4;
      staging = dev.createBuffer({
        size: bytes,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      for (let r0 = 0; r0 < T; r0 += this.logitRows) {
        const n = Math.min(this.logitRows, T - r0);
        for (const s of this.#headAll) {
          const words = s.words(n, pos0, slot);
          words[5] = r0 * m.config.embedDim; // in_off: first row of this pass
          this.#res.writeUniform(s.params, words);
        }
        const e2 = dev.createCommandEncoder();
        const p2 = e2.beginComputePass();
        this.#encode(p2, this.#headAll, n);
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
    const sites = [...this.#embed, ...this.#layers, this.#finalNorm!, ...this.#headLast];
    for (const s of sites) this.#res.writeUniform(s.params, s.words(T, pos0, slot));
    const ns = await timePasses(dev, sites.length, (pass, i) => this.#encode(pass, [sites[i]], T));
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
