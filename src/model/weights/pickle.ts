/**
 * A restricted unpickler for the `data.pkl` of a `torch.save(state_dict)` checkpoint.
 *
 * It never executes anything: it knows the opcodes `torch.save` emits (protocol 2, plus the
 * protocol 4/5 framing, memo and unicode opcodes), and resolves `GLOBAL` only against a fixed
 * allowlist ({@link ALLOWED_GLOBALS}) whose meaning is built in: `OrderedDict()` makes a dict, the
 * `torch._utils._rebuild_*` functions make a {@link TorchTensor} description, storage classes and
 * dtypes become markers. Persistent ids (`('storage', type, key, location, numel)`) become
 * {@link TorchStorage} descriptions. Any other global or opcode, and any malformed or truncated
 * input, throws a {@link WeightsError} naming the file, the opcode or global, and the offset.
 * Work and memory are linear in the input size, so hostile input cannot hang or blow up.
 * @module
 */

import { WeightsError } from "../../errors.ts";
import type { DType } from "./dtype.ts";

/** Largest pickle accepted (a 7B checkpoint's `data.pkl` is tens of kilobytes). */
export const MAX_PICKLE_BYTES: number = 64 * 1024 * 1024;

/** A Python tuple. */
export class PickleTuple {
  /** Wrap the tuple's items. */
  constructor(readonly items: readonly PickleValue[]) {}
}

/** A global the allowlist admits, as pushed by `GLOBAL` / `STACK_GLOBAL`. */
export class PickleGlobal {
  /** `module` and `name` as written in the pickle (`torch._utils`, `_rebuild_tensor_v2`). */
  constructor(readonly module: string, readonly name: string) {}
  /** `module.name`. */
  get qualified(): string {
    return `${this.module}.${this.name}`;
  }
}

/** A dtype global such as `torch.bfloat16`. */
export class TorchDType {
  /** `name` is the torch spelling, `dtype` its safetensors equivalent. */
  constructor(readonly name: string, readonly dtype: DType) {}
}

/** A storage class global such as `torch.BFloat16Storage` (`dtype` null: untyped bytes). */
export class TorchStorageType {
  /** `name` is the class name, `dtype` its element type (null for `UntypedStorage`). */
  constructor(readonly name: string, readonly dtype: DType | null) {}
}

/** A storage a persistent id refers to: the file `data/<key>` of the archive. */
export class TorchStorage {
  /** Storage class, archive key, device string, and size in elements of the class. */
  constructor(
    readonly type: TorchStorageType,
    readonly key: string,
    readonly location: string,
    readonly numel: number,
  ) {}
}

/** What `_rebuild_tensor*` describes: a view into a storage. Offset and strides in elements. */
export class TorchTensor {
  /** `dtype` is the tensor's element type (the storage's, or the explicit one of `_v3`). */
  constructor(
    readonly storage: TorchStorage,
    readonly offset: number,
    readonly shape: readonly number[],
    readonly stride: readonly number[],
    readonly dtype: DType,
  ) {}
}

/** Keys a dict may have (hashable primitives only). */
export type PickleKey = string | number | bigint | boolean | null;

/** Any value this unpickler produces. */
export type PickleValue =
  | PickleKey
  | PickleValue[]
  | PickleTuple
  | Map<PickleKey, PickleValue>
  | PickleGlobal
  | TorchDType
  | TorchStorageType
  | TorchStorage
  | TorchTensor;

const STORAGE_TYPES: Readonly<Record<string, DType>> = {
  FloatStorage: "F32",
  HalfStorage: "F16",
  BFloat16Storage: "BF16",
  DoubleStorage: "F64",
  LongStorage: "I64",
  IntStorage: "I32",
  ShortStorage: "I16",
  CharStorage: "I8",
  ByteStorage: "U8",
  BoolStorage: "BOOL",
};

