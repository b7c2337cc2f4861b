import assert from "node:assert/strict";
import { WeightsError } from "../../../src/errors.ts";
import {
  ALLOWED_GLOBALS,
  PickleTuple,
  TorchTensor,
  unpickle,
} from "../../../src/model/weights/pickle.ts";
import { parseTorchPickle } from "../../../src/model/weights/torch.ts";
import { openZip } from "../../../src/model/weights/zip.ts";
import { fixtureTest } from "../../fixtures.ts";
import { pickleStateDict, type PickleTensor } from "./torch_writer.ts";
import { rng } from "../../support/random.ts";

const enc = new TextEncoder();

function cat(...parts: (number[] | string | Uint8Array)[]): Uint8Array {
  const arrays = parts.map((p) =>
    typeof p === "string" ? enc.encode(p) : p instanceof Uint8Array ? p : new Uint8Array(p)
  );
  const out = new Uint8Array(arrays.reduce((a, b) => a + b.byteLength, 0));
  let o = 0;
  for (const a of arrays) {
    out.set(a, o);
    o += a.byteLength;
  }
  return out;
}

function throwsWeights(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof WeightsError, `expected WeightsError, got ${e}`);
    assert.match(e.message, pattern);
    return true;
  });
}

const TENSORS: PickleTensor[] = [
  { name: "model.embed_tokens.weight", dtype: "BF16", key: "0", numel: 12, shape: [3, 4] },
  { name: "theta", dtype: "F32", key: "1", numel: 8, shape: [2, 1, 4], stride: [4, 99, 1] },
  { name: "tied", dtype: "BF16", key: "0", numel: 12, offset: 4, shape: [2, 4] },
  { name: "big", dtype: "F16", key: "2", numel: 70_000, shape: [70_000] },
];

Deno.test("pickle: protocol 2 state dict as torch.save writes it", () => {
  const t = parseTorchPickle(pickleStateDict(TENSORS), "x.bin");
  assert.deepEqual(t.map((x) => [x.name, x.dtype, x.shape, x.storageKey, x.storageByteOffset]), [
    ["model.embed_tokens.weight", "BF16", [3, 4], "0", 0],
    ["theta", "F32", [2, 1, 4], "1", 0],
    ["tied", "BF16", [2, 4], "0", 8],
    ["big", "F16", [70_000], "2", 0],
  ]);
  assert.equal(t[3].byteLength, 140_000);
});

Deno.test("pickle: protocol 4 OrderedDict with _metadata BUILD and _rebuild_parameter", () => {
  const bytes = pickleStateDict(TENSORS, { proto4: true, ordered: true });
  const root = unpickle(bytes, "p4.pkl");
  assert.ok(root instanceof Map);
  assert.ok(root.get("tied") instanceof TorchTensor);
  const t = parseTorchPickle(bytes, "p4.bin");
  assert.deepEqual(t.map((x) => x.name), TENSORS.map((x) => x.name));
});

Deno.test("pickle: plain values", () => {
  // (None, True, False, 1.5, -2, 2**70, 'é', [1, 2], {'a': 1})
  const long = [0x8a, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0x40];
  const v = unpickle(
    cat(
      [0x80, 2, 0x28, 0x4e, 0x88, 0x89, 0x47, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0],
      [0x4a, 0xfe, 0xff, 0xff, 0xff],
      long,
      [0x8c, 2, 0xc3, 0xa9],
      [0x5d, 0x28, 0x4b, 1, 0x4b, 2, 0x65],
      [0x7d, 0x8c, 1],
      "a",
      [0x4b, 1, 0x73],
      [0x74, 0x2e],
    ),
    "v.pkl",
  );
  assert.ok(v instanceof PickleTuple);
  assert.deepEqual(v.items.slice(0, 8), [null, true, false, 1.5, -2, 2n ** 70n, "é", [1, 2]]);
  assert.deepEqual(v.items[8], new Map([["a", 1]]));
});

