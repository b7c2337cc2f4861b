/**
 * A minimal, lazy ZIP reader for PyTorch checkpoints (`torch.save` writes a ZIP of stored entries).
 *
 * Reads the end-of-central-directory record (ZIP64 too: multi-GB shards), the central directory,
 * and, on first access to an entry, its local header to find where the data starts. Data is read
 * with seek + read on demand; the archive is never loaded whole. Stored entries (method 0) can be
 * read by range; small deflated entries (method 8, under {@link MAX_INFLATE_BYTES}) can be read
 * whole; anything else is refused naming the entry.
 * @module
 */

import { WeightsError } from "../../errors.ts";
import { readExactly } from "./safetensors.ts";

/** Compression method 0: stored. */
export const METHOD_STORED = 0;
/** Compression method 8: deflate. */
export const METHOD_DEFLATE = 8;
/** Largest deflated entry (compressed or not) this reader inflates. */
export const MAX_INFLATE_BYTES: number = 64 * 1024 * 1024;

/** Most entries accepted in one archive. */
const MAX_ENTRIES = 1_000_000;
/** Largest central directory accepted. */
const MAX_CENTRAL_DIR_BYTES = 256 * 1024 * 1024;

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const EOCD_BYTES = 22;
const ZIP64_LOCATOR_BYTES = 20;
const ZIP64_EOCD_BYTES = 56;
const CENTRAL_BYTES = 46;
const LOCAL_BYTES = 30;
const U16_MAX = 0xffff;
const U32_MAX = 0xffffffff;

/** One file of the archive, as the central directory describes it. */
export interface ZipEntry {
  /** Full name inside the archive (`archive/data/0`). */
  readonly name: string;
  /** Compression method (0 stored, 8 deflate, ...). */
  readonly method: number;
  /** General-purpose flags (bit 0: encrypted, bit 3: sizes in a data descriptor). */
  readonly flags: number;
  /** CRC-32 of the uncompressed data. */
  readonly crc32: number;
  /** Bytes of the data as stored in the archive. */
  readonly compressedSize: number;
  /** Bytes of the data once uncompressed. */
  readonly size: number;
  /** Offset of the entry's local header in the archive. */
  readonly localHeaderOffset: number;
}

function u64(dv: DataView, at: number, what: string, label: string): number {
  const v = dv.getBigUint64(at, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new WeightsError(label, "", `${what} ${v} is too large`);
  }
  return Number(v);
}

