/**
 * The model on the GPU: weights, the state pool (one buffer per layer, `maxSlots` slots), the
 * activation buffers for up to `maxBatch` sequences, and the dispatch plans. A plan is the fixed
 * list of dispatches of one decode step, built once (pipelines and bind groups included) and
 * encoded again and again without any allocation.
 * @module
 */

import {
  layerDecay,
  layerDecayRate,
  type ModelConfig,
  stateKeyDim,
  stateLayerSize,
} from "../model/config.ts";
import type { TensorSource } from "../model/weights/source.ts";
import type { WeightQuantization } from "../model/quantize.ts";
import { TnlError } from "../errors.ts";
import type { GpuContext } from "./device.ts";
import {
  ARGMAX_BLOCK,
  CTL_WORDS,
  LAYOUT_DEFINES,
  MAX_LOGIT_BIAS,
  ROW,
  ROW_WORDS,
  SAMPLING_DEFINES,
  SAMPLING_WORDS,
} from "./layout.ts";
import { matvecTiling, matvecTilingDefines } from "./matvec_tiling.ts";
import { GpuResources } from "./resources.ts";
import { sampleDefines, sampleShape } from "./sample_code.ts";
import { type Defines, PipelineCache } from "./shaders.ts";
import {
  destroyWeights,
  type GpuMatrix,
  type GpuWeights,
  scaleEntries,
  uploadF32,
  uploadWeights,
} from "./weights.ts";

/** Options of the GPU model. */
export interface GpuModelOptions {
  /** Most sequences decoded in one step (default 64). */
  maxBatch?: number;
  /** State slots (resident sequences; default 64). */
  maxSlots?: number;
  /** Output ring capacity per sequence: the most steps per submission (default 128). */
  ring?: number;
  /** Override of the per-binding byte limit (tests use it to force split tensors). */
  maxBindingBytes?: number;
  /** Progress callback of the weight upload. */
  onTensor?: (name: string, bytes: number) => void;
  /** Matrix weights as stored (default) or int8 with per-row scales (src/model/quantize.ts). */
  quantize?: WeightQuantization;
}

/** One recorded dispatch: workgroups along y may depend on the batch size. */
export interface Dispatch {
  /** Kernel name, for timing. */
  readonly label: string;
  /** Pipeline. */
  readonly pipeline: GPUComputePipeline;
  /** Its bind group. */
  readonly bindGroup: GPUBindGroup;
  /** Workgroups along x. */
  readonly x: number;
  /** Workgroups along y for a batch of B sequences. */
  readonly y: (batch: number) => number;
}

/** Kind of input a matrix-vector dispatch reads. */
interface MatvecSpec {
  label: string;
  w: GpuMatrix;
  w2?: GpuMatrix;
  bias?: GPUBuffer;
  bias2?: GPUBuffer;
  input: { buffer: GPUBuffer; stride: number; off: number };
  gate?: { buffer: GPUBuffer; stride: number; off: number };
  out: { buffer: GPUBuffer; stride: number; off: number };
  rmsScale: boolean;
  add: boolean;
}

/** The model resident on a device. */
export class GpuModel {
  /** Model configuration. */
  readonly config: ModelConfig;
  /** Device context. */
  readonly ctx: GpuContext;
  /** Uploaded weights. */
  readonly weights: GpuWeights;
  /** Most sequences per step. */
  readonly maxBatch: number;
  /** State slots. */
  readonly maxSlots: number;
  /** Output ring capacity per sequence. */
  readonly ring: number;

