/**
 * Loading WGSL kernels from `wgsl/` with a tiny preprocessor, and a pipeline cache.
 *
 * Directives (each on its own line):
 * - `//#include name`            the text of `wgsl/name.wgsl`
 * - `//#weights NAME BINDING SCALES`  a weight binding `NAME` in the dtype chosen by define
 *                                `NAME_DTYPE` (f32 | bf16 | f16 | q8; q8's row scales at binding
 *                                SCALES) with the accessors of `weightAccessors`
 * - `//#if FLAG` / `//#else` / `//#endif`   kept when define FLAG is truthy
 * and `{{NAME}}` is replaced by the define's value.
 * @module
 */

/** Preprocessor defines: numbers, strings, booleans. */
export type Defines = Readonly<Record<string, string | number | boolean>>;

const sourceCache = new Map<string, Promise<string>>();

/** Read `wgsl/<name>.wgsl` (file: or https: alike, through fetch). */
export function readKernelSource(name: string): Promise<string> {
  let p = sourceCache.get(name);
  if (!p) {
    const url = new URL(`../../wgsl/${name}.wgsl`, import.meta.url);
    p = (async () => {
      if (url.protocol === "file:") return await Deno.readTextFile(url);
      const r = await fetch(url);
      if (!r.ok) throw new Error(`cannot load kernel ${url}: ${r.status}`);
      return await r.text();
    })();
    sourceCache.set(name, p);
    p.catch(() => sourceCache.delete(name));
  }
  return p;
}

/**
 * Declarations and accessors of one weight binding in the given dtype: `NAME_scale(row)` (the row's
 * f32 scale for `q8`, 1 otherwise; `row` is the global row), `NAME_get(e, s)` (element e, times s
 * for `q8`) and `NAME_get8(i, s)` (elements 8i..8i+7). `q8` reads its scales at `scaleBinding`.
 */
export function weightAccessors(
  name: string,
  binding: number,
  dtype: string,
  scaleBinding?: number,
): string {
  const decl = (t: string) =>
    `@group(0) @binding(${binding}) var<storage, read> ${name}: array<${t}>;`;
  const unit = `fn ${name}_scale(row: u32) -> f32 { return 1.0; }`;
  switch (dtype) {
    case "f32":
      return `${decl("vec4<f32>")}
${unit}
fn ${name}_get(e: u32, s: f32) -> f32 { return ${name}[e >> 2u][e & 3u]; }
fn ${name}_get8(i: u32, s: f32) -> array<vec4<f32>, 2> { return array<vec4<f32>, 2>(${name}[2u * i], ${name}[2u * i + 1u]); }`;
    case "bf16":
      return `${decl("vec4<u32>")}
${unit}
fn ${name}_get(e: u32, s: f32) -> f32 {
  let w = ${name}[e >> 3u][(e >> 1u) & 3u];
  return bitcast<f32>(select(w << 16u, w & 0xffff0000u, (e & 1u) == 1u));
}
fn ${name}_get8(i: u32, s: f32) -> array<vec4<f32>, 2> {
  let w = ${name}[i];
  let lo = bitcast<vec4<f32>>(w << vec4<u32>(16u));
  let hi = bitcast<vec4<f32>>(w & vec4<u32>(0xffff0000u));
  return array<vec4<f32>, 2>(vec4<f32>(lo.x, hi.x, lo.y, hi.y), vec4<f32>(lo.z, hi.z, lo.w, hi.w));
}`;
    case "f16":
      return `${decl("vec4<u32>")}
${unit}
fn ${name}_get(e: u32, s: f32) -> f32 {
  let w = unpack2x16float(${name}[e >> 3u][(e >> 1u) & 3u]);
  return select(w.x, w.y, (e & 1u) == 1u);
}
fn ${name}_get8(i: u32, s: f32) -> array<vec4<f32>, 2> {
  let w = ${name}[i];
  let a = unpack2x16float(w.x); let b = unpack2x16float(w.y);
  let c = unpack2x16float(w.z); let d = unpack2x16float(w.w);
  return array<vec4<f32>, 2>(vec4<f32>(a, b), vec4<f32>(c, d));
}`;
    case "q8":
      if (scaleBinding === undefined) throw new Error(`q8 weights ${name} need a scale binding`);
      // Little-endian bytes: element k of a word is byte k; shifting it to the top and back
      // (arithmetic shift) sign-extends it. q·s is one correctly rounded f32 product.
      return `${decl("vec2<u32>")}
@group(0) @binding(${scaleBinding}) var<storage, read> ${name}_scales: array<f32>;
fn ${name}_scale(row: u32) -> f32 { return ${name}_scales[row]; }
fn ${name}_bytes(w: u32) -> vec4<f32> {
  return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(w) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}
fn ${name}_get(e: u32, s: f32) -> f32 {
  let w = ${name}[e >> 3u][(e >> 2u) & 1u];
  return f32(bitcast<i32>(w << (24u - 8u * (e & 3u))) >> 24u) * s;
}
fn ${name}_get8(i: u32, s: f32) -> array<vec4<f32>, 2> {
  let w = ${name}[i];
  return array<vec4<f32>, 2>(${name}_bytes(w.x) * s, ${name}_bytes(w.y) * s);
}`;
    default:
      throw new Error(`unknown weight dtype ${dtype}`);
  }
}