const TORCH_DTYPES: Readonly<Record<string, DType>> = {
  float32: "F32",
  float: "F32",
  float16: "F16",
  half: "F16",
  bfloat16: "BF16",
  float64: "F64",
  double: "F64",
  int64: "I64",
  long: "I64",
  int32: "I32",
  int: "I32",
  int16: "I16",
  short: "I16",
  int8: "I8",
  uint8: "U8",
  bool: "BOOL",
};

const REBUILD_FUNCTIONS = [
  "_rebuild_tensor",
  "_rebuild_tensor_v2",
  "_rebuild_tensor_v3",
  "_rebuild_parameter",
  "_rebuild_parameter_with_state",
] as const;

/** Every `module.name` a pickle may reference; anything else is refused. */
export const ALLOWED_GLOBALS: readonly string[] = [
  "collections.OrderedDict",
  ...REBUILD_FUNCTIONS.map((f) => `torch._utils.${f}`),
  ...Object.keys(STORAGE_TYPES).map((s) => `torch.${s}`),
  "torch.storage.UntypedStorage",
  "torch.UntypedStorage",
  ...Object.keys(TORCH_DTYPES).map((d) => `torch.${d}`),
];

const ALLOWED = new Set(ALLOWED_GLOBALS);

function resolveGlobal(module: string, name: string): PickleValue {
  if (module === "torch" && Object.hasOwn(STORAGE_TYPES, name)) {
    return new TorchStorageType(name, STORAGE_TYPES[name]);
  }
  if ((module === "torch" || module === "torch.storage") && name === "UntypedStorage") {
    return new TorchStorageType(name, null);
  }
  if (module === "torch" && Object.hasOwn(TORCH_DTYPES, name)) {
    return new TorchDType(name, TORCH_DTYPES[name]);
  }
  return new PickleGlobal(module, name);
}

const OPCODE_NAMES: Readonly<Record<number, string>> = {
  0x80: "PROTO",
  0x95: "FRAME",
  0x2e: "STOP",
  0x7d: "EMPTY_DICT",
  0x64: "DICT",
  0x5d: "EMPTY_LIST",
  0x6c: "LIST",
  0x29: "EMPTY_TUPLE",
  0x74: "TUPLE",
  0x85: "TUPLE1",
  0x86: "TUPLE2",
  0x87: "TUPLE3",
  0x28: "MARK",
  0x30: "POP",
  0x31: "POP_MARK",
  0x58: "BINUNICODE",
  0x8c: "SHORT_BINUNICODE",
  0x8d: "BINUNICODE8",
  0x4a: "BININT",
  0x4b: "BININT1",
  0x4d: "BININT2",
  0x8a: "LONG1",
  0x89: "NEWFALSE",
  0x88: "NEWTRUE",
  0x4e: "NONE",
  0x47: "BINFLOAT",
  0x63: "GLOBAL",
  0x93: "STACK_GLOBAL",
  0x52: "REDUCE",
  0x62: "BUILD",
  0x73: "SETITEM",
  0x75: "SETITEMS",
  0x61: "APPEND",
  0x65: "APPENDS",
  0x71: "BINPUT",
  0x72: "LONG_BINPUT",
  0x94: "MEMOIZE",
  0x68: "BINGET",
  0x6a: "LONG_BINGET",
  0x51: "BINPERSID",
};

/** Names of opcodes this unpickler refuses, for clearer messages. */
const KNOWN_UNSUPPORTED: Readonly<Record<number, string>> = {
  0x49: "INT",
  0x4c: "LONG",
  0x8b: "LONG4",
  0x53: "STRING",
  0x54: "BINSTRING",
  0x55: "SHORT_BINSTRING",
  0x56: "UNICODE",
  0x42: "BINBYTES",
  0x43: "SHORT_BINBYTES",
  0x8e: "BINBYTES8",
  0x96: "BYTEARRAY8",
  0x97: "NEXT_BUFFER",
  0x98: "READONLY_BUFFER",
  0x46: "FLOAT",
  0x70: "PUT",
  0x67: "GET",
  0x50: "PERSID",
  0x32: "DUP",
  0x69: "INST",
  0x6f: "OBJ",
  0x81: "NEWOBJ",
  0x92: "NEWOBJ_EX",
  0x82: "EXT1",
  0x83: "EXT2",
  0x84: "EXT4",
  0x8f: "EMPTY_SET",
  0x90: "ADDITEMS",
  0x91: "FROZENSET",
};

