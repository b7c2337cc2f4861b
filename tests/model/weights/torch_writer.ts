/**
 * Test-only writers: a tiny ZIP writer (stored or deflated entries, optional data descriptors and
 * ZIP64 records) and a hand-assembled pickle of a state dict in the shape `torch.save` writes.
 * Together they build small PyTorch checkpoints for the reader's tests.
 * @module
 */

import { crc32 } from "../../../src/model/weights/zip.ts";
import type { DType } from "../../../src/model/weights/dtype.ts";
import { DTYPE_BYTES } from "../../../src/model/weights/dtype.ts";

/** One file to put in an archive. */
export interface ZipInput {
  /** Entry name. */
  name: string;
  /** Uncompressed content. */
  data: Uint8Array;
  /** Deflate it (method 8) instead of storing it. */
  deflate?: boolean;
  /** Write sizes in a data descriptor (flag 0x08), zeros in the local header, as PyTorch does. */
  descriptor?: boolean;
  /** Override the uncompressed size written in the central directory. */
  claimSize?: number;
  /** Override the CRC-32 written. */
  claimCrc?: number;
}

/** Options of {@link writeZip}. */
export interface ZipOptions {
  /** Always write ZIP64 extra fields and the ZIP64 end records. */
  zip64?: boolean;
  /** Pad local headers so data starts on this alignment (PyTorch uses 64). */
  align?: number;
  /** Archive comment. */
  comment?: string;
}