Deno.test("pickle: forbidden globals are refused, naming them and the offset", () => {
  throwsWeights(
    () => parseTorchPickle(pickleStateDict(TENSORS, { extraGlobal: ["os", "system"] }), "evil.bin"),
    /^evil\.bin: pickle: forbidden global os\.system \(opcode GLOBAL \(0x63 'c'\) at offset 2\)$/,
  );
  throwsWeights(
    () =>
      parseTorchPickle(
        pickleStateDict(TENSORS, { proto4: true, extraGlobal: ["builtins", "eval"] }),
        "evil4.bin",
      ),
    /forbidden global builtins\.eval \(opcode STACK_GLOBAL \(0x93\) at offset 29\)/,
  );
  throwsWeights(() => unpickle(cat([0x80, 2], "ctorch\nload\n."), "t.pkl"), /torch\.load/);
  // An allowed name in a wrong module is still refused.
  throwsWeights(() => unpickle(cat([0x80, 2], "cos\nOrderedDict\n."), "t.pkl"), /os\.OrderedDict/);
  assert.ok(ALLOWED_GLOBALS.includes("torch._utils._rebuild_tensor_v2"));
  assert.ok(!ALLOWED_GLOBALS.some((g) => g.startsWith("builtins") || g.startsWith("os")));
});

Deno.test("pickle: calling anything but the rebuild functions is refused", () => {
  // torch.FloatStorage() is allowed as a value, not as a call.
  throwsWeights(
    () => unpickle(cat([0x80, 2], "ctorch\nFloatStorage\n", [0x29, 0x52, 0x2e]), "t.pkl"),
    /cannot call torch\.FloatStorage .*REDUCE/,
  );
  throwsWeights(
    () => unpickle(cat([0x80, 2, 0x4b, 1, 0x29, 0x52, 0x2e]), "t.pkl"),
    /cannot call 1/,
  );
});

