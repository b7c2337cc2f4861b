/**
 * Find and open the weights of a model directory: safetensors or PyTorch `.bin`, single file or
 * sharded through an index (`model.safetensors.index.json`, `pytorch_model.bin.index.json`).
 * @module
 */

import { WeightsError } from "../../errors.ts";
import { openSafetensors } from "./safetensors.ts";
import { readTensorInto, type TensorInfo, type TensorSource } from "./source.ts";
import { openTorchCheckpoint } from "./torch.ts";

/** Candidate files, in order of preference. */
export const WEIGHT_FILES = [
  "model.safetensors.index.json",
  "model.safetensors",
  "pytorch_model.bin.index.json",
  "pytorch_model.bin",
] as const;

async function exists(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

/** Open one weights file by its extension. */
export function openWeightsFile(path: string): Promise<TensorSource> {
  if (path.endsWith(".safetensors")) return openSafetensors(path);
  if (path.endsWith(".bin") || path.endsWith(".pt") || path.endsWith(".pth")) {
    return openTorchCheckpoint(path);
  }
  return Promise.reject(
    new WeightsError(path, "", "unknown weights format (expected .safetensors or .bin)"),
  );
}

/** Merge shard sources into one, checking each tensor is where the index says. */
export function mergeSources(
  shards: TensorSource[],
  weightMap: ReadonlyMap<string, string> | null,
  label: string,
): TensorSource {
  const owner = new Map<string, { source: TensorSource; info: TensorInfo }>();
  for (const s of shards) {
    for (const [name, info] of s.tensors) {
      if (owner.has(name)) {
        throw new WeightsError(
          label,
          name,
          `appears in both ${owner.get(name)!.info.file} and ${info.file}`,
        );
      }
      owner.set(name, { source: s, info });
    }
  }
  if (weightMap) {
    for (const [name, file] of weightMap) {
      const o = owner.get(name);
      if (!o) {
        throw new WeightsError(
          label,
          name,
          `listed in the index under ${file} but not found in it`,
        );
      }
      if (!o.info.file.endsWith(file)) {
        throw new WeightsError(label, name, `the index says ${file} but it is in ${o.info.file}`);
      }
    }
  }
  return {
    tensors: new Map([...owner].map(([k, v]) => [k, v.info])),
    read: (name) => {
      const o = owner.get(name);
      return o ? o.source.read(name) : Promise.reject(new WeightsError(label, name, "missing"));
    },
    readInto: (name, dst, offset) => {
      const o = owner.get(name);
      return o
        ? readTensorInto(o.source, name, dst, offset)
        : Promise.reject(new WeightsError(label, name, "missing"));
    },
    close: () => shards.forEach((s) => s.close()),
  };
}

/** Open a sharded checkpoint from its index file. */
export async function openShardedIndex(indexPath: string): Promise<TensorSource> {
  let index: unknown;
  try {
    index = JSON.parse(await Deno.readTextFile(indexPath));
  } catch (e) {
    throw new WeightsError(indexPath, "", `cannot read the index: ${(e as Error).message}`);
  }
  const wm = (index as { weight_map?: unknown })?.weight_map;
  if (typeof wm !== "object" || wm === null || Array.isArray(wm)) {
    throw new WeightsError(indexPath, "", `no "weight_map" object`);
  }
  const weightMap = new Map<string, string>();
  for (const [name, file] of Object.entries(wm as Record<string, unknown>)) {
    if (
      typeof file !== "string" || file.includes("/") || file.includes("\\") || file.startsWith(".")
    ) {
      throw new WeightsError(indexPath, name, `bad shard file name ${JSON.stringify(file)}`);
    }
    weightMap.set(name, file);
  }
  const dir = indexPath.slice(0, indexPath.lastIndexOf("/") + 1);
  const files = [...new Set(weightMap.values())].sort();
  const shards: TensorSource[] = [];
  try {
    for (const f of files) shards.push(await openWeightsFile(dir + f));
    return mergeSources(shards, weightMap, indexPath);
  } catch (e) {
    shards.forEach((s) => s.close());
    throw e;
  }
}

/** Open the weights of a model directory, whichever supported layout it uses. */
export async function openWeights(dir: string): Promise<TensorSource> {
  const base = dir.endsWith("/") ? dir : dir + "/";
  for (const f of WEIGHT_FILES) {
    if (await exists(base + f)) {
      return f.endsWith(".index.json") ? openShardedIndex(base + f) : openWeightsFile(base + f);
    }
  }
  throw new WeightsError(dir, "", `no weights found (looked for ${WEIGHT_FILES.join(", ")})`);
}
