/**
 * The CPU reference forward pass of TransNormerLLM: the numerical spec of this project.
 *
 * ```
 * x = embed_scale · E[ids]
 * per layer: a = norm(x); q,k,v,u = split4(a·Wqkvuᵀ); q,k = act(q), act(k); LRPE where listed
 *            o = decayed linear attention (per head);  x += (u ⊙ norm_H(o))·Woutᵀ
 *            a = norm(x);  x += ((a·W1ᵀ) ⊙ (a·W2ᵀ))·W3ᵀ
 * logits = norm(x)·Eᵀ
 * ```
 * Prefill runs Lightning Attention blocks; decode runs the recurrence, batched over sequences.
 * @module
 */

import { InputError } from "../errors.ts";
import { layerDecayRate, type ModelConfig, stateKeyDim } from "../model/config.ts";
import type { ModelState } from "../model/state.ts";
import { decayPowers, lightningPrefill, recurrentStep } from "./attention.ts";
import { activate, layerNorm, linear, simpleRmsNorm } from "./kernels.ts";
import type { CpuWeights } from "./weights.ts";

/** Which logits to return. */
export type CpuLogitsMode = "all" | "last" | "none";

/** Options of the CPU model. */
export interface CpuModelOptions {
  /** Lightning Attention block size (any size gives the same numbers up to rounding). Default 64. */
  block?: number;
  /** Tokens processed per pass of a long prefill (bounds scratch memory). Default 256. */
  chunk?: number;
}

/** The CPU model: weights plus reusable scratch buffers. Not re-entrant (one call at a time). */
export class CpuModel {
  /** The model configuration. */
  readonly config: ModelConfig;
  /** Lightning Attention block size. */
  readonly block: number;
  /** Prefill chunk size. */
  readonly chunk: number;
  readonly #w: CpuWeights;
  readonly #pw: Float64Array[];
  readonly #lambda: number[][];
  #rows = 0;
  #x = new Float32Array(0);
  #a = new Float32Array(0);
  #qkvu = new Float32Array(0);
  #q = new Float32Array(0);
  #k = new Float32Array(0);
  #o = new Float32Array(0);
  #g1 = new Float32Array(0);
  #g2 = new Float32Array(0);
  #acc: Float64Array;

  /** Build from f32 weights. */
  constructor(config: ModelConfig, weights: CpuWeights, options: CpuModelOptions = {}) {
    this.config = config;
    this.#w = weights;
    this.block = options.block ?? 64;
    this.chunk = options.chunk ?? 256;
    if (!(this.block >= 1 && this.chunk >= 1)) throw new InputError("block", "must be at least 1");
    this.#pw = [];
    this.#lambda = [];
    for (let l = 0; l < config.numLayers; l++) {
      const rates = layerDecayRate(config.slopes, l, config.numLayers);
      this.#lambda.push(rates.map((r) => Math.exp(-r)));
      for (const r of rates) this.#pw.push(decayPowers(r, this.block));
    }
    this.#acc = new Float64Array(config.headDim);
  }

  #ensureRows(rows: number): void {
    if (rows <= this.#rows) return;
    const { embedDim: D, hiddenDim: H, gluDim: G, headDim: hd } = this.config;
    this.#rows = rows;
    this.#x = new Float32Array(rows * D);
    this.#a = new Float32Array(rows * Math.max(D, H));
    this.#qkvu = new Float32Array(rows * 4 * H);
    this.#q = new Float32Array(rows * H * 2);
    this.#k = new Float32Array(rows * H * 2);
    this.#o = new Float32Array(rows * Math.max(H, D));
    this.#g1 = new Float32Array(rows * Math.max(G, D));
    this.#g2 = new Float32Array(rows * G);
    this.#acc = new Float64Array(Math.max(hd, this.#acc.length));
  }

  /** Check token ids against the vocabulary. */
  checkTokens(tokens: ArrayLike<number>, field = "tokens"): void {
    const V = this.config.vocabSize;
    for (let i = 0; i < tokens.length; i++) {
      const t = tokens[i];
      if (!Number.isInteger(t) || t < 0 || t >= V) {
        throw new InputError(field, `token ${t} at index ${i} is outside the vocabulary [0, ${V})`);
      }
    }
  }