const CRC_TABLE: Uint32Array = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (the ZIP polynomial) of `data`, continuing from `crc` (0 to start). */
export function crc32(data: Uint8Array, crc = 0): number {
  let c = ~crc >>> 0;
  for (let i = 0; i < data.length; i++) c = CRC_TABLE[(c ^ data[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

/** Inflate raw deflate `data` that must produce exactly `size` bytes; `label` names the entry. */
async function inflateRaw(data: Uint8Array, size: number, label: string): Promise<Uint8Array> {
  const out = new Uint8Array(size);
  let got = 0;
  const stream = new Blob([data as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
    new DecompressionStream("deflate-raw"),
  );
  const reader = stream.getReader();
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      if (got + value.byteLength > size) {
        throw new WeightsError(
          label,
          "",
          `inflates to more than the ${size} bytes the directory says`,
        );
      }
      out.set(value, got);
      got += value.byteLength;
    }
  } catch (e) {
    if (e instanceof WeightsError) throw e;
    throw new WeightsError(label, "", `corrupt deflate data: ${(e as Error).message}`);
  } finally {
    reader.cancel().catch(() => {});
    reader.releaseLock();
  }
  if (got !== size) {
    throw new WeightsError(label, "", `inflates to ${got} bytes, the directory says ${size}`);
  }
  return out;
}

/** Parse central directory bytes into entries; `dataEnd` bounds every entry's data. */
function parseCentralDirectory(
  cd: Uint8Array,
  count: number,
  dataEnd: number,
  label: string,
): Map<string, ZipEntry> {
  const dv = new DataView(cd.buffer, cd.byteOffset, cd.byteLength);
  const names = new TextDecoder("utf-8");
  const entries = new Map<string, ZipEntry>();
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + CENTRAL_BYTES > cd.byteLength || dv.getUint32(p, true) !== SIG_CENTRAL) {
      throw new WeightsError(label, "", `central directory entry ${i} is malformed (at +${p})`);
    }
    const flags = dv.getUint16(p + 8, true);
    const method = dv.getUint16(p + 10, true);
    const crc = dv.getUint32(p + 16, true);
    let compressedSize = dv.getUint32(p + 20, true);
    let size = dv.getUint32(p + 24, true);
    const nameLen = dv.getUint16(p + 28, true);
    const extraLen = dv.getUint16(p + 30, true);
    const commentLen = dv.getUint16(p + 32, true);
    let disk = dv.getUint16(p + 34, true);
    let localHeaderOffset = dv.getUint32(p + 42, true);
    const end = p + CENTRAL_BYTES + nameLen + extraLen + commentLen;
    if (end > cd.byteLength) {
      throw new WeightsError(label, "", `central directory entry ${i} runs past the directory`);
    }
    const name = names.decode(cd.subarray(p + CENTRAL_BYTES, p + CENTRAL_BYTES + nameLen));
    // ZIP64 extended information: only the fields saturated in the fixed part are present.
    let x = p + CENTRAL_BYTES + nameLen;
    const xEnd = x + extraLen;
    while (x + 4 <= xEnd) {
      const id = dv.getUint16(x, true);
      const len = dv.getUint16(x + 2, true);
      if (x + 4 + len > xEnd) {
        throw new WeightsError(label, "", `entry "${name}": extra field runs past its end`);
      }
      if (id === 0x0001) {
        let q = x + 4;
        const take = (what: string): number => {
          if (q + 8 > x + 4 + len) {
            throw new WeightsError(
              label,
              "",
              `entry "${name}": ZIP64 extra field lacks the ${what}`,
            );
          }
          const v = u64(dv, q, `entry "${name}": ZIP64 ${what}`, label);
          q += 8;
          return v;
        };
        if (size === U32_MAX) size = take("size");
        if (compressedSize === U32_MAX) compressedSize = take("compressed size");
        if (localHeaderOffset === U32_MAX) localHeaderOffset = take("header offset");
        if (disk === U16_MAX) {
          if (q + 4 > x + 4 + len) {
            throw new WeightsError(label, "", `entry "${name}": ZIP64 extra field lacks the disk`);
          }
          disk = dv.getUint32(q, true);
        }
      }
      x += 4 + len;
    }
    if (disk !== 0) {
      throw new WeightsError(label, "", `entry "${name}": multi-disk archives are not supported`);
    }
    if (localHeaderOffset + LOCAL_BYTES + nameLen + compressedSize > dataEnd) {
      throw new WeightsError(
        label,
        "",
        `entry "${name}": its ${compressedSize} bytes at ${localHeaderOffset} run past the data area ` +
          `(${dataEnd} bytes; truncated file?)`,
      );
    }
    if (entries.has(name)) throw new WeightsError(label, "", `entry "${name}" appears twice`);
    entries.set(name, { name, method, flags, crc32: crc, compressedSize, size, localHeaderOffset });
    p = end;
  }
  return entries;
}

/** A ZIP archive open for lazy reading. Reads are serialized, so concurrent calls are safe. */
export class ZipReader {
  /** Every entry, by full name. */
  readonly entries: ReadonlyMap<string, ZipEntry>;
  /** Archive path (for messages). */
  readonly path: string;
  /** Archive size in bytes. */
  readonly size: number;
  #file: Deno.FsFile;
  #dataStart = new Map<string, number>();
  #queue: Promise<unknown> = Promise.resolve();
  #closed = false;

  private constructor(
    path: string,
    file: Deno.FsFile,
    size: number,
    entries: Map<string, ZipEntry>,
  ) {
    this.path = path;
    this.#file = file;
    this.size = size;
    this.entries = entries;
  }

  /** Open `path` and read its central directory (only the tail of the file is read). */
  static async open(path: string): Promise<ZipReader> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true });
    } catch (e) {
      throw new WeightsError(path, "", `cannot open: ${(e as Error).message}`);
    }
    try {
      const size = (await file.stat()).size;
      const entries = await ZipReader.#readDirectory(file, size, path);
      return new ZipReader(path, file, size, entries);
    } catch (e) {
      file.close();
      throw e;
    }
  }

  static async #readDirectory(
    file: Deno.FsFile,
    size: number,
    label: string,
  ): Promise<Map<string, ZipEntry>> {
    const head = await readExactly(file, 0, Math.min(size, 4), label);
    const headSig = size >= 4 ? new DataView(head.buffer).getUint32(0, true) : 0;
    if (size < EOCD_BYTES) {
      throw new WeightsError(label, "", `not a ZIP archive (${size} bytes)`);
    }
    // The EOCD is the last 22 bytes plus a comment of up to 65535 bytes.
    const tailLen = Math.min(size, EOCD_BYTES + U16_MAX + ZIP64_LOCATOR_BYTES);
    const tailStart = size - tailLen;
    const tail = await readExactly(file, tailStart, tailLen, label);
    const tv = new DataView(tail.buffer);
    let eocd = -1;
    for (let p = tailLen - EOCD_BYTES; p >= 0; p--) {
      if (
        tv.getUint32(p, true) === SIG_EOCD &&
        p + EOCD_BYTES + tv.getUint16(p + 20, true) === tailLen
      ) {
        eocd = p;
        break;
      }
    }
    if (eocd < 0) {
      if (head[0] === 0x80 && head[1] >= 2) {
        throw new WeightsError(
          label,
          "",
          "legacy PyTorch serialization (a bare pickle, pre-1.6 format) is not supported; " +
            "re-save it with a current torch.save or convert it to safetensors",
        );
      }
      if (headSig === SIG_LOCAL) {
        throw new WeightsError(
          label,
          "",
          "truncated ZIP archive: end of central directory not found",
        );
      }
      throw new WeightsError(label, "", "not a ZIP archive (no end of central directory record)");
    }
    const diskNo = tv.getUint16(eocd + 4, true);
    const cdDisk = tv.getUint16(eocd + 6, true);
    let count = tv.getUint16(eocd + 10, true);
    let cdSize = tv.getUint32(eocd + 12, true);
    let cdOffset = tv.getUint32(eocd + 16, true);
    let recordStart = tailStart + eocd;
    const loc = eocd - ZIP64_LOCATOR_BYTES;
    if (loc >= 0 && tv.getUint32(loc, true) === SIG_ZIP64_LOCATOR) {
      const z64At = u64(tv, loc + 8, "ZIP64 end of central directory offset", label);
      if (z64At + ZIP64_EOCD_BYTES > tailStart + loc) {
        throw new WeightsError(
          label,
          "",
          `ZIP64 end of central directory offset ${z64At} is out of range`,
        );
      }
      const z = await readExactly(file, z64At, ZIP64_EOCD_BYTES, label);
      const zv = new DataView(z.buffer);
      if (zv.getUint32(0, true) !== SIG_ZIP64_EOCD) {
        throw new WeightsError(label, "", `no ZIP64 end of central directory record at ${z64At}`);
      }
      if (zv.getUint32(16, true) !== 0 || zv.getUint32(20, true) !== 0) {
        throw new WeightsError(label, "", "multi-disk archives are not supported");
      }
      count = u64(zv, 32, "entry count", label);
      cdSize = u64(zv, 40, "central directory size", label);
      cdOffset = u64(zv, 48, "central directory offset", label);
      recordStart = z64At;
    } else if (count === U16_MAX || cdSize === U32_MAX || cdOffset === U32_MAX) {
      throw new WeightsError(
        label,
        "",
        "ZIP64 archive without its ZIP64 end of central directory locator",
      );
    } else if (diskNo !== 0 || cdDisk !== 0) {
      throw new WeightsError(label, "", "multi-disk archives are not supported");
    }
    if (count > MAX_ENTRIES) throw new WeightsError(label, "", `too many entries (${count})`);
    if (cdSize > MAX_CENTRAL_DIR_BYTES || cdSize < count * CENTRAL_BYTES) {
      throw new WeightsError(
        label,
        "",
        `central directory size ${cdSize} is implausible for ${count} entries`,
      );
    }
    if (cdOffset + cdSize > recordStart) {
      throw new WeightsError(
        label,
        "",
        `central directory (${cdSize} bytes at ${cdOffset}) overlaps its end record at ${recordStart}`,
      );
    }
    const cd = await readExactly(file, cdOffset, cdSize, label);
    return parseCentralDirectory(cd, count, cdOffset, label);
  }

  #entry(nameOrEntry: string | ZipEntry): ZipEntry {
    if (this.#closed) throw new WeightsError(this.path, "", "archive is closed");
    if (typeof nameOrEntry !== "string") return nameOrEntry;
    const e = this.entries.get(nameOrEntry);
    if (!e) throw new WeightsError(this.path, "", `no entry "${nameOrEntry}" in the archive`);
    return e;
  }

  /** Run one I/O job after the previous ones (seek + read on a shared file must not interleave). */
  #serial<T>(job: () => Promise<T>): Promise<T> {
    const guarded = async (): Promise<T> => {
      if (this.#closed) throw new WeightsError(this.path, "", "archive is closed");
      try {
        return await job();
      } catch (e) {
        if (e instanceof WeightsError) throw e;
        throw new WeightsError(this.path, "", `read failed: ${(e as Error)?.message ?? e}`);
      }
    };
    const run = this.#queue.then(guarded, guarded);
    this.#queue = run.catch(() => {});
    return run;
  }

  async #dataOffset(e: ZipEntry): Promise<number> {
    const known = this.#dataStart.get(e.name);
    if (known !== undefined) return known;
    const h = await readExactly(this.#file, e.localHeaderOffset, LOCAL_BYTES, this.path);
    const hv = new DataView(h.buffer);
    if (hv.getUint32(0, true) !== SIG_LOCAL) {
      throw new WeightsError(
        this.path,
        "",
        `entry "${e.name}": no local header at ${e.localHeaderOffset}`,
      );
    }
    const nameLen = hv.getUint16(26, true);
    const extraLen = hv.getUint16(28, true);
    if (hv.getUint16(8, true) !== e.method) {
      throw this.#error(
        e,
        "has a local header that disagrees with the directory on the compression method",
      );
    }
    const start = e.localHeaderOffset + LOCAL_BYTES + nameLen + extraLen;
    const name = await readExactly(
      this.#file,
      e.localHeaderOffset + LOCAL_BYTES,
      nameLen,
      this.path,
    );
    if (new TextDecoder().decode(name) !== e.name) {
      throw new WeightsError(
        this.path,
        "",
        `entry "${e.name}": its local header names another file`,
      );
    }
    // With flag 0x08 the local sizes are 0 (a data descriptor follows the data): trust the directory.
    if (start + e.compressedSize > this.size) {
      throw new WeightsError(
        this.path,
        "",
        `entry "${e.name}": data (${e.compressedSize} bytes at ${start}) runs past the end of the ` +
          `file (${this.size} bytes; truncated?)`,
      );
    }
    this.#dataStart.set(e.name, start);
    return start;
  }

  /** Offset in the archive of the first data byte of an entry (reads its local header once). */
  async dataOffset(entry: string | ZipEntry): Promise<number> {
    const e = this.#entry(entry);
    return await this.#serial(() => this.#dataOffset(e));
  }

  /**
   * Read `length` bytes at `offset` of a STORED entry's data. Compressed entries are refused (read
   * them whole with {@link ZipReader.readEntry}). No CRC check: the range is usually partial.
   */
  async readRange(
    entry: string | ZipEntry,
    offset: number,
    length: number,
    into?: Uint8Array,
  ): Promise<Uint8Array> {
    const e = this.#entry(entry);
    this.#checkReadable(e);
    if (e.method !== METHOD_STORED) {
      throw this.#error(
        e,
        `is compressed (method ${e.method}); only stored entries can be read by range`,
      );
    }
    if (
      !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 ||
      offset + length > e.size
    ) {
      throw this.#error(e, `has no range ${offset}+${length}: it is outside its ${e.size} bytes`);
    }
    return await this.#serial(async () => {
      const start = await this.#dataOffset(e);
      return readExactly(this.#file, start + offset, length, this.path, into);
    });
  }

  /**
   * Read a whole entry: stored, or deflated when at most {@link MAX_INFLATE_BYTES}. The CRC-32 is
   * checked. `maxBytes` refuses entries larger than the caller expects.
   */
  async readEntry(entry: string | ZipEntry, maxBytes = MAX_INFLATE_BYTES): Promise<Uint8Array> {
    const e = this.#entry(entry);
    this.#checkReadable(e);
    if (e.size > maxBytes) {
      throw this.#error(e, `is ${e.size} bytes, more than the ${maxBytes} allowed`);
    }
    if (e.method !== METHOD_STORED && e.method !== METHOD_DEFLATE) {
      throw this.#error(e, `uses compression method ${e.method}, which is not supported`);
    }
    if (
      e.method === METHOD_DEFLATE &&
      (e.size > MAX_INFLATE_BYTES || e.compressedSize > MAX_INFLATE_BYTES)
    ) {
      throw this.#error(
        e,
        `is deflated and too large (${e.size} bytes) to inflate; re-save it uncompressed`,
      );
    }
    if (e.method === METHOD_STORED && e.compressedSize !== e.size) {
      throw this.#error(e, `is stored but its sizes differ (${e.compressedSize} vs ${e.size})`);
    }
    return await this.#serial(async () => {
      const start = await this.#dataOffset(e);
      const raw = await readExactly(this.#file, start, e.compressedSize, this.path);
      const data = e.method === METHOD_STORED
        ? raw
        : await inflateRaw(raw, e.size, `${this.path}: entry "${e.name}"`);
      const got = crc32(data);
      if (got !== e.crc32) {
        throw this.#error(
          e,
          `fails its CRC-32 check (stored ${e.crc32.toString(16)}, computed ${
            got.toString(16)
          }); ` +
            "corrupt file",
        );
      }
      return data;
    });
  }

  #error(e: ZipEntry, detail: string): WeightsError {
    return new WeightsError(this.path, "", `entry "${e.name}" ${detail}`);
  }

  #checkReadable(e: ZipEntry): void {
    if (e.flags & 1) throw this.#error(e, "is encrypted");
  }

  /** Close the archive file. Further reads fail. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#file.close();
    } catch { /* already closed */ }
  }
}

/** Open a ZIP archive for lazy reading. */
export function openZip(path: string): Promise<ZipReader> {
  return ZipReader.open(path);
}
