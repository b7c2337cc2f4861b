/**
 * Loading WGSL kernels from `wgsl/` with a tiny preprocessor, and a pipeline cache.
 *
 * Directives (each on its own line):
 * - `//#include name`            the text of `wgsl/name.wgsl`
 * - `//#weights NAME BINDING SCALES`  a weight binding `NAME` in the dtype chosen by define
 *                                `NAME_DTYPE` (f32 | bf16 | f16 | q8; q8's row scales at binding
 *                                SCALES) with its accessors, from `wgsl/weights_<dtype>.wgsl`
 * - `//#if FLAG` / `//#else` / `//#endif`   kept when define FLAG is truthy
 * - `//#for I in A..B` / `//#endfor`   the lines between, once for each I from A to B - 1 (`A..=B`:
 *                                to B) with `{{I}}` replaced by I (`{{I+n}}`, `{{I-n}}`: I ± n); A and
 *                                B are integers or defines.
 *                                A loop unrolled as text: the statements a compiler would unroll,
 *                                for accumulators kept in named scalars, never in a private array
 *                                indexed at run time (which can end up in slow local memory)
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

/** Weight dtypes with accessors in `wgsl/weights_<dtype>.wgsl`. */
const WEIGHT_DTYPES = ["f32", "bf16", "f16", "q8"];

/**
 * Declarations and accessors of one weight binding in the given dtype, from
 * `wgsl/weights_<dtype>.wgsl`: `NAME_scale(row)` (the row's f32 scale for `q8`, 1 otherwise; `row`
 * is the global row), `NAME_get(e, s)` (element e, times s for `q8`) and `NAME_get8(i, s)` (elements
 * 8i..8i+7). `q8` reads its scales at `scaleBinding`.
 */
export async function weightAccessors(
  name: string,
  binding: number,
  dtype: string,
  scaleBinding?: number,
): Promise<string> {
  if (!WEIGHT_DTYPES.includes(dtype)) throw new Error(`unknown weight dtype ${dtype}`);
  if (dtype === "q8" && scaleBinding === undefined) {
    throw new Error(`q8 weights ${name} need a scale binding`);
  }
  const values: Record<string, string> = {
    W: name,
    BINDING: String(binding),
    SCALES: String(scaleBinding),
  };
  const text = await readKernelSource(`weights_${dtype}`);
  // The template's leading comment lines stay in the file, not in every kernel.
  return text.split("\n").filter((l) => !l.startsWith("//")).join("\n").trimEnd()
    .replace(/\{\{(W|BINDING|SCALES)\}\}/g, (_, k: string) => values[k]);
}

/** The bounds of `//#for I in A..B` (or `A..=B`) under `defines`, as [I, first, end]. */
function forRange(name: string, header: string, defines: Defines): [string, number, number] {
  const m = header.match(/^(\w+)\s+in\s+(\w+)\s*\.\.(=?)\s*(\w+)$/);
  if (!m) throw new Error(`${name}: cannot read //#for ${header}`);
  const bound = (b: string) => {
    const v = /^\d+$/.test(b) ? Number(b) : defines[b];
    if (typeof v !== "number" || !Number.isInteger(v)) {
      throw new Error(`${name}: //#for bound ${b} is not an integer define`);
    }
    return v;
  };
  return [m[1], bound(m[2]), bound(m[4]) + (m[3] ? 1 : 0)];
}

/** Expand directives and `{{NAME}}` placeholders. */
export async function preprocess(name: string, defines: Defines, depth = 0): Promise<string> {
  if (depth > 8) throw new Error(`kernel includes nest too deep at ${name}`);
  const text = await expandLines(name, (await readKernelSource(name)).split("\n"), defines, depth);
  return text.replace(/\{\{(\w+)\}\}/g, (_, k: string) => {
    const v = defines[k];
    if (v === undefined) throw new Error(`${name}: define ${k} missing`);
    return typeof v === "number" && Number.isInteger(v) ? `${v}` : String(v);
  });
}

/** The directives of `lines` expanded (not yet the defines' `{{NAME}}`s). */
async function expandLines(
  name: string,
  lines: string[],
  defines: Defines,
  depth: number,
): Promise<string> {
  const out: string[] = [];
  const stack: { keep: boolean; parentKeep: boolean }[] = [];
  const keeping = () => stack.every((s) => s.keep);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const t = line.trim();
    if (t.startsWith("//#for ") && keeping()) {
      // The body runs to the matching //#endfor; each copy is expanded on its own.
      const [v, first, end] = forRange(name, t.slice(6).trim(), defines);
      const start = i + 1;
      for (let nest = 1; nest > 0;) {
        if (++i >= lines.length) throw new Error(`${name}: unterminated //#for ${v}`);
        const u = lines[i].trim();
        if (u.startsWith("//#for ")) nest++;
        else if (u === "//#endfor") nest--;
      }
      const body = lines.slice(start, i);
      const use = new RegExp(`\\{\\{${v}(?:([+-])(\\d+))?\\}\\}`, "g");
      for (let k = first; k < end; k++) {
        const copy = body.map((l) =>
          l.replace(
            use,
            (_, sign?: string, d?: string) => `${k + Number(`${sign ?? ""}${d ?? 0}`)}`,
          )
        );
        const text = await expandLines(name, copy, defines, depth);
        if (text !== "") out.push(text);
      }
      continue;
    }
    if (t.startsWith("//#for ") || t === "//#endfor") {
      if (keeping()) throw new Error(`${name}: //#endfor without //#for`);
      continue;
    }
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
        await weightAccessors(
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
  return out.join("\n");
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
  readonly #sourceOf = new WeakMap<GPUComputePipeline, string>();

  /** Bind to a device. */
  constructor(device: GPUDevice) {
    this.#device = device;
  }

  /** The expanded WGSL a pipeline of this cache was compiled from. */
  sourceOf(pipeline: GPUComputePipeline): string | undefined {
    return this.#sourceOf.get(pipeline);
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
        this.#sourceOf.set(pipeline, code);
        return pipeline;
      })();
      this.#cache.set(key, p);
    }
    return p;
  }
}
