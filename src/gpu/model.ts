/**
 * The model on the GPU: weights, the state pool (one buffer per layer, `maxSlots` slots), the
 * activation buffers for up to `maxBatch` sequences, and the dispatch plans. A plan is the fixed
 * list of ops of one decode step (`./ops/`), built once (pipelines and bind groups included) and
 * encoded again and again (`encodeOps`) without any allocation.
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
  MAX_LOGIT_BIAS,
  ROW,
  ROW_WORDS,
  SAMPLING_WORDS,
} from "./layout.ts";
import { GpuResources } from "./resources.ts";
import { PipelineCache } from "./shaders.ts";
import { destroyWeights, type GpuWeights, uploadF32, uploadWeights } from "./weights.ts";
import {
  activationDefine,
  attentionDecodeOp,
  embedOps,
  matvecOps,
  normOp,
  type NormSpec,
  type Op,
  type Rows,
  rowsRolloverOp,
  sampleOps,
} from "./ops/mod.ts";

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
  /** The rows as a sampled decode call left them (copied in its submission; `rolloverOp`). */
  readonly rowsAtEnd: GPUBuffer;
  /** Per row of a continued call: 0 when the caller left it out (`rolloverOp`), else 1. */
  readonly rowsKeep: GPUBuffer;
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
  readonly #plans = new Map<number, Promise<Op[]>>();

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
    this.rowsAtEnd = buf("rows-at-end", B * ROW_WORDS * 4);
    this.rowsKeep = buf("rows-keep", B * 4);
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

  /** The dispatches of one decode step for batches handled `nb` sequences per workgroup. */
  decodePlan(nb: number): Promise<Op[]> {
    let p = this.#plans.get(nb);
    if (!p) {
      p = this.#buildDecodePlan(nb);
      this.#plans.set(nb, p);
      p.catch(() => this.#plans.delete(nb));
    }
    return p;
  }

  async #buildDecodePlan(nb: number): Promise<Op[]> {
    const c = this.config;
    const { embedDim: D, hiddenDim: H, gluDim: G, vocabSize: V, numHeads: nh, headDim: hd } = c;
    const w = this.weights;
    const ln = c.normType === "layernorm";
    const t = { m: this, res: this.res };
    const activation = activationDefine(c.activation);
    const plan: Op[] = await embedOps(t, {
      table: w.embed,
      scale: c.embedScale,
      x: this.#x,
      tokens: { buffer: this.rows, stride: ROW_WORDS, off: ROW.token },
      rows: "ctl",
    });
    const xIn = { buffer: this.#x, stride: D };
    const aIn = { buffer: this.#a, stride: D };
    const norm = (label: string, dim: number, input: Rows, output: Rows, lnw: NormSpec["ln"]) =>
      normOp(t, { label, dim, input, output, ln: lnw, rows: "ctl" });
    for (let l = 0; l < c.numLayers; l++) {
      const lw = w.layers[l];
      const v = lw.vectors;
      if (ln) {
        plan.push(await norm("token_norm", D, xIn, aIn, { w: v.tokenNormW!, b: v.tokenNormB! }));
      }
      plan.push(
        ...await matvecOps(t, {
          label: "qkvu",
          w: lw.qkvu,
          bias: v.qkvuBias,
          input: ln ? aIn : xIn,
          out: { buffer: this.#qkvu, stride: 4 * H },
          rmsScale: !ln,
          add: false,
        }, nb),
      );
      plan.push(
        await attentionDecodeOp(t, {
          heads: nh,
          headDim: hd,
          dk: stateKeyDim(c, l),
          hidden: H,
          slotFloats: this.slotFloats[l],
          theta: c.lrpe[l] ? v.theta! : undefined,
          activation,
          rows: this.rows,
          qkvu: this.#qkvu,
          state: this.states[l],
          o: this.#o,
          decay: this.#decay[l],
        }, nb),
      );
      const oIn = { buffer: this.#o, stride: H };
      const hA = { buffer: this.#a, stride: H };
      if (ln) {
        plan.push(await norm("mixer_norm", H, oIn, hA, { w: v.mixerNormW!, b: v.mixerNormB! }));
      }
      plan.push(
        ...await matvecOps(t, {
          label: "out_proj",
          w: lw.out,
          bias: v.outBias,
          input: ln ? hA : oIn,
          gate: { buffer: this.#qkvu, stride: 4 * H, off: 3 * H },
          out: xIn,
          rmsScale: !ln,
          add: true,
        }, nb),
      );
      if (ln) {
        plan.push(
          await norm("channel_norm", D, xIn, aIn, { w: v.channelNormW!, b: v.channelNormB! }),
        );
      }
      plan.push(
        ...await matvecOps(t, {
          label: "glu",
          w: lw.l1,
          w2: lw.l2,
          bias: v.l1Bias,
          bias2: v.l2Bias,
          input: ln ? aIn : xIn,
          out: { buffer: this.#g, stride: G },
          rmsScale: !ln,
          add: false,
        }, nb),
      );
      plan.push(
        ...await matvecOps(t, {
          label: "down_proj",
          w: lw.l3,
          bias: v.l3Bias,
          input: { buffer: this.#g, stride: G },
          out: xIn,
          rmsScale: false,
          add: true,
        }, nb),
      );
    }
    if (ln) plan.push(await norm("final_norm", D, xIn, aIn, w.finalNorm));
    plan.push(
      ...await matvecOps(t, {
        label: "head",
        w: w.head,
        input: ln ? aIn : xIn,
        out: { buffer: this.logits, stride: V },
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
  samplePlan(): Promise<Op[]> {
    return sampleOps({ m: this, res: this.res }, {
      vocab: this.config.vocabSize,
      ring: this.ring,
      eos: this.config.eosTokenId,
      maxBias: MAX_LOGIT_BIAS,
      seenWords: this.seenWords,
      blocks: this.argmaxBlocks,
      rows: this.rows,
      logits: this.logits,
      ringBuffer: this.ringBuffer,
      sampling: this.sampling,
      bias: this.bias,
      counts: this.counts,
      seen: this.seen,
      best: this.argmaxBest,
    });
  }

  /**
   * The dispatch that starts a sampled decode call continuing the one before on the device: its
   * rows from `rowsAtEnd`, budgets renewed for `ctl[1]` steps (`wgsl/rows_rollover.wgsl`).
   */
  rolloverOp(): Promise<Op> {
    return rowsRolloverOp({ m: this, res: this.res }, {
      ring: this.ring,
      eos: this.config.eosTokenId,
      ringBuffer: this.ringBuffer,
      rows: this.rows,
      prev: this.rowsAtEnd,
      keep: this.rowsKeep,
    });
  }

  /** Free every buffer. */
  destroy(): void {
    destroyWeights(this.weights);
    this.res.destroy();
  }
}
