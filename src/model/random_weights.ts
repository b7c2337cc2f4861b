/**
 * Random checkpoints for tests and benchmarks: a `TensorSource` whose tensors are generated on
 * demand from a seed (nothing is downloaded and nothing large is held), in any weight dtype.
 * @module
 */

import { allSpecs, type CheckpointSpec, checkpointSpec } from "./checkpoint.ts";
import { type ModelConfig, parseConfig } from "./config.ts";
import { DTYPE_BYTES, f32ToBf16, f32ToF16, type FloatDType } from "./weights/dtype.ts";
import { checkRange, type TensorInfo, type TensorSource } from "./weights/source.ts";

/** Options of a random checkpoint. */
export interface RandomWeightsOptions {
  /** Stored dtype (default BF16, as the released models). */
  dtype?: FloatDType;
  /** Seed (default 1). */
  seed?: number;
  /** Standard deviation of the weights (default 0.02, the official init). */
  std?: number;
  /**
   * Fast mode for benchmarks: 16-bit weights are random bit patterns of magnitude 2^-9..2^-5 (about
   * the official init's scale), made by xorshift at ~1 ns per value; values differ from the
   * default mode's. Norm weights and θ are generated as usual.
   */
  fast?: boolean;
}

/** The xorshift32 state a fast-mode tensor's bit stream starts from. */
const fastStart = (seed: number) => seed >>> 0 || 0x9e3779b9;

/**
 * Random bf16/f16 bit patterns of small magnitude (sign, exponent in a narrow band, mantissa)
 * into `out` (4-byte aligned), two values per xorshift32 step from state `x` (an odd last value
 * takes the low half of one more step); returns the state after the whole pairs.
 */
function fillHalfBits(out: Uint16Array, x: number, dtype: "BF16" | "F16"): number {
  const words = new Uint32Array(out.buffer, out.byteOffset, out.length >> 1);
  // bf16: exponent 118..121 (2^-9..2^-6); f16: exponent 6..9 (2^-9..2^-6).
  const keep = dtype === "BF16" ? 0x807f807f : 0x83ff83ff;
  const expo = dtype === "BF16" ? 0x3b003b00 : 0x18001800;
  for (let i = 0; i < words.length; i++) {
    x = xorshift(x);
    words[i] = ((x & keep) | expo | ((x >>> 7) & 0x01800180)) >>> 0;
  }
  if (out.length & 1) {
    const y = xorshift(x);
    out[out.length - 1] = ((y & keep) | expo | ((y >>> 7) & 0x01800180)) & 0xffff;
  }
  return x;
}

/** `count` fast-mode values of a tensor whose stream starts from `seed`. */
function fastHalfBits(count: number, seed: number, dtype: "BF16" | "F16"): Uint16Array {
  const out = new Uint16Array(count);
  fillHalfBits(out, fastStart(seed), dtype);
  return out;
}

/** Deterministic uniform generator (mulberry32) for weight synthesis. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One xorshift32 step. */
function xorshift(x: number): number {
  x ^= x << 13;
  x ^= x >>> 17;
  return x ^ (x << 5);
}

function hashName(name: string, seed: number): number {
  let h = 2166136261 ^ seed;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
  return h >>> 0;
}

/** The value a random tensor holds at each element (exposed for tests). */
export function randomTensorValues(
  name: string,
  count: number,
  seed: number,
  std: number,
): Float32Array {
  const rnd = mulberry32(hashName(name, seed));
  const out = new Float32Array(count);
  const isNormW = name.endsWith("norm.weight");
  const isTheta = name.endsWith("lrpe.theta");
  for (let i = 0; i < count; i++) {
    // Sum of 3 uniforms: bell-shaped, unit variance after scaling.
    const u = (rnd() + rnd() + rnd() - 1.5) * 2;
    if (isNormW) out[i] = 1 + 0.1 * u;
    else if (isTheta) out[i] = 10000 ** (-(i % 64) / 64) * (1 + 0.05 * u);
    else out[i] = std * u;
  }
  return out;
}

