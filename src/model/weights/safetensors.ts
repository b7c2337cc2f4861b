/**
 * safetensors reader (and a small writer for tests and benchmarks).
 *
 * Layout: u64 little-endian header length N, N bytes of JSON `{name: {dtype, shape, data_offsets}}`,
 * then the data; offsets are relative to the first byte after the header.
 * @module
 */

import { WeightsError } from "../../errors.ts";
import { type DType, DTYPE_BYTES, isDType } from "./dtype.ts";
import { checkRange, type TensorInfo, type TensorSource } from "./source.ts";

/** Largest header accepted (the format's own readers cap it at 100 MB). */
const MAX_HEADER_BYTES = 100_000_000;

/** A tensor of a safetensors file and where its data starts (relative to the data section). */
export interface SafetensorsEntry extends TensorInfo {
  /** Byte offset of the data after the header. */
  readonly offset: number;
}

/** Read exactly `length` bytes at `position` of an open file, or fail naming the file. */
export async function readExactly(
  file: Deno.FsFile,
  position: number,
  length: number,
  label: string,
  into?: Uint8Array,
): Promise<Uint8Array> {
  const buf = into ?? new Uint8Array(length);
  await file.seek(position, Deno.SeekMode.Start);
  let got = 0;
  while (got < length) {
    const n = await file.read(buf.subarray(got, length));
    if (n === null) {
      throw new WeightsError(
        label,
        "",
        `truncated: wanted ${length} bytes at ${position}, got ${got}`,
      );
    }
    got += n;
  }
  return buf;
}

/** Parse a safetensors header; `dataBytes` is the file size minus the header, for bounds checks. */
export function parseSafetensorsHeader(
  json: unknown,
  dataBytes: number,
  label: string,
): { entries: SafetensorsEntry[]; metadata: Record<string, string> } {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new WeightsError(label, "", "header is not a JSON object");
  }
  const entries: SafetensorsEntry[] = [];
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(json as Record<string, unknown>)) {
    if (name === "__metadata__") {
      metadata = (raw ?? {}) as Record<string, string>;
      continue;
    }
    const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof e !== "object" || e === null) {
      throw new WeightsError(label, name, "entry is not an object");
    }
    if (typeof e.dtype !== "string" || !isDType(e.dtype)) {
      throw new WeightsError(label, name, `unknown dtype ${JSON.stringify(e.dtype)}`);
    }
    const dtype: DType = e.dtype;
    if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new WeightsError(label, name, `bad shape ${JSON.stringify(e.shape)}`);
    }
    const shape = e.shape as number[];
    const off = e.data_offsets;
    if (
      !Array.isArray(off) || off.length !== 2 ||
      !off.every((d) => Number.isSafeInteger(d) && d >= 0)
    ) {
      throw new WeightsError(label, name, `bad data_offsets ${JSON.stringify(off)}`);
    }
    const [begin, end] = off as number[];
    const byteLength = shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype];
    if (end - begin !== byteLength) {
      throw new WeightsError(
        label,
        name,
        `data_offsets span ${
          end - begin
        } bytes but shape [${shape}] of ${dtype} needs ${byteLength}`,
      );
    }
    if (end > dataBytes) {
      throw new WeightsError(
        label,
        name,
        `data ends at ${end} but the file holds ${dataBytes} data bytes (truncated file?)`,
      );
    }
    entries.push({ name, dtype, shape, byteLength, file: label, offset: begin });
  }
  return { entries, metadata };
}

/** Open one `.safetensors` file; tensors are read on demand. */
export async function openSafetensors(path: string): Promise<
  TensorSource & {
    readonly metadata: Record<string, string>;
    readonly headerBytes: Uint8Array;
  }
> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    throw new WeightsError(path, "", `cannot open: ${(e as Error).message}`);
  }
  try {
    const size = (await file.stat()).size;
    if (size < 8) {
      throw new WeightsError(path, "", `too short (${size} bytes) for a safetensors file`);
    }
    const lenBytes = await readExactly(file, 0, 8, path);
    const headerLen = Number(new DataView(lenBytes.buffer).getBigUint64(0, true));
    if (headerLen > MAX_HEADER_BYTES || headerLen + 8 > size) {
      throw new WeightsError(
        path,
        "",
        `header length ${headerLen} does not fit the file of ${size} bytes`,
      );
    }
    const headerBytes = await readExactly(file, 8, headerLen, path);
    let json: unknown;
    try {
      json = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(headerBytes));
    } catch (e) {
      throw new WeightsError(path, "", `header is not valid JSON: ${(e as Error).message}`);
    }
    const dataStart = 8 + headerLen;
    const { entries, metadata } = parseSafetensorsHeader(json, size - dataStart, path);
    const byName = new Map(entries.map((e) => [e.name, e]));
    // Reads share one file position, so they are queued: concurrent read() calls never interleave.
    let queue: Promise<unknown> = Promise.resolve();
    return {
      tensors: byName,
      metadata,
      headerBytes,
      read: (name: string) => {
        const e = byName.get(name);
        if (!e) return Promise.reject(new WeightsError(path, name, "not in this file"));
        const result = queue.then(() =>
          readExactly(file, dataStart + e.offset, e.byteLength, path)
        );
        queue = result.catch(() => {});
        return result;
      },
      readInto: (name: string, dst: Uint8Array, offset = 0) => {
        const e = byName.get(name);
        if (!e) return Promise.reject(new WeightsError(path, name, "not in this file"));
        try {
          checkRange(e, dst.byteLength, offset);
        } catch (err) {
          return Promise.reject(err);
        }
        const result = queue.then(async () => {
          await readExactly(file, dataStart + e.offset + offset, dst.byteLength, path, dst);
        });
        queue = result.catch(() => {});
        return result;
      },
      close: () => {
        try {
          file.close();
        } catch { /* already closed */ }
      },
    };
  } catch (e) {
    file.close();
    throw e;
  }
}

/** A tensor to write: name, dtype, shape and raw little-endian bytes. */
export interface TensorData {
  /** Tensor name. */
  name: string;
  /** Element type of `data`. */
  dtype: DType;
  /** Shape, outermost first. */
  shape: number[];
  /** Raw bytes. */
  data: Uint8Array;
}

/** Serialize tensors into safetensors bytes (8-byte aligned data, sorted names). */
export function encodeSafetensors(
  tensors: TensorData[],
  metadata: Record<string, string> = {},
): Uint8Array {
  const sorted = [...tensors].sort((a, b) => a.name < b.name ? -1 : 1);
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const t of sorted) {
    header[t.name] = {
      dtype: t.dtype,
      shape: t.shape,
      data_offsets: [offset, offset + t.data.byteLength],
    };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  while ((8 + json.length) % 8 !== 0) json += " ";
  const headerBytes = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + headerBytes.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let p = 8 + headerBytes.length;
  for (const t of sorted) {
    out.set(t.data, p);
    p += t.data.byteLength;
  }
  return out;
}

/** A tensor source over tensors already in memory (tests, benchmarks, generated models). */
export function memorySource(tensors: TensorData[], label = "(memory)"): TensorSource {
  const map = new Map<string, TensorInfo & { data: Uint8Array }>();
  for (const t of tensors) {
    const byteLength = t.shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[t.dtype];
    if (byteLength !== t.data.byteLength) {
      throw new WeightsError(
        label,
        t.name,
        `shape [${t.shape}] needs ${byteLength} bytes, got ${t.data.byteLength}`,
      );
    }
    map.set(t.name, {
      name: t.name,
      dtype: t.dtype,
      shape: t.shape,
      byteLength,
      file: label,
      data: t.data,
    });
  }
  return {
    tensors: map,
    read: (name) => {
      const t = map.get(name);
      return t ? Promise.resolve(t.data) : Promise.reject(new WeightsError(label, name, "missing"));
    },
    close: () => {},
  };
}
