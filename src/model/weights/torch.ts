/**
 * PyTorch checkpoints (`pytorch_model.bin`, `torch.save` of a state dict): a ZIP archive holding
 * `<prefix>/data.pkl` (the pickled dict of tensors, read with the restricted unpickler) and one
 * stored entry `<prefix>/data/<key>` per storage. Tensors must be contiguous row-major views; their
 * bytes are read lazily from the storage entries, one tensor at a time.
 * @module
 */

import { WeightsError } from "../../errors.ts";
import { DTYPE_BYTES } from "./dtype.ts";
import { type PickleValue, TorchTensor, unpickle } from "./pickle.ts";
import type { TensorInfo, TensorSource } from "./source.ts";
import {
  MAX_INFLATE_BYTES,
  METHOD_DEFLATE,
  METHOD_STORED,
  type ZipEntry,
  ZipReader,
} from "./zip.ts";

/** A tensor of a PyTorch checkpoint: its catalogue entry plus where its bytes lie. */
export interface TorchTensorInfo extends TensorInfo {
  /** Storage key: the archive entry `<prefix>/data/<key>`. */
  readonly storageKey: string;
  /** Byte offset of the tensor's first element inside its storage. */
  readonly storageByteOffset: number;
  /** Size of the whole storage in bytes, as the pickle declares it. */
  readonly storageBytes: number;
}

const STORAGE_KEY = /^[A-Za-z0-9_.-]{1,200}$/;

function product(shape: readonly number[], label: string, name: string): number {
  let n = 1;
  for (const d of shape) {
    if (d < 0) throw new WeightsError(label, name, `negative dimension in shape [${shape}]`);
    n *= d;
    if (!Number.isSafeInteger(n)) {
      throw new WeightsError(label, name, `shape [${shape}] is too large`);
    }
  }
  return n;
}

/** Pick the dict of tensors out of the unpickled object (a state dict, or one wrapped once). */
function stateDict(root: PickleValue, label: string): Map<unknown, PickleValue> {
  if (!(root instanceof Map)) {
    throw new WeightsError(label, "", "data.pkl does not hold a dict of tensors");
  }
  const hasTensor = (m: Map<unknown, PickleValue>): boolean =>
    [...m.values()].some((v) => v instanceof TorchTensor);
  if (hasTensor(root)) return root;
  for (const key of ["state_dict", "model", "module"]) {
    const inner = root.get(key);
    if (inner instanceof Map && hasTensor(inner)) return inner;
  }
  throw new WeightsError(label, "", "data.pkl holds no tensors");
}

/**
 * Unpickle a checkpoint's `data.pkl` and describe its tensors, checking each is a contiguous
 * row-major view inside its declared storage. Entries that are not tensors are skipped. `label`
 * names the checkpoint file in errors and in each {@link TensorInfo.file}.
 */
export function parseTorchPickle(pkl: Uint8Array, label: string): TorchTensorInfo[] {
  const dict = stateDict(unpickle(pkl, label), label);
  const storages = new Map<string, { bytes: number; dtype: string | null }>();
  const out: TorchTensorInfo[] = [];
  for (const [name, t] of dict) {
    if (!(t instanceof TorchTensor)) continue;
    if (typeof name !== "string") {
      throw new WeightsError(label, String(name), "tensor name is not a string");
    }
    const { storage, shape, stride, offset, dtype } = t;
    if (!STORAGE_KEY.test(storage.key) || storage.key.includes("..")) {
      throw new WeightsError(label, name, `bad storage key ${JSON.stringify(storage.key)}`);
    }
    if (shape.length !== stride.length) {
      throw new WeightsError(label, name, `shape [${shape}] and stride [${stride}] differ in rank`);
    }
    const numel = product(shape, label, name);
    if (numel > 0) {
      let expected = 1;
      for (let i = shape.length - 1; i >= 0; i--) {
        if (shape[i] !== 1 && stride[i] !== expected) {
          throw new WeightsError(
            label,
            name,
            `not contiguous: stride [${stride}] for shape [${shape}] (save it with .contiguous())`,
          );
        }
        expected *= shape[i];
      }
    }
    const elem = DTYPE_BYTES[dtype];
    const storageElem = storage.type.dtype ? DTYPE_BYTES[storage.type.dtype] : 1;
    const storageBytes = storage.numel * storageElem;
    const begin = offset * elem;
    const byteLength = numel * elem;
    if (
      offset < 0 || !Number.isSafeInteger(storageBytes) || !Number.isSafeInteger(begin + byteLength)
    ) {
      throw new WeightsError(label, name, `storage offset ${offset} or sizes out of range`);
    }
    if (begin + byteLength > storageBytes) {
      throw new WeightsError(
        label,
        name,
        `elements ${offset}..${offset + numel} of ${dtype} run past its storage "${storage.key}" ` +
          `(${storageBytes} bytes)`,
      );
    }
    const seen = storages.get(storage.key);
    if (seen && (seen.bytes !== storageBytes || seen.dtype !== storage.type.dtype)) {
      throw new WeightsError(
        label,
        name,
        `storage "${storage.key}" is declared with two sizes or types`,
      );
    }
    storages.set(storage.key, { bytes: storageBytes, dtype: storage.type.dtype });
    out.push({
      name,
      dtype,
      shape,
      byteLength,
      file: label,
      storageKey: storage.key,
      storageByteOffset: begin,
      storageBytes,
    });
  }
  return out;
}