  /** Pipeline cache. */
  readonly pipelines: PipelineCache;
  /** Control words ([0] = batch size). */
  readonly ctl: GPUBuffer;
  /** Per-sequence rows ([maxBatch, ROW_WORDS] u32). */
  readonly rows: GPUBuffer;
  /** [maxBatch, V] logits. */
  readonly logits: GPUBuffer;
  /** [maxBatch, ring] sampled tokens. */
  readonly ringBuffer: GPUBuffer;
  /** [maxBatch, SAMPLING_WORDS] sampling parameters. */
  readonly sampling: GPUBuffer;
  /** [maxBatch, MAX_LOGIT_BIAS, 2] logit-bias entries (token, f32 bits). */
  readonly bias: GPUBuffer;
  /** [maxSlots, V] u32 generated-token counts (presence and frequency penalties). */
  readonly counts: GPUBuffer;
  /** [maxSlots, ceil(V/32)] u32 bitsets of tokens seen (repetition penalty). */
  readonly seen: GPUBuffer;
  /** u32 words per slot of `seen`. */
  readonly seenWords: number;
  /** [maxBatch, argmaxBlocks, 2] u32: each block's arg-max (f32 bits, id), between the sampling stages. */
  readonly argmaxBest: GPUBuffer;
  /** Blocks of `ARGMAX_BLOCK` ids per row in the first sampling stage. */
  readonly argmaxBlocks: number;
  /** Per layer: [maxSlots, heads, dk, dv] f32 states. */
  readonly states: GPUBuffer[];
  /** One slot of the largest layer: the bounce buffer of slot-to-slot copies. */
  readonly slotScratch: GPUBuffer;
  /** Per layer: floats per slot. */
  readonly slotFloats: number[];
  readonly #x: GPUBuffer;
  readonly #a: GPUBuffer;
  readonly #qkvu: GPUBuffer;
  readonly #o: GPUBuffer;
  readonly #g: GPUBuffer;
  readonly #decay: GPUBuffer[];
  /** Per layer: [heads] decay rates (λ = exp(-rate)). */
  readonly rates: GPUBuffer[] = [];
  /** Buffers owned by the model (weights excluded). */
  readonly res: GpuResources;
  readonly #plans = new Map<number, Promise<Dispatch[]>>();