function describe(v: PickleValue): string {
  if (v === null) return "None";
  if (typeof v === "string") {
    return `str ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + "…" : v)}`;
  }
  if (typeof v === "number" || typeof v === "bigint" || typeof v === "boolean") return String(v);
  if (Array.isArray(v)) return `list of ${v.length}`;
  if (v instanceof PickleTuple) return `tuple of ${v.items.length}`;
  if (v instanceof Map) return `dict of ${v.size}`;
  if (v instanceof PickleGlobal) return v.qualified;
  if (v instanceof TorchDType) return `torch.${v.name}`;
  if (v instanceof TorchStorageType) return `torch.${v.name}`;
  if (v instanceof TorchStorage) return `storage "${v.key}"`;
  return "tensor";
}

function opName(op: number): string {
  const name = OPCODE_NAMES[op] ?? KNOWN_UNSUPPORTED[op];
  const ch = op >= 0x20 && op < 0x7f ? ` '${String.fromCharCode(op)}'` : "";
  return `${name ?? "unknown opcode"} (0x${op.toString(16).padStart(2, "0")}${ch})`;
}

/** The running unpickler: one instance per pickle. */
class Unpickler {
  readonly #data: Uint8Array;
  readonly #dv: DataView;
  readonly #label: string;
  #pos = 0;
  #opAt = 0;
  #op = 0;
  readonly #stack: PickleValue[] = [];
  readonly #marks: number[] = [];
  readonly #memo = new Map<number, PickleValue>();
  readonly #utf8 = new TextDecoder("utf-8", { fatal: true });

  constructor(data: Uint8Array, label: string) {
    this.#data = data;
    this.#dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
    this.#label = label;
  }