Deno.test("pickle: malformed input gives precise errors", () => {
  const cases: [number[] | Uint8Array, RegExp][] = [
    [[0x80, 2, 0x63, 0x2e], /unknown opcode|GLOBAL name has no end of line/],
    [[0x80, 2, 0x01], /^m\.pkl: pickle: unknown opcode 0x01 at offset 2$/],
    [[0x80, 2, 0x69, 0x2e], /opcode INST \(0x69\) is not supported, at offset 2$/],
    [[0x80, 2, 0x8b, 0, 0, 0, 0, 0x2e], /LONG4/],
    [[0x80, 9], /unsupported protocol 9/],
    [[0x80, 2, 0x4e], /no STOP/],
    [[0x80, 2, 0x2e], /stack underflow/],
    [[0x80, 2, 0x30, 0x2e], /stack underflow \(opcode POP/],
    [[0x80, 2, 0x86, 0x2e], /stack underflow \(opcode TUPLE2/],
    [[0x80, 2, 0x4e, 0x28, 0x86, 0x2e], /stack underflow/],
    [[0x80, 2, 0x74, 0x2e], /no MARK/],
    [[0x80, 2, 0x68, 7, 0x2e], /memo index 7 was never stored \(opcode BINGET/],
    [[0x80, 2, 0x6a, 0, 0, 0, 1, 0x2e], /memo index 16777216/],
    [[0x80, 2, 0x71, 0, 0x2e], /stack underflow/],
    [[0x80, 2, 0x58, 0xff, 0xff, 0xff, 0x7f, 0x41], /truncated: needs 2147483647 more bytes/],
    [[0x80, 2, 0x8d, 0, 0, 0, 0, 0, 0, 0, 0x80], /exceeds the pickle/],
    [[0x80, 2, 0x4a, 1, 2], /truncated/],
    [[0x80, 2, 0x8c, 2, 0xff, 0xfe, 0x2e], /not valid UTF-8/],
    [[0x80, 2, 0x4b, 1, 0x4b, 2, 0x4b, 3, 0x73, 0x2e], /cannot set items on 1/],
    [[0x80, 2, 0x7d, 0x5d, 0x4b, 2, 0x73, 0x2e], /unsupported dict key/],
    [[0x80, 2, 0x4b, 1, 0x4b, 2, 0x61, 0x2e], /cannot append to 1/],
    [[0x80, 2, 0x4b, 1, 0x4e, 0x62, 0x2e], /cannot BUILD 1/],
    [[0x80, 2, 0x4b, 1, 0x51, 0x2e], /persistent id is not/],
    [[0x80, 4, 0x95, 0xff, 0, 0, 0, 0, 0, 0, 0, 0x2e], /exceeds the pickle|frame runs past/],
  ];
  for (const [b, re] of cases) {
    throwsWeights(() => unpickle(b instanceof Uint8Array ? b : new Uint8Array(b), "m.pkl"), re);
  }
  throwsWeights(
    () => unpickle(new Uint8Array(64 * 1024 * 1024 + 1), "huge.pkl"),
    /exceeds the 67108864 limit/,
  );
});

Deno.test("pickle: tensor descriptions are validated", () => {
  const one = (t: Partial<PickleTensor>): Uint8Array =>
    pickleStateDict([{ name: "w", dtype: "F32", key: "0", numel: 6, shape: [2, 3], ...t }]);
  throwsWeights(
    () => parseTorchPickle(one({ stride: [1, 2] }), "nc.bin"),
    /^nc\.bin: tensor "w": not contiguous: stride \[1,2\] for shape \[2,3\]/,
  );
  throwsWeights(
    () => parseTorchPickle(one({ numel: 5 }), "s.bin"),
    /tensor "w".*run past its storage/,
  );
  throwsWeights(() => parseTorchPickle(one({ offset: 1 }), "s.bin"), /run past its storage/);
  throwsWeights(() => parseTorchPickle(one({ shape: [2, -3] }), "s.bin"), /negative dimension/);
  throwsWeights(() => parseTorchPickle(one({ stride: [3] }), "s.bin"), /differ in rank/);
  throwsWeights(() => parseTorchPickle(one({ key: "../x" }), "s.bin"), /bad storage key/);
  throwsWeights(
    () => parseTorchPickle(one({ shape: [2 ** 30, 2 ** 30], numel: 2 ** 31 }), "s.bin"),
    /shape \[1073741824,1073741824\] is too large/,
  );
  throwsWeights(
    () =>
      parseTorchPickle(
        pickleStateDict([
          { name: "a", dtype: "F32", key: "0", numel: 6, shape: [6] },
          { name: "b", dtype: "F16", key: "0", numel: 6, shape: [6] },
        ]),
        "s.bin",
      ),
    /storage "0" is declared with two sizes or types/,
  );
  throwsWeights(() => parseTorchPickle(pickleStateDict([]), "e.bin"), /holds no tensors/);
  throwsWeights(
    () => parseTorchPickle(new Uint8Array([0x80, 2, 0x4e, 0x2e]), "n.bin"),
    /not hold a dict/,
  );
  // Zero-element tensors and size-1 dimensions with any stride are fine.
  const ok = parseTorchPickle(one({ shape: [0, 3], stride: [7, 7] }), "z.bin");
  assert.equal(ok[0].byteLength, 0);
});

/** Mutate a copy of `src`: flips, random bytes, insertions, deletions, truncation. */
function mutate(src: Uint8Array, r: () => number): Uint8Array {
  let b: Uint8Array = src.slice();
  const edits = 1 + Math.floor(r() * 4);
  for (let i = 0; i < edits; i++) {
    const at = Math.floor(r() * b.length);
    const kind = Math.floor(r() * 5);
    if (kind === 0) b[at] ^= 1 << Math.floor(r() * 8);
    else if (kind === 1) b[at] = Math.floor(r() * 256);
    else if (kind === 2) b = cat(b.subarray(0, at), [Math.floor(r() * 256)], b.subarray(at));
    else if (kind === 3) b = cat(b.subarray(0, at), b.subarray(at + 1 + Math.floor(r() * 8)));
    else b = b.subarray(0, at);
  }
  return b;
}

fixtureTest("pickle: 600 corrupted data.pkl variants throw WeightsError or parse", async (dir) => {
  const pkls: Uint8Array[] = [];
  for (const f of ["r1-f32/pytorch_model.bin", "tnl-shakespeare-6m/pytorch_model.bin"]) {
    const z = await openZip(dir + f);
    try {
      const name = [...z.entries.keys()].find((n) => n.endsWith("/data.pkl"))!;
      pkls.push(await z.readEntry(name));
    } finally {
      z.close();
    }
  }
  const r = rng(20240601);
  let ok = 0;
  let failed = 0;
  for (let i = 0; i < 600; i++) {
    const bad = mutate(pkls[i % 2], r);
    const t0 = performance.now();
    try {
      parseTorchPickle(bad, `variant${i}.bin`);
      ok++;
    } catch (e) {
      if (!(e instanceof WeightsError)) {
        throw new Error(`variant ${i}: ${(e as Error)?.constructor?.name}: ${e}`, { cause: e });
      }
      assert.match(e.message, new RegExp(`^variant${i}\\.bin: `));
      failed++;
    }
    const ms = performance.now() - t0;
    assert.ok(ms < 200, `variant ${i} took ${ms} ms`);
  }
  assert.equal(ok + failed, 600);
  assert.ok(failed > 300, `only ${failed} of 600 corrupt variants were rejected`);
});