/** Raw-deflate `data` with the platform's CompressionStream. */
export async function deflateRaw(data: Uint8Array): Promise<Uint8Array> {
  const s = new Blob([data as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
    new CompressionStream("deflate-raw"),
  );
  return new Uint8Array(await new Response(s).arrayBuffer());
}

class Bytes {
  parts: Uint8Array[] = [];
  length = 0;
  put(b: Uint8Array): void {
    this.parts.push(b);
    this.length += b.byteLength;
  }
  le(n: number, size: 1 | 2 | 4 | 8): void {
    const b = new Uint8Array(size);
    const dv = new DataView(b.buffer);
    if (size === 1) dv.setUint8(0, n);
    else if (size === 2) dv.setUint16(0, n, true);
    else if (size === 4) dv.setUint32(0, n, true);
    else dv.setBigUint64(0, BigInt(n), true);
    this.put(b);
  }
  concat(): Uint8Array {
    const out = new Uint8Array(this.length);
    let p = 0;
    for (const b of this.parts) {
      out.set(b, p);
      p += b.byteLength;
    }
    return out;
  }
}

/** Build a ZIP archive in memory. */
export async function writeZip(inputs: ZipInput[], opts: ZipOptions = {}): Promise<Uint8Array> {
  const enc = new TextEncoder();
  const out = new Bytes();
  const central = new Bytes();
  const z64 = opts.zip64 ?? false;
  for (const f of inputs) {
    const name = enc.encode(f.name);
    const body = f.deflate ? await deflateRaw(f.data) : f.data;
    const crc = f.claimCrc ?? crc32(f.data);
    const size = f.claimSize ?? f.data.byteLength;
    const flags = 0x800 | (f.descriptor ? 0x08 : 0);
    const method = f.deflate ? 8 : 0;
    const offset = out.length;
    let localExtra = z64 ? 20 : 0;
    let pad = 0;
    if (opts.align) {
      const start = offset + 30 + name.byteLength + localExtra;
      pad = (opts.align - ((start + 4) % opts.align)) % opts.align;
      localExtra += 4 + pad;
    }
    out.le(0x04034b50, 4);
    out.le(z64 ? 45 : 20, 2);
    out.le(flags, 2);
    out.le(method, 2);
    out.le(0, 4); // time, date
    out.le(f.descriptor ? 0 : crc, 4);
    out.le(f.descriptor ? 0 : z64 ? 0xffffffff : body.byteLength, 4);
    out.le(f.descriptor ? 0 : z64 ? 0xffffffff : size, 4);
    out.le(name.byteLength, 2);
    out.le(localExtra, 2);
    out.put(name);
    if (z64) {
      out.le(1, 2);
      out.le(16, 2);
      out.le(f.descriptor ? 0 : size, 8);
      out.le(f.descriptor ? 0 : body.byteLength, 8);
    }
    if (opts.align) {
      out.le(0x4246, 2); // "FB", PyTorch's padding field id
      out.le(pad, 2);
      out.put(new Uint8Array(pad));
    }
    out.put(body);
    if (f.descriptor) {
      out.le(0x08074b50, 4);
      out.le(crc, 4);
      if (z64) {
        out.le(body.byteLength, 8);
        out.le(size, 8);
      } else {
        out.le(body.byteLength, 4);
        out.le(size, 4);
      }
    }
    central.le(0x02014b50, 4);
    central.le(z64 ? 45 : 20, 2);
    central.le(z64 ? 45 : 20, 2);
    central.le(flags, 2);
    central.le(method, 2);
    central.le(0, 4);
    central.le(crc, 4);
    central.le(z64 ? 0xffffffff : body.byteLength, 4);
    central.le(z64 ? 0xffffffff : size, 4);
    central.le(name.byteLength, 2);
    central.le(z64 ? 28 : 0, 2);
    central.le(0, 2); // comment
    central.le(0, 2); // disk
    central.le(0, 2);
    central.le(0, 4);
    central.le(z64 ? 0xffffffff : offset, 4);
    central.put(name);
    if (z64) {
      central.le(1, 2);
      central.le(24, 2);
      central.le(size, 8);
      central.le(body.byteLength, 8);
      central.le(offset, 8);
    }
  }
  const cdOffset = out.length;
  const cd = central.concat();
  out.put(cd);
  finishZip(out, inputs.length, cdOffset, cd.byteLength, z64, opts.comment ?? "");
  return out.concat();
}

function finishZip(
  out: Bytes,
  count: number,
  cdOffset: number,
  cdSize: number,
  z64: boolean,
  comment: string,
  base = 0,
): void {
  if (z64) {
    const at = base + out.length;
    out.le(0x06064b50, 4);
    out.le(44, 8);
    out.le(45, 2);
    out.le(45, 2);
    out.le(0, 4);
    out.le(0, 4);
    out.le(count, 8);
    out.le(count, 8);
    out.le(cdSize, 8);
    out.le(cdOffset, 8);
    out.le(0x07064b50, 4);
    out.le(0, 4);
    out.le(at, 8);
    out.le(1, 4);
  }
  const c = new TextEncoder().encode(comment);
  out.le(0x06054b50, 4);
  out.le(0, 2);
  out.le(0, 2);
  out.le(z64 ? 0xffff : count, 2);
  out.le(z64 ? 0xffff : count, 2);
  out.le(z64 ? 0xffffffff : cdSize, 4);
  out.le(z64 ? 0xffffffff : cdOffset, 4);
  out.le(c.byteLength, 2);
  out.put(c);
}

/**
 * Write a ZIP64 archive with one stored entry whose data lies at `at` (beyond 4 GiB), as a sparse
 * file: only headers and the entry's bytes are written.
 */
export async function writeSparseZip64(
  path: string,
  name: string,
  data: Uint8Array,
  at: number,
): Promise<void> {
  const enc = new TextEncoder();
  const n = enc.encode(name);
  const local = new Bytes();
  local.le(0x04034b50, 4);
  local.le(45, 2);
  local.le(0x808, 2);
  local.le(0, 2);
  local.le(0, 4);
  local.le(0, 4);
  local.le(0, 4);
  local.le(0, 4);
  local.le(n.byteLength, 2);
  local.le(0, 2);
  local.put(n);
  local.put(data);
  const tail = new Bytes();
  const central = new Bytes();
  central.le(0x02014b50, 4);
  central.le(45, 2);
  central.le(45, 2);
  central.le(0x808, 2);
  central.le(0, 2);
  central.le(0, 4);
  central.le(crc32(data), 4);
  central.le(data.byteLength, 4);
  central.le(data.byteLength, 4);
  central.le(n.byteLength, 2);
  central.le(12, 2);
  central.le(0, 2);
  central.le(0, 2);
  central.le(0, 2);
  central.le(0, 4);
  central.le(0xffffffff, 4);
  central.put(n);
  central.le(1, 2);
  central.le(8, 2);
  central.le(at, 8);
  const cd = central.concat();
  const cdOffset = at + local.length + 16; // the data descriptor's room
  tail.put(cd);
  finishZip(tail, 1, cdOffset, cd.byteLength, true, "", cdOffset);
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    await file.seek(at, Deno.SeekMode.Start);
    await file.write(local.concat());
    await file.seek(cdOffset, Deno.SeekMode.Start);
    const t = tail.concat();
    let p = 0;
    while (p < t.byteLength) p += await file.write(t.subarray(p));
  } finally {
    file.close();
  }
}