  private constructor(
    ctx: GpuContext,
    config: ModelConfig,
    weights: GpuWeights,
    o: Required<Omit<GpuModelOptions, "maxBindingBytes" | "onTensor" | "quantize">>,
  ) {
    this.ctx = ctx;
    this.config = config;
    this.weights = weights;
    this.maxBatch = o.maxBatch;
    this.maxSlots = o.maxSlots;
    this.ring = o.ring;

    this.pipelines = PipelineCache.for(ctx.device);
    const { embedDim: D, hiddenDim: H, gluDim: G, vocabSize: V } = config;
    const B = this.maxBatch;
    this.res = new GpuResources(ctx.device);
    const buf = (label: string, bytes: number) => this.res.storage(label, bytes);
    this.ctl = buf("ctl", CTL_WORDS * 4);
    this.rows = buf("rows", B * ROW_WORDS * 4);
    this.logits = buf("logits", B * V * 4);
    this.ringBuffer = buf("ring", B * this.ring * 4);
    this.sampling = buf("sampling", B * SAMPLING_WORDS * 4);
    this.bias = buf("bias", B * MAX_LOGIT_BIAS * 2 * 4);
    this.seenWords = Math.ceil(V / 32);
    this.counts = buf("counts", this.maxSlots * V * 4);
    this.seen = buf("seen", this.maxSlots * this.seenWords * 4);
    this.argmaxBlocks = Math.ceil(V / ARGMAX_BLOCK);
    this.argmaxBest = buf("argmax-best", B * this.argmaxBlocks * 2 * 4);
    this.#x = buf("x", B * D * 4);
    this.#a = buf("a", B * Math.max(D, H) * 4);
    this.#qkvu = buf("qkvu", B * 4 * H * 4);
    this.#o = buf("o", B * H * 4);
    this.#g = buf("g", B * G * 4);
    this.states = [];
    this.slotFloats = [];
    this.slotScratch = buf(
      "slot-scratch",
      Math.max(...Array.from({ length: config.numLayers }, (_, l) => stateLayerSize(config, l))) *
        4,
    );
    this.#decay = [];
    for (let l = 0; l < config.numLayers; l++) {
      const n = stateLayerSize(config, l);
      this.slotFloats.push(n);
      this.states.push(buf(`state.layer${l}`, this.maxSlots * n * 4));
      this.#decay.push(
        this.res.adopt(
          uploadF32(
            ctx.device,
            Float32Array.from(layerDecay(config.slopes, l, config.numLayers)),
            `decay${l}`,
          ),
        ),
      );
      this.rates.push(
        this.res.adopt(
          uploadF32(
            ctx.device,
            Float32Array.from(layerDecayRate(config.slopes, l, config.numLayers)),
            `rates${l}`,
          ),
        ),
      );
    }
  }

  /** Upload the weights and allocate the buffers. */
  static async create(
    ctx: GpuContext,
    config: ModelConfig,
    source: TensorSource,
    label: string,
    options: GpuModelOptions = {},
  ): Promise<GpuModel> {
    if (config.headDim % 8 !== 0) {
      throw new TnlError(
        "backend_unavailable",
        `the WebGPU kernels need a head width that is a multiple of 8 (this model has ${config.headDim}); use the CPU backend`,
      );
    }
    const weights = await uploadWeights(ctx.device, source, config, label, {
      maxBindingBytes: options.maxBindingBytes,
      onTensor: options.onTensor,
      quantize: options.quantize,
    });
    return new GpuModel(ctx, config, weights, {
      maxBatch: options.maxBatch ?? 64,
      maxSlots: options.maxSlots ?? 64,
      ring: options.ring ?? 128,
    });
  }

  /** Defines of the q/k activation. */
  #actDefines(): Defines {
    const key = {
      silu: "ACT_SILU",
      relu: "ACT_RELU",
      elu: "ACT_ELU",
      "1+elu": "ACT_1ELU",
      "2+elu": "ACT_2ELU",
      sigmoid: "ACT_SIGMOID",
      gelu: "ACT_GELU",
      none: "ACT_NONE",
    }[this.config.activation];
    return { [key]: true };
  }

  async #matvec(s: MatvecSpec, nb: number): Promise<Dispatch[]> {
    const out: Dispatch[] = [];
    const vec8 = s.w.cols % 8 === 0;
    const tiling = matvecTiling(
      s.w.rows,
      s.w.cols,
      nb,
      this.ctx.info.fallback,
      Boolean(s.w2),
      this.ctx.device.limits.maxComputeWorkgroupStorageSize,
      undefined,
      this.ctx.info.subgroupSize,
    );
    nb = tiling.nb;
    const x4 = vec8 && [s.input.stride, s.input.off, s.gate?.stride ?? 0, s.gate?.off ?? 0]
      .every((v) => v % 4 === 0);
    const defines: Defines = {
      ...LAYOUT_DEFINES,
      ...matvecTilingDefines(tiling, s.w.cols),
      X4: x4,
      VEC8: vec8,
      W_DTYPE: s.w.dtype,
      W2_DTYPE: s.w2?.dtype ?? "",
      GLU: Boolean(s.w2),
      GATE: Boolean(s.gate),
      RMS_SCALE: s.rmsScale,
      OUT_ADD: s.add,
      BIAS: Boolean(s.bias),
    };
    const pipeline = await this.pipelines.get("matvec", defines);
    for (let c = 0; c < s.w.chunks.length; c++) {
      const chunk = s.w.chunks[c];
      const params = this.res.uniform([
        chunk.rows,
        s.w.cols,
        chunk.rowBase,
        s.input.stride,
        s.input.off,
        s.gate?.stride ?? 0,
        s.gate?.off ?? 0,
        s.out.stride,
        s.out.off,
        0,
      ], `${s.label}.params`);
      const entries: [number, GPUBuffer][] = [
        [0, params],
        [1, this.ctl],
        [2, s.input.buffer],
        [4, s.out.buffer],
        [5, chunk.buffer],
      ];
      if (s.gate) entries.push([3, s.gate.buffer]);
      if (s.w2) entries.push([6, s.w2.chunks[c].buffer]);
      if (s.bias) entries.push([7, s.bias]);
      if (s.bias && s.w2) entries.push([8, s.bias2!]);
      entries.push(...scaleEntries(9, s.w), ...scaleEntries(10, s.w2));
      out.push({
        label: s.label,
        pipeline,
        bindGroup: this.res.bindGroup(pipeline, entries, s.label),
        x: Math.ceil(chunk.rows / tiling.rowsPerWorkgroup),
        y: (batch) => Math.ceil(batch / nb),
      });
    }
    return out;
  }

  async #norm(
    label: string,
    dim: number,
    input: { buffer: GPUBuffer; stride: number; off: number },
    output: { buffer: GPUBuffer; stride: number; off: number },
    ln: { w: GPUBuffer; b: GPUBuffer } | null,
  ): Promise<Dispatch> {
    const pipeline = await this.pipelines.get("norm", { LAYER_NORM: Boolean(ln) });
    const params = this.res.uniform([
      dim,
      input.stride,
      input.off,
      output.stride,
      output.off,
      1,
      0,
      0,
      0,
    ], `${label}.params`);
    const entries: [number, GPUBuffer][] = [[0, params], [1, this.ctl], [2, input.buffer], [
      3,
      output.buffer,
    ]];
    if (ln) entries.push([4, ln.w], [5, ln.b]);
    return {
      label,
      pipeline,
      bindGroup: this.res.bindGroup(pipeline, entries, label),
      x: 0,
      y: () => 1,
    };
  }

  /** The dispatches of one decode step for batches handled `nb` sequences per workgroup. */
  decodePlan(nb: number): Promise<Dispatch[]> {
    let p = this.#plans.get(nb);
    if (!p) {
      p = this.#buildDecodePlan(nb);
      this.#plans.set(nb, p);
      p.catch(() => this.#plans.delete(nb));
    }
    return p;
  }

  async #buildDecodePlan(nb: number): Promise<Dispatch[]> {
    const c = this.config;
    const { embedDim: D, hiddenDim: H, gluDim: G, vocabSize: V, numHeads: nh, headDim: hd } = c;
    const w = this.weights;
    const ln = c.normType === "layernorm";
    const plan: Dispatch[] = [];
    // Embedding gather (one dispatch per row chunk of the table).
    const embedPipe = await this.pipelines.get("embed", {
      ...LAYOUT_DEFINES,
      E_DTYPE: w.embed.dtype,
    });
    for (const chunk of w.embed.chunks) {
      const params = this.res.uniform([
        D,
        chunk.rowBase,
        chunk.rows,
        { f32: c.embedScale },
        ROW_WORDS,
        ROW.token,
        1,
        0,
      ], "embed.params");
      plan.push({
        label: "embed",
        pipeline: embedPipe,
        bindGroup: this.res.bindGroup(embedPipe, [
          [0, params],
          [1, this.ctl],
          [2, this.rows],
          [3, this.#x],
          [4, chunk.buffer],
          ...scaleEntries(5, w.embed),
        ], "embed"),
        x: 0,
        y: () => 1,
      });
    }
    const xIn = { buffer: this.#x, stride: D, off: 0 };
    const aIn = { buffer: this.#a, stride: D, off: 0 };
    for (let l = 0; l < c.numLayers; l++) {
      const lw = w.layers[l];
      const v = lw.vectors;
      if (ln) {
        plan.push(
          await this.#norm("token_norm", D, xIn, aIn, { w: v.tokenNormW!, b: v.tokenNormB! }),
        );
      }
      plan.push(
        ...await this.#matvec({
          label: "qkvu",
          w: lw.qkvu,
          bias: v.qkvuBias,
          input: ln ? aIn : xIn,
          out: { buffer: this.#qkvu, stride: 4 * H, off: 0 },
          rmsScale: !ln,
          add: false,
        }, nb),
      );
      const dk = stateKeyDim(c, l);
      const cb = hd % 32 === 0 ? 32 : hd % 16 === 0 ? 16 : 8;
      const attPipe = await this.pipelines.get("attention_decode", {
        ...LAYOUT_DEFINES,
        ...this.#actDefines(),
        LRPE: c.lrpe[l],
        CB: cb,
        MAX_DK: 2 * hd,
      });
      const attParams = this.res.uniform(
        [nh, hd, dk, H, this.slotFloats[l], c.lrpe[l] ? 1 : 0, 0],
        "attention.params",
      );
      const attEntries: [number, GPUBuffer][] = [
        [0, attParams],
        [1, this.ctl],
        [2, this.rows],
        [3, this.#qkvu],
        [4, this.states[l]],
        [5, this.#o],
        [6, this.#decay[l]],
      ];
      if (c.lrpe[l]) attEntries.push([7, v.theta!]);
      plan.push({
        label: "attention",
        pipeline: attPipe,
        bindGroup: this.res.bindGroup(attPipe, attEntries, "attention"),
        x: nh * (hd / cb),
        y: (b) => b,
      });
      const oIn = { buffer: this.#o, stride: H, off: 0 };
      if (ln) {
        plan.push(
          await this.#norm("mixer_norm", H, oIn, { buffer: this.#a, stride: H, off: 0 }, {
            w: v.mixerNormW!,
            b: v.mixerNormB!,
          }),
        );
      }
      plan.push(
        ...await this.#matvec({
          label: "out_proj",
          w: lw.out,
          bias: v.outBias,
          input: ln ? { buffer: this.#a, stride: H, off: 0 } : oIn,
          gate: { buffer: this.#qkvu, stride: 4 * H, off: 3 * H },
          out: { buffer: this.#x, stride: D, off: 0 },
          rmsScale: !ln,
          add: true,
        }, nb),
      );
      if (ln) {
        plan.push(
          await this.#norm("channel_norm", D, xIn, aIn, { w: v.channelNormW!, b: v.channelNormB! }),
        );
      }
      plan.push(
        ...await this.#matvec({
          label: "glu",
          w: lw.l1,
          w2: lw.l2,
          bias: v.l1Bias,
          bias2: v.l2Bias,
          input: ln ? aIn : xIn,
          out: { buffer: this.#g, stride: G, off: 0 },
          rmsScale: !ln,
          add: false,
        }, nb),
      );
      plan.push(
        ...await this.#matvec({
          label: "down_proj",
          w: lw.l3,
          bias: v.l3Bias,
          input: { buffer: this.#g, stride: G, off: 0 },
          out: { buffer: this.#x, stride: D, off: 0 },
          rmsScale: false,
          add: true,
        }, nb),
      );
    }
    if (ln) plan.push(await this.#norm("final_norm", D, xIn, aIn, w.finalNorm));
    plan.push(
      ...await this.#matvec({
        label: "head",
        w: w.head,
        input: ln ? aIn : xIn,
        out: { buffer: this.logits, stride: V, off: 0 },
        rmsScale: !ln,
        add: false,
      }, nb),
    );
    return plan;
  }

  /**
   * The sampling dispatches: bias, penalties and block arg-maxes over the whole vocabulary
   * (`sample_prep`, wide), then per sequence the next token, ring append, counters, stop flags.
   */
  async samplePlan(): Promise<Dispatch[]> {
    const defines = { ...LAYOUT_DEFINES, ...SAMPLING_DEFINES };
    const [prep, pipe] = await Promise.all([
      this.pipelines.get("sample_prep", defines),
      this.pipelines.get("sample", {
        ...defines,
        ...sampleDefines(sampleShape(this.ctx.info.limits)),
      }),
    ]);
    const params = this.res.uniform(
      [
        this.config.vocabSize,
        this.ring,
        this.config.eosTokenId,
        MAX_LOGIT_BIAS,
        this.seenWords,
        this.argmaxBlocks,
      ],
      "sample.params",
    );
    const common: [number, GPUBuffer][] = [
      [0, params],
      [1, this.ctl],
      [2, this.rows],
      [3, this.logits],
      [5, this.sampling],
      [7, this.counts],
      [8, this.seen],
      [9, this.argmaxBest],
    ];
    return [{
      label: "sample",
      pipeline: prep,
      bindGroup: this.res.bindGroup(prep, [...common, [6, this.bias]], "sample_prep"),
      x: this.argmaxBlocks,
      y: (batch) => batch,
    }, {
      label: "sample",
      pipeline: pipe,
      bindGroup: this.res.bindGroup(pipe, [...common, [4, this.ringBuffer]], "sample"),
      x: 0,
      y: () => 1,
    }];
  }

  /** Encode dispatches for a batch of `batch` sequences into an open compute pass. */
  static encode(
    pass: GPUComputePassEncoder,
    plan: readonly Dispatch[],
    batch: number,
    last: { pipeline: GPUComputePipeline | null },
  ): void {
    for (const d of plan) {
      if (last.pipeline !== d.pipeline) {
        pass.setPipeline(d.pipeline);
        last.pipeline = d.pipeline;
      }
      pass.setBindGroup(0, d.bindGroup);
      // x = 0 marks "one workgroup per sequence along x".
      if (d.x === 0) pass.dispatchWorkgroups(batch, d.y(batch));
      else pass.dispatchWorkgroups(d.x, d.y(batch));
    }
  }

  /** Free every buffer. */
  destroy(): void {
    destroyWeights(this.weights);
    this.res.destroy();
  }
}