/** Expand directives and `{{NAME}}` placeholders. */
export async function preprocess(name: string, defines: Defines, depth = 0): Promise<string> {
  if (depth > 8) throw new Error(`kernel includes nest too deep at ${name}`);
  const src = await readKernelSource(name);
  const out: string[] = [];
  const stack: { keep: boolean; parentKeep: boolean }[] = [];
  const keeping = () => stack.every((s) => s.keep);
  for (const line of src.split("\n")) {
    const t = line.trim();
    if (t.startsWith("//#if ")) {
      const flag = t.slice(6).trim();
      const parentKeep = keeping();
      const neg = flag.startsWith("!");
      const v = Boolean(defines[neg ? flag.slice(1) : flag]);
      stack.push({ keep: neg ? !v : v, parentKeep });
      continue;
    }
    if (t === "//#else") {
      const top = stack.at(-1);
      if (!top) throw new Error(`${name}: #else without #if`);
      top.keep = !top.keep;
      continue;
    }
    if (t === "//#endif") {
      if (!stack.pop()) throw new Error(`${name}: #endif without #if`);
      continue;
    }
    if (!keeping()) continue;
    if (t.startsWith("//#include ")) {
      out.push(await preprocess(t.slice(11).trim(), defines, depth + 1));
      continue;
    }
    if (t.startsWith("//#weights ")) {
      const [wname, binding, scales] = t.slice(11).trim().split(/\s+/);
      const dtype = defines[`${wname}_DTYPE`];
      if (typeof dtype !== "string") throw new Error(`${name}: define ${wname}_DTYPE missing`);
      out.push(
        weightAccessors(
          wname,
          Number(binding),
          dtype,
          scales === undefined ? undefined : Number(scales),
        ),
      );
      continue;
    }
    out.push(line);
  }
  if (stack.length) throw new Error(`${name}: unterminated #if`);
  return out.join("\n").replace(/\{\{(\w+)\}\}/g, (_, k: string) => {
    const v = defines[k];
    if (v === undefined) throw new Error(`${name}: define ${k} missing`);
    return typeof v === "number" && Number.isInteger(v) ? `${v}` : String(v);
  });
}

const perDevice = new WeakMap<GPUDevice, PipelineCache>();

/** Compiles and caches compute pipelines by kernel name and defines. */
export class PipelineCache {
  /** The cache shared by everything on `device` (a pipeline is compiled once per device). */
  static for(device: GPUDevice): PipelineCache {
    let c = perDevice.get(device);
    if (!c) perDevice.set(device, c = new PipelineCache(device));
    return c;
  }

  readonly #device: GPUDevice;
  readonly #cache = new Map<string, Promise<GPUComputePipeline>>();
  /** Every WGSL text compiled, by key (for tests and debugging). */
  readonly sources: Map<string, string> = new Map();

  /** Bind to a device. */
  constructor(device: GPUDevice) {
    this.#device = device;
  }

  /** The pipeline of `wgsl/<name>.wgsl` under `defines` (entry point `main`). */
  get(name: string, defines: Defines): Promise<GPUComputePipeline> {
    const key = `${name}|${JSON.stringify(Object.entries(defines).sort())}`;
    let p = this.#cache.get(key);
    if (!p) {
      p = (async () => {
        const code = await preprocess(name, defines);
        this.sources.set(key, code);
        const module = this.#device.createShaderModule({ code, label: name });
        const info = await module.getCompilationInfo();
        const errors = info.messages.filter((m) => m.type === "error");
        if (errors.length) {
          throw new Error(
            `WGSL ${name}: ${
              errors.map((m) => `${m.lineNum}:${m.linePos} ${m.message}`).join("; ")
            }`,
          );
        }
        this.#device.pushErrorScope("validation");
        const pipeline = await this.#device.createComputePipelineAsync({
          label: name,
          layout: "auto",
          compute: { module, entryPoint: "main" },
        });
        const err = await this.#device.popErrorScope();
        if (err) throw new Error(`pipeline ${name}: ${err.message}`);
        return pipeline;
      })();
      this.#cache.set(key, p);
    }
    return p;
  }
}