  /**
   * Run `tokens` of one sequence, advancing `state` in place; returns logits per `mode`
   * ([T, V], [V], or an empty array).
   */
  forward(state: ModelState, tokens: ArrayLike<number>, mode: CpuLogitsMode): Float32Array {
    const T = tokens.length;
    if (T === 0) throw new InputError("tokens", "must not be empty");
    this.checkTokens(tokens);
    const V = this.config.vocabSize;
    const out = new Float32Array(mode === "all" ? T * V : mode === "last" ? V : 0);
    for (let c = 0; c < T; c += this.chunk) {
      const n = Math.min(this.chunk, T - c);
      const ids = Array.from({ length: n }, (_, i) => tokens[c + i]);
      this.#ensureRows(n);
      this.#embed(ids);
      const pos0 = state.position;
      this.#layers(n, (l, h, dk, q, k) => {
        const { headDim: hd, hiddenDim: H } = this.config;
        lightningPrefill(
          state.layers[l],
          h * dk * hd,
          dk,
          hd,
          n,
          this.block,
          this.#pw[l * this.config.numHeads + h],
          q,
          h * n * dk,
          k,
          h * n * dk,
          dk,
          this.#qkvu,
          2 * H + h * hd,
          4 * H,
          this.#o,
          h * hd,
          H,
          this.#acc,
        );
      }, (t) => pos0 + t);
      state.position += n;
      if (mode === "all") this.#head(0, n, out, c * V);
      else if (mode === "last" && c + n === T) this.#head(n - 1, 1, out, 0);
    }
    return out;
  }

  /** One token for each of `states` (batched decode); returns [B, V] logits. */
  decode(states: readonly ModelState[], tokens: ArrayLike<number>): Float32Array {
    const B = states.length;
    if (B === 0 || tokens.length !== B) {
      throw new InputError("tokens", `expected one token per state (${B}), got ${tokens.length}`);
    }
    this.checkTokens(tokens);
    this.#ensureRows(B);
    this.#embed(Array.from(tokens));
    const { headDim: hd, hiddenDim: H } = this.config;
    this.#layers(B, (l, h, dk, q, k) => {
      const lambda = this.#lambda[l][h];
      for (let b = 0; b < B; b++) {
        recurrentStep(
          states[b].layers[l],
          h * dk * hd,
          dk,
          hd,
          lambda,
          q,
          (h * B + b) * dk,
          k,
          (h * B + b) * dk,
          this.#qkvu,
          b * 4 * H + 2 * H + h * hd,
          this.#o,
          b * H + h * hd,
          this.#acc,
        );
      }
    }, (b) => states[b].position);
    for (const s of states) s.position++;
    const out = new Float32Array(B * this.config.vocabSize);
    this.#head(0, B, out, 0);
    return out;
  }

  #embed(ids: number[]): void {
    const D = this.config.embedDim;
    const scale = this.config.embedScale;
    const e = this.#w.embed;
    for (let t = 0; t < ids.length; t++) {
      const src = ids[t] * D;
      for (let i = 0; i < D; i++) this.#x[t * D + i] = Math.fround(scale * e[src + i]);
    }
  }

  #norm(
    x: Float32Array,
    T: number,
    D: number,
    ln: { w: Float32Array; b: Float32Array } | null,
    y: Float32Array,
  ): void {
    if (ln) layerNorm(x, T, D, ln.w, ln.b, y);
    else simpleRmsNorm(x, T, D, y);
  }

  /**
   * The decoder stack over T rows. `attend(l, h, dk, q, k)` computes head h of layer l into #o
   * from head-major q/k ([h][T][dk]); `position(t)` is row t's absolute position (for LRPE).
   */
  #layers(
    T: number,
    attend: (l: number, h: number, dk: number, q: Float32Array, k: Float32Array) => void,
    position: (t: number) => number,
  ): void {
    const c = this.config;
    const { embedDim: D, hiddenDim: H, gluDim: G, numHeads: nh, headDim: hd } = c;
    const x = this.#x, a = this.#a, qkvu = this.#qkvu, q = this.#q, k = this.#k, o = this.#o;
    for (let l = 0; l < c.numLayers; l++) {
      const w = this.#w.layers[l];
      this.#norm(x, T, D, w.tokenNorm, a);
      linear(a, T, w.qkvu, w.qkvuBias, 4 * H, D, qkvu);
      for (let t = 0; t < T; t++) activate(c.activation, qkvu, t * 4 * H, 2 * H);
      const dk = stateKeyDim(c, l);
      // Head-major q and k, widened by LRPE: [x·cos(θ·pos), x·sin(θ·pos)].
      for (let h = 0; h < nh; h++) {
        for (let t = 0; t < T; t++) {
          const src = t * 4 * H + h * hd;
          const dst = (h * T + t) * dk;
          if (w.theta) {
            const pos = position(t);
            for (let i = 0; i < hd; i++) {
              const ang = Math.fround(w.theta[h * hd + i] * pos);
              const cs = Math.cos(ang), sn = Math.sin(ang);
              const qv = qkvu[src + i], kv = qkvu[src + H + i];
              q[dst + i] = qv * cs;
              q[dst + hd + i] = qv * sn;
              k[dst + i] = kv * cs;
              k[dst + hd + i] = kv * sn;
            }
          } else {
            for (let i = 0; i < hd; i++) {
              q[dst + i] = qkvu[src + i];
              k[dst + i] = qkvu[src + H + i];
            }
          }
        }
        attend(l, h, dk, q, k);
      }
      // norm over the whole hidden width, then the u gate.
      this.#norm(o, T, H, w.mixerNorm, a);
      for (let t = 0; t < T; t++) {
        for (let i = 0; i < H; i++) a[t * H + i] *= qkvu[t * 4 * H + 3 * H + i];
      }
      linear(a, T, w.out, w.outBias, D, H, o);
      for (let i = 0; i < T * D; i++) x[i] += o[i];
      // SGLU channel mixer.
      this.#norm(x, T, D, w.channelNorm, a);
      linear(a, T, w.l1, w.l1Bias, G, D, this.#g1);
      linear(a, T, w.l2, w.l2Bias, G, D, this.#g2);
      for (let i = 0; i < T * G; i++) this.#g1[i] *= this.#g2[i];
      linear(this.#g1, T, w.l3, w.l3Bias, D, G, o);
      for (let i = 0; i < T * D; i++) x[i] += o[i];
    }
  }

  /** Final norm and output head for rows [from, from+n) into out at outOff. */
  #head(from: number, n: number, out: Float32Array, outOff: number): void {
    const { embedDim: D, vocabSize: V } = this.config;
    const a = this.#a;
    this.#norm(this.#x.subarray(from * D, (from + n) * D), n, D, this.#w.finalNorm, a);
    linear(a, n, this.#w.head, null, V, D, out, V, outOff);
  }
}
