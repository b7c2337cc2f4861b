/**
 * Writes the expanded WGSL of every pipeline a model builds (decode plans, prefill, sampler) to a
 * folder, one file per pipeline, so each kernel can be read, diffed and compiled alone. The defines
 * that were short enough to read head each file; the directives (`//#for` loops, `//#if`,
 * `//#weights`) are expanded in the text.
 *
 *   deno task wgsl [--out build/wgsl] [--shape default|385M|1B|7B] [--weights bf16|int8]
 *
 * `default` is the embedded model; a released shape uses random bf16 weights (the kernels and tile
 * choices depend on the shape, not on the values). Runs on any WebGPU adapter (llvmpipe too).
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";
import { WebGpuBackend } from "../src/gpu/backend.ts";
import { acquireDevice } from "../src/gpu/device.ts";
import { PipelineCache } from "../src/gpu/shaders.ts";
import { loadConfig } from "../src/model/config.ts";
import { randomSource, shapeConfig } from "../src/model/random_weights.ts";
import { openSafetensors } from "../src/model/weights/safetensors.ts";

const DEFAULT_MODEL = new URL("../models/tnl-shakespeare-6m/", import.meta.url).pathname;

/** File name of a pipeline: its kernel and a short hash of its defines. */
async function fileName(key: string): Promise<string> {
  const kernel = key.slice(0, key.indexOf("|"));
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(key));
  const hex = [...new Uint8Array(digest).slice(0, 4)].map((b) => b.toString(16).padStart(2, "0"));
  return `${kernel}_${hex.join("")}.wgsl`;
}

if (import.meta.main) {
  const args = parseArgs(Deno.args, { string: ["out", "shape", "weights"] });
  const out = args.out ?? "build/wgsl";
  const shape = args.shape ?? "default";
  const quantize = args.weights === "int8" ? "int8" : "none";
  const ctx = await acquireDevice();
  const { config, source } = shape === "default"
    ? {
      config: await loadConfig(DEFAULT_MODEL + "config.json"),
      source: await openSafetensors(DEFAULT_MODEL + "model.safetensors"),
    }
    : { config: shapeConfig(shape), source: randomSource(shapeConfig(shape), { fast: true }) };
  const backend = await WebGpuBackend.load(source, config, shape, {
    context: ctx,
    quantize,
    maxBatch: 64,
  });
  await Deno.mkdir(out, { recursive: true });
  for (const old of Deno.readDirSync(out)) {
    if (old.name.endsWith(".wgsl")) await Deno.remove(`${out}/${old.name}`);
  }
  const sources = PipelineCache.for(ctx.device).sources;
  for (const [key, code] of sources) {
    const defines = JSON.parse(key.slice(key.indexOf("|") + 1)) as [string, unknown][];
    const shown = defines.filter(([, v]) => String(v).length <= 40 && !String(v).includes("\n"));
    const head = [
      `// ${key.slice(0, key.indexOf("|"))}.wgsl on ${ctx.info.description}, model ${shape}`,
      `// defines: ${shown.map(([k, v]) => `${k}=${v}`).join(" ")}`,
      "",
    ].join("\n");
    await Deno.writeTextFile(`${out}/${await fileName(key)}`, head + code + "\n");
  }
  console.log(`wrote ${sources.size} pipelines to ${out}/`);
  await backend.dispose();
  source.close();
}