const STORAGE_NAMES: Record<DType, string> = {
  F32: "FloatStorage",
  F16: "HalfStorage",
  BF16: "BFloat16Storage",
  F64: "DoubleStorage",
  I64: "LongStorage",
  I32: "IntStorage",
  I16: "ShortStorage",
  I8: "CharStorage",
  U8: "ByteStorage",
  BOOL: "BoolStorage",
};

/** A tensor entry of a hand-made state-dict pickle. */
export interface PickleTensor {
  /** Tensor name. */
  name: string;
  /** Storage element type. */
  dtype: DType;
  /** Storage key. */
  key: string;
  /** Storage size in elements. */
  numel: number;
  /** Offset in elements. */
  offset?: number;
  /** Shape. */
  shape: number[];
  /** Stride (row-major when omitted). */
  stride?: number[];
}

/** Options of {@link pickleStateDict}. */
export interface PickleOptions {
  /** Write protocol-4 style (FRAME, SHORT_BINUNICODE, STACK_GLOBAL, MEMOIZE). */
  proto4?: boolean;
  /** Wrap as an OrderedDict with a `_metadata` BUILD, tensors as `_rebuild_parameter`. */
  ordered?: boolean;
  /** Emit this `module name` global before the dict (to test the allowlist). */
  extraGlobal?: [string, string];
}