/** Find `<prefix>/data.pkl` (the prefix is the archive's top folder, whatever its name). */
function findPickle(zip: ZipReader): { prefix: string; entry: ZipEntry } {
  const found = [...zip.entries.values()].filter((e) => /^([^/]+\/)?data\.pkl$/.test(e.name));
  if (found.length === 0) {
    throw new WeightsError(zip.path, "", "no data.pkl in the archive: not a PyTorch checkpoint");
  }
  if (found.length > 1) {
    throw new WeightsError(
      zip.path,
      "",
      `several data.pkl entries (${found.map((e) => e.name).join(", ")})`,
    );
  }
  const entry = found[0];
  return { prefix: entry.name.slice(0, entry.name.length - "data.pkl".length), entry };
}

/**
 * Open a PyTorch zip checkpoint (`torch.save` format of PyTorch 1.6 and later). Tensors are
 * checked against their storages up front and read lazily; reads may run concurrently.
 */
export async function openTorchCheckpoint(path: string): Promise<TensorSource> {
  const zip = await ZipReader.open(path);
  try {
    const { prefix, entry } = findPickle(zip);
    const byteorder = zip.entries.get(prefix + "byteorder");
    if (byteorder) {
      const order = new TextDecoder().decode(await zip.readEntry(byteorder, 64)).trim();
      if (order !== "little") {
        throw new WeightsError(path, "", `byte order "${order}" is not supported (only "little")`);
      }
    }
    const tensors = parseTorchPickle(await zip.readEntry(entry), path);
    const byName = new Map<string, TorchTensorInfo & { entry: ZipEntry }>();
    for (const t of tensors) {
      const storageName = `${prefix}data/${t.storageKey}`;
      const e = zip.entries.get(storageName);
      if (!e) throw new WeightsError(path, t.name, `storage entry "${storageName}" is missing`);
      if (e.size < t.storageBytes) {
        throw new WeightsError(
          path,
          t.name,
          `storage "${storageName}" holds ${e.size} bytes but ${t.storageBytes} are declared ` +
            "(truncated or too small)",
        );
      }
      if (
        e.method !== METHOD_STORED && !(e.method === METHOD_DEFLATE && e.size <= MAX_INFLATE_BYTES)
      ) {
        throw new WeightsError(
          path,
          t.name,
          `storage "${storageName}" is compressed (method ${e.method}, ${e.size} bytes); only stored ` +
            "storages (and small deflated ones) are supported",
        );
      }
      byName.set(t.name, { ...t, entry: e });
    }
    const tensorsInfo = new Map<string, TensorInfo>();
    for (const [name, t] of byName) {
      tensorsInfo.set(name, {
        name,
        dtype: t.dtype,
        shape: t.shape,
        byteLength: t.byteLength,
        file: path,
      });
    }
    return {
      tensors: tensorsInfo,
      read: async (name: string): Promise<Uint8Array> => {
        const t = byName.get(name);
        if (!t) throw new WeightsError(path, name, "not in this file");
        if (t.entry.method === METHOD_STORED) {
          return await zip.readRange(t.entry, t.storageByteOffset, t.byteLength);
        }
        const whole = await zip.readEntry(t.entry);
        return whole.slice(t.storageByteOffset, t.storageByteOffset + t.byteLength);
      },
      close: () => zip.close(),
    };
  } catch (e) {
    zip.close();
    throw e;
  }
}