/** A random checkpoint for `config`: every tensor the model needs, generated when read. */
export function randomSource(
  config: ModelConfig,
  options: RandomWeightsOptions = {},
): TensorSource {
  const dtype = options.dtype ?? "BF16";
  const seed = options.seed ?? 1;
  const std = options.std ?? 0.02;
  const spec: CheckpointSpec = checkpointSpec(config, "model.");
  const label = `(random ${dtype} seed ${seed})`;
  const tensors = new Map<string, TensorInfo>();
  for (const s of allSpecs(spec)) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    tensors.set(s.name, {
      name: s.name,
      dtype,
      shape: s.shape,
      byteLength: n * DTYPE_BYTES[dtype],
      file: label,
    });
  }
  /** Where the last in-place slice of each fast-mode tensor ended: its word and stream state. */
  const resume = new Map<string, { word: number; x: number }>();
  /** Fast-mode bit patterns apply (a 16-bit matrix, not a norm weight, θ or bias). */
  const fastBits = (name: string) =>
    options.fast && dtype !== "F32" &&
    !(name.endsWith("norm.weight") || name.endsWith("lrpe.theta") || name.endsWith(".bias"));
  const source: TensorSource = {
    tensors,
    read: (name) => {
      const info = tensors.get(name);
      if (!info) return Promise.reject(new Error(`${label}: no tensor ${name}`));
      const count = info.byteLength / DTYPE_BYTES[dtype];
      if (fastBits(name)) {
        const h = fastHalfBits(count, hashName(name, seed), dtype as "BF16" | "F16");
        return Promise.resolve(new Uint8Array(h.buffer, h.byteOffset, count * 2));
      }
      const f = randomTensorValues(name, count, seed, std);
      if (dtype === "F32") return Promise.resolve(new Uint8Array(f.buffer));
      const h = new Uint16Array(f.length);
      const conv = dtype === "BF16" ? f32ToBf16 : f32ToF16;
      for (let i = 0; i < f.length; i++) h[i] = conv(f[i]);
      return Promise.resolve(new Uint8Array(h.buffer));
    },
    readInto: async (name, dst, offset = 0) => {
      const info = tensors.get(name);
      if (!info) throw new Error(`${label}: no tensor ${name}`);
      checkRange(info, dst.byteLength, offset);
      const end = offset + dst.byteLength;
      // In place: whole pairs of values (or the tensor's odd last one) at an aligned destination.
      const inPlace = fastBits(name) && dst.byteOffset % 4 === 0 && offset % 4 === 0 &&
        (dst.byteLength % 4 === 0 || end === info.byteLength);
      if (!inPlace) {
        dst.set((await source.read(name)).subarray(offset, end));
        return;
      }
      // The stream's state where this slice starts: where the last slice ended (a loader reads
      // a matrix's rows in order), else stepped there from the start.
      const word = offset / 4, last = resume.get(name);
      let x = last?.word === word ? last.x : fastStart(hashName(name, seed));
      if (last?.word !== word) { for (let i = 0; i < word; i++) x = xorshift(x); }
      const out = new Uint16Array(dst.buffer, dst.byteOffset, dst.byteLength / 2);
      x = fillHalfBits(out, x, dtype as "BF16" | "F16");
      if (end === info.byteLength) resume.delete(name);
      else resume.set(name, { word: word + dst.byteLength / 4, x });
    },
    close: () => {},
  };
  return source;
}

/** Released TransNormerLLM shapes (vocabulary 64,000), for benchmarks. */
export const RELEASED_SHAPES: Readonly<Record<string, Record<string, unknown>>> = {
  "385M": {
    decoder_embed_dim: 1024,
    hidden_dim: 1024,
    decoder_layers: 24,
    decoder_attention_heads: 8,
    glu_dim: 2816,
  },
  "1B": {
    decoder_embed_dim: 2048,
    hidden_dim: 2048,
    decoder_layers: 16,
    decoder_attention_heads: 16,
    glu_dim: 5632,
  },
  "7B": {
    decoder_embed_dim: 4096,
    hidden_dim: 4096,
    decoder_layers: 30,
    decoder_attention_heads: 32,
    glu_dim: 11008,
  },
};

/** A config for a released shape (or a small custom one); LRPE in layer 0 as the released models. */
export function shapeConfig(
  shape: string | Record<string, unknown>,
  overrides: Record<string, unknown> = {},
): ModelConfig {
  const base = typeof shape === "string" ? RELEASED_SHAPES[shape] : shape;
  if (!base) throw new Error(`unknown shape ${shape}`);
  const layers = (overrides.decoder_layers ?? base.decoder_layers) as number;
  return parseConfig({
    vocab_size: 64000,
    linear_act_fun: "swish",
    norm_type: "simplermsnorm",
    bias: false,
    no_scale_embedding: false,
    tie_word_embeddings: true,
    linear_use_lrpe_list: Array.from({ length: layers }, (_, i) => (i === 0 ? 1 : 0)),
    ...base,
    ...overrides,
  }, `(shape ${typeof shape === "string" ? shape : "custom"})`);
}