/** Row-major strides of a shape. */
export function rowMajor(shape: number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/** Hand-assemble the `data.pkl` of `torch.save(state_dict)`. */
export function pickleStateDict(tensors: PickleTensor[], opts: PickleOptions = {}): Uint8Array {
  const b = new Bytes();
  const enc = new TextEncoder();
  const p4 = opts.proto4 ?? false;
  let memo = 0;
  const put = (): void => {
    if (p4) b.le(0x94, 1);
    else if (memo < 256) {
      b.le(0x71, 1);
      b.le(memo, 1);
    } else {
      b.le(0x72, 1);
      b.le(memo, 4);
    }
    memo++;
  };
  const str = (s: string): void => {
    const u = enc.encode(s);
    if (p4 && u.byteLength < 256) {
      b.le(0x8c, 1);
      b.le(u.byteLength, 1);
    } else {
      b.le(0x58, 1);
      b.le(u.byteLength, 4);
    }
    b.put(u);
    put();
  };
  const int = (n: number): void => {
    if (n >= 0 && n < 256) {
      b.le(0x4b, 1);
      b.le(n, 1);
    } else if (n >= 0 && n < 65536) {
      b.le(0x4d, 1);
      b.le(n, 2);
    } else if (n >= -(2 ** 31) && n < 2 ** 31) {
      b.le(0x4a, 1);
      const x = new Uint8Array(4);
      new DataView(x.buffer).setInt32(0, n, true);
      b.put(x);
    } else {
      b.le(0x8a, 1);
      b.le(8, 1);
      const x = new Uint8Array(8);
      new DataView(x.buffer).setBigInt64(0, BigInt(n), true);
      b.put(x);
    }
  };
  const global = (module: string, name: string): void => {
    if (p4) {
      str(module);
      str(name);
      b.le(0x93, 1);
    } else {
      b.put(enc.encode(`c${module}\n${name}\n`));
    }
    put();
  };
  const tuple = (items: (() => void)[]): void => {
    if (items.length === 0) b.le(0x29, 1);
    else if (items.length <= 3) {
      items.forEach((f) => f());
      b.le(0x84 + items.length, 1);
    } else {
      b.le(0x28, 1);
      items.forEach((f) => f());
      b.le(0x74, 1);
    }
  };
  b.le(0x80, 1);
  b.le(p4 ? 4 : 2, 1);
  if (p4) b.put(new Uint8Array(9)); // FRAME placeholder, patched below
  if (opts.extraGlobal) {
    global(...opts.extraGlobal);
    b.le(0x30, 1); // POP
  }
  if (opts.ordered) {
    global("collections", "OrderedDict");
    b.le(0x29, 1);
    b.le(0x52, 1);
  } else {
    b.le(0x7d, 1);
  }
  put();
  b.le(0x28, 1); // MARK
  for (const t of tensors) {
    str(t.name);
    if (opts.ordered) global("torch._utils", "_rebuild_parameter");
    global("torch._utils", "_rebuild_tensor_v2");
    b.le(0x28, 1);
    tuple([
      () => str("storage"),
      () => global("torch", STORAGE_NAMES[t.dtype]),
      () => str(t.key),
      () => str("cpu"),
      () => int(t.numel),
    ]);
    b.le(0x51, 1); // BINPERSID
    int(t.offset ?? 0);
    tuple(t.shape.map((d) => () => int(d)));
    tuple((t.stride ?? rowMajor(t.shape)).map((d) => () => int(d)));
    b.le(0x89, 1); // NEWFALSE
    global("collections", "OrderedDict");
    b.le(0x29, 1);
    b.le(0x52, 1);
    put();
    b.le(0x74, 1); // TUPLE
    b.le(0x52, 1); // REDUCE
    put();
    if (opts.ordered) {
      // _rebuild_parameter(tensor, True, OrderedDict())
      b.le(0x88, 1);
      global("collections", "OrderedDict");
      b.le(0x29, 1);
      b.le(0x52, 1);
      b.le(0x87, 1); // TUPLE3
      b.le(0x52, 1);
    }
  }
  b.le(0x75, 1); // SETITEMS
  if (opts.ordered) {
    b.put(enc.encode("}")); // state: {'_metadata': {'': {'version': 1}}}
    str("_metadata");
    b.le(0x7d, 1);
    str("");
    b.le(0x7d, 1);
    str("version");
    int(1);
    b.le(0x73, 1);
    b.le(0x73, 1);
    b.le(0x73, 1);
    b.le(0x62, 1); // BUILD
  }
  b.le(0x2e, 1);
  const bytes = b.concat();
  if (p4) {
    const body = bytes.byteLength - 2 - 9;
    bytes[2] = 0x95;
    new DataView(bytes.buffer).setBigUint64(3, BigInt(body), true);
  }
  return bytes;
}

/** A tensor to put in a hand-made checkpoint. */
export interface CheckpointTensor {
  /** Tensor name. */
  name: string;
  /** Element type. */
  dtype: DType;
  /** Shape. */
  shape: number[];
  /** Little-endian bytes. */
  data: Uint8Array;
}

/** Build a PyTorch checkpoint (zip bytes) holding `tensors`, one storage each. */
export function writeCheckpoint(
  tensors: CheckpointTensor[],
  prefix = "archive",
  opts: PickleOptions & ZipOptions = {},
): Promise<Uint8Array> {
  const pts: PickleTensor[] = tensors.map((t, i) => ({
    name: t.name,
    dtype: t.dtype,
    key: String(i),
    numel: t.data.byteLength / DTYPE_BYTES[t.dtype],
    shape: t.shape,
  }));
  return writeZip([
    { name: `${prefix}/data.pkl`, data: pickleStateDict(pts, opts), descriptor: true },
    { name: `${prefix}/byteorder`, data: new TextEncoder().encode("little"), descriptor: true },
    ...tensors.map((t, i) => ({ name: `${prefix}/data/${i}`, data: t.data, descriptor: true })),
    { name: `${prefix}/version`, data: new TextEncoder().encode("3\n"), descriptor: true },
  ], { align: 64, ...opts });
}