  #fail(detail: string): WeightsError {
    return new WeightsError(
      this.#label,
      "",
      `pickle: ${detail} (opcode ${opName(this.#op)} at offset ${this.#opAt})`,
    );
  }

  #need(n: number): number {
    if (n > this.#data.byteLength - this.#pos) {
      throw this.#fail(
        `truncated: needs ${n} more bytes, ${this.#data.byteLength - this.#pos} left`,
      );
    }
    const at = this.#pos;
    this.#pos += n;
    return at;
  }

  #u8(): number {
    return this.#data[this.#need(1)];
  }
  #u16(): number {
    return this.#dv.getUint16(this.#need(2), true);
  }
  #u32(): number {
    return this.#dv.getUint32(this.#need(4), true);
  }
  #u64(): number {
    const v = this.#dv.getBigUint64(this.#need(8), true);
    if (v > BigInt(this.#data.byteLength)) throw this.#fail(`length ${v} exceeds the pickle`);
    return Number(v);
  }

  #text(n: number): string {
    const at = this.#need(n);
    try {
      return this.#utf8.decode(this.#data.subarray(at, at + n));
    } catch {
      throw this.#fail("string is not valid UTF-8");
    }
  }

  #line(): string {
    const start = this.#pos;
    const limit = Math.min(this.#data.byteLength, start + 1024);
    for (let i = start; i < limit; i++) {
      if (this.#data[i] === 0x0a) {
        this.#pos = i + 1;
        let s = "";
        for (let j = start; j < i; j++) {
          const c = this.#data[j];
          if (c < 0x20 || c > 0x7e) throw this.#fail("GLOBAL name is not printable ASCII");
          s += String.fromCharCode(c);
        }
        return s;
      }
    }
    throw this.#fail("GLOBAL name has no end of line");
  }

  #push(v: PickleValue): void {
    this.#stack.push(v);
  }

  #floor(): number {
    return this.#marks.length ? this.#marks[this.#marks.length - 1] : 0;
  }

  #pop(): PickleValue {
    if (this.#stack.length <= this.#floor()) throw this.#fail("stack underflow");
    return this.#stack.pop()!;
  }

  #top(): PickleValue {
    if (this.#stack.length <= this.#floor()) throw this.#fail("stack underflow");
    return this.#stack[this.#stack.length - 1];
  }

  #popMark(): PickleValue[] {
    const m = this.#marks.pop();
    if (m === undefined) throw this.#fail("no MARK on the stack");
    return this.#stack.splice(m);
  }

  #popN(n: number): PickleValue[] {
    if (this.#stack.length - this.#floor() < n) throw this.#fail("stack underflow");
    return this.#stack.splice(this.#stack.length - n);
  }

  #key(k: PickleValue): PickleKey {
    if (
      k === null || typeof k === "string" || typeof k === "number" || typeof k === "bigint" ||
      typeof k === "boolean"
    ) {
      return k;
    }
    throw this.#fail(`unsupported dict key (${describe(k)})`);
  }

  #dict(target: PickleValue, items: PickleValue[]): void {
    if (!(target instanceof Map)) throw this.#fail(`cannot set items on ${describe(target)}`);
    if (items.length % 2) throw this.#fail("odd number of items for a dict");
    for (let i = 0; i < items.length; i += 2) target.set(this.#key(items[i]), items[i + 1]);
  }

  #list(target: PickleValue, items: PickleValue[]): void {
    if (!Array.isArray(target)) throw this.#fail(`cannot append to ${describe(target)}`);
    for (const it of items) target.push(it);
  }

  #put(index: number): void {
    this.#memo.set(index, this.#top());
  }

  #get(index: number): void {
    const v = this.#memo.get(index);
    if (v === undefined) throw this.#fail(`memo index ${index} was never stored`);
    this.#push(v);
  }

  #int(v: PickleValue, what: string): number {
    if (typeof v === "number" && Number.isSafeInteger(v)) return v;
    if (typeof v === "boolean") return v ? 1 : 0;
    throw this.#fail(`${what} must be an integer, got ${describe(v)}`);
  }

  #ints(v: PickleValue, what: string): number[] {
    const items = v instanceof PickleTuple ? v.items : Array.isArray(v) ? v : null;
    if (!items) throw this.#fail(`${what} must be a tuple of integers, got ${describe(v)}`);
    if (items.length > 64) throw this.#fail(`${what} has ${items.length} dimensions`);
    return items.map((x) => this.#int(x, what));
  }

  #persistent(pid: PickleValue): TorchStorage {
    if (!(pid instanceof PickleTuple) || pid.items.length !== 5 || pid.items[0] !== "storage") {
      throw this.#fail(
        `persistent id is not ('storage', type, key, location, numel): ${describe(pid)}`,
      );
    }
    const [, type, key, location, numel] = pid.items;
    if (!(type instanceof TorchStorageType)) {
      throw this.#fail(`persistent id has storage type ${describe(type)}`);
    }
    if (typeof key !== "string" || typeof location !== "string") {
      throw this.#fail("persistent id key and location must be strings");
    }
    const n = this.#int(numel, "storage size");
    if (n < 0) throw this.#fail(`storage size ${n} is negative`);
    return new TorchStorage(type, key, location, n);
  }

  #tensor(
    storage: PickleValue,
    offset: PickleValue,
    size: PickleValue,
    stride: PickleValue,
    dtype: DType | null,
  ): TorchTensor {
    if (!(storage instanceof TorchStorage)) {
      throw this.#fail(`tensor storage must be a persistent storage, got ${describe(storage)}`);
    }
    const t = storage.type.dtype;
    if (dtype !== null && t !== null && dtype !== t) {
      throw this.#fail(`tensor of ${dtype} over a storage of ${t}`);
    }
    const d = dtype ?? t;
    if (d === null) throw this.#fail("tensor over an untyped storage without a dtype");
    return new TorchTensor(
      storage,
      this.#int(offset, "storage offset"),
      this.#ints(size, "size"),
      this.#ints(stride, "stride"),
      d,
    );
  }

  #call(fn: PickleValue, args: PickleValue): PickleValue {
    if (!(args instanceof PickleTuple)) {
      throw this.#fail(`REDUCE arguments are ${describe(args)}, not a tuple`);
    }
    const a = args.items;
    const arity = (min: number, max: number): void => {
      if (a.length < min || a.length > max) {
        throw this.#fail(`${describe(fn)} called with ${a.length} arguments`);
      }
    };
    if (!(fn instanceof PickleGlobal)) throw this.#fail(`cannot call ${describe(fn)}`);
    switch (fn.qualified) {
      case "collections.OrderedDict":
        arity(0, 0);
        return new Map();
      case "torch._utils._rebuild_tensor":
        arity(4, 4);
        return this.#tensor(a[0], a[1], a[2], a[3], null);
      case "torch._utils._rebuild_tensor_v2":
        arity(6, 7);
        return this.#tensor(a[0], a[1], a[2], a[3], null);
      case "torch._utils._rebuild_tensor_v3": {
        arity(7, 8);
        if (!(a[6] instanceof TorchDType)) throw this.#fail(`dtype argument is ${describe(a[6])}`);
        return this.#tensor(a[0], a[1], a[2], a[3], a[6].dtype);
      }
      case "torch._utils._rebuild_parameter":
      case "torch._utils._rebuild_parameter_with_state":
        arity(3, 4);
        if (!(a[0] instanceof TorchTensor)) throw this.#fail(`parameter data is ${describe(a[0])}`);
        return a[0];
    }
    throw this.#fail(`cannot call ${fn.qualified}`);
  }

  #global(module: string, name: string): void {
    const q = `${module}.${name}`;
    if (!ALLOWED.has(q)) throw this.#fail(`forbidden global ${q}`);
    this.#push(resolveGlobal(module, name));
  }

  run(): PickleValue {
    const data = this.#data;
    while (this.#pos < data.byteLength) {
      this.#opAt = this.#pos;
      const op = data[this.#pos++];
      this.#op = op;
      switch (op) {
        case 0x80: { // PROTO
          const v = this.#u8();
          if (v > 5) throw this.#fail(`unsupported protocol ${v}`);
          break;
        }
        case 0x95: // FRAME: framing is transparent; check it fits.
          if (this.#u64() > data.byteLength - this.#pos) {
            throw this.#fail("frame runs past the end");
          }
          break;
        case 0x2e: // STOP
          if (this.#stack.length === 0) throw this.#fail("stack underflow");
          return this.#stack[this.#stack.length - 1];
        case 0x7d: // EMPTY_DICT
          this.#push(new Map());
          break;
        case 0x64: { // DICT
          const m = new Map<PickleKey, PickleValue>();
          this.#dict(m, this.#popMark());
          this.#push(m);
          break;
        }
        case 0x5d: // EMPTY_LIST
          this.#push([]);
          break;
        case 0x6c: // LIST
          this.#push(this.#popMark());
          break;
        case 0x29: // EMPTY_TUPLE
          this.#push(new PickleTuple([]));
          break;
        case 0x74: // TUPLE
          this.#push(new PickleTuple(this.#popMark()));
          break;
        case 0x85:
        case 0x86:
        case 0x87: // TUPLE1..3
          this.#push(new PickleTuple(this.#popN(op - 0x84)));
          break;
        case 0x28: // MARK
          this.#marks.push(this.#stack.length);
          break;
        case 0x30: // POP
          this.#pop();
          break;
        case 0x31: // POP_MARK
          this.#popMark();
          break;
        case 0x58: // BINUNICODE
          this.#push(this.#text(this.#u32()));
          break;
        case 0x8c: // SHORT_BINUNICODE
          this.#push(this.#text(this.#u8()));
          break;
        case 0x8d: // BINUNICODE8
          this.#push(this.#text(this.#u64()));
          break;
        case 0x4a: // BININT
          this.#push(this.#dv.getInt32(this.#need(4), true));
          break;
        case 0x4b: // BININT1
          this.#push(this.#u8());
          break;
        case 0x4d: // BININT2
          this.#push(this.#u16());
          break;
        case 0x8a: { // LONG1: little-endian two's complement of n bytes
          const n = this.#u8();
          const at = this.#need(n);
          let v = 0n;
          for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(data[at + i]);
          if (n > 0 && data[at + n - 1] & 0x80) v -= 1n << BigInt(8 * n);
          const small = v >= BigInt(Number.MIN_SAFE_INTEGER) &&
            v <= BigInt(Number.MAX_SAFE_INTEGER);
          this.#push(small ? Number(v) : v);
          break;
        }
        case 0x89: // NEWFALSE
          this.#push(false);
          break;
        case 0x88: // NEWTRUE
          this.#push(true);
          break;
        case 0x4e: // NONE
          this.#push(null);
          break;
        case 0x47: // BINFLOAT (big-endian)
          this.#push(this.#dv.getFloat64(this.#need(8), false));
          break;
        case 0x63: { // GLOBAL
          const module = this.#line();
          const name = this.#line();
          this.#global(module, name);
          break;
        }
        case 0x93: { // STACK_GLOBAL
          const name = this.#pop();
          const module = this.#pop();
          if (typeof module !== "string" || typeof name !== "string") {
            throw this.#fail("STACK_GLOBAL needs two strings");
          }
          this.#global(module, name);
          break;
        }
        case 0x52: { // REDUCE
          const args = this.#pop();
          const fn = this.#pop();
          this.#push(this.#call(fn, args));
          break;
        }
        case 0x62: { // BUILD: state of an OrderedDict (`_metadata`) or a tensor is ignored.
          const state = this.#pop();
          const target = this.#top();
          if (!(target instanceof Map) && !(target instanceof TorchTensor)) {
            throw this.#fail(`cannot BUILD ${describe(target)} with ${describe(state)}`);
          }
          break;
        }
        case 0x73: { // SETITEM
          const v = this.#pop();
          const k = this.#pop();
          this.#dict(this.#top(), [k, v]);
          break;
        }
        case 0x75: { // SETITEMS
          const items = this.#popMark();
          this.#dict(this.#top(), items);
          break;
        }
        case 0x61: { // APPEND
          const v = this.#pop();
          this.#list(this.#top(), [v]);
          break;
        }
        case 0x65: { // APPENDS
          const items = this.#popMark();
          this.#list(this.#top(), items);
          break;
        }
        case 0x71: // BINPUT
          this.#put(this.#u8());
          break;
        case 0x72: // LONG_BINPUT
          this.#put(this.#u32());
          break;
        case 0x94: // MEMOIZE
          this.#put(this.#memo.size);
          break;
        case 0x68: // BINGET
          this.#get(this.#u8());
          break;
        case 0x6a: // LONG_BINGET
          this.#get(this.#u32());
          break;
        case 0x51: // BINPERSID
          this.#push(this.#persistent(this.#pop()));
          break;
        default: {
          const name = KNOWN_UNSUPPORTED[op];
          const hex = `0x${op.toString(16).padStart(2, "0")}`;
          throw new WeightsError(
            this.#label,
            "",
            name
              ? `pickle: opcode ${name} (${hex}) is not supported, at offset ${this.#opAt}`
              : `pickle: unknown opcode ${hex} at offset ${this.#opAt}`,
          );
        }
      }
    }
    throw this.#fail("truncated: no STOP opcode before the end");
  }
}

/**
 * Unpickle a `torch.save` `data.pkl` without executing anything. `label` names the file in
 * errors. Returns the pickled object (for a state dict: a `Map` of names to {@link TorchTensor}).
 */
export function unpickle(data: Uint8Array, label: string): PickleValue {
  if (data.byteLength > MAX_PICKLE_BYTES) {
    throw new WeightsError(
      label,
      "",
      `pickle of ${data.byteLength} bytes exceeds the ${MAX_PICKLE_BYTES} limit`,
    );
  }
  return new Unpickler(data, label).run();
}
