/**
 * The layer encodings of format version 2: every encoding round-trips (bit-exact for f32 and
 * f32+deflate, within the format's own error rule for bf16 and q8), reads the same through an
 * independent implementation of `docs/state_format.md`, is reported by the decoder, and is never
 * chosen unless asked for; version 1 states (a fixture of today's bytes) still read; inconsistent
 * or hostile compressed layers are a `state_invalid`.
 * @module
 */

import assert from "node:assert/strict";
import {
  decodeSession,
  encodeSession,
  STATE_ENCODINGS,
  type StateEncoding,
} from "../../src/state/codec.ts";
import { sessionSummary } from "../../src/state/summary.ts";
import { StateError } from "../../src/state/errors.ts";
import { TnlError } from "../../src/errors.ts";
import type { SessionSnapshot } from "../../src/model/snapshot.ts";
import {
  assertInvariants,
  envelope,
  FP,
  makeSnapshot,
  pack,
  payloadObject,
  readPortable,
  tinyConfig,
} from "./support.ts";

const config = tinyConfig();
const enc = { config, ...FP };
const FIXTURES = new URL("./fixtures/", import.meta.url);

type Layer = {
  dtype: string;
  shape: number[];
  compression: string;
  data: Uint8Array;
  scales?: Uint8Array;
};

/** A snapshot with awkward values: -0, a subnormal, f32's largest, a row of zeros, a huge row. */
function awkward(): SessionSnapshot {
  const s = makeSnapshot(config, 9, 3);
  const l = s.state.layers[1];
  l[0] = -0;
  l[1] = 1e-45;
  l[2] = 3.4028234663852886e38;
  l.fill(0, 4, 8); // row [0,1,·] of layer 1 (dv = 4)
  s.state.layers[2].fill(-3.3e38, 8, 12);
  return s;
}

/** Inflate zlib bytes with no bound (test side: trusted input). */
async function inflate(b: Uint8Array): Promise<Uint8Array> {
  const body = new Blob([b as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
    new DecompressionStream("deflate"),
  );
  return new Uint8Array(await new Response(body).arrayBuffer());
}

/** A layer's values read by the rules of docs/state_format.md, written from the document. */
async function readLayerByTheDoc(l: Layer): Promise<Float32Array> {
  const n = l.shape[0] * l.shape[1] * l.shape[2];
  const w = { f32: 4, bf16: 2, q8: 1 }[l.dtype]!;
  let bytes = l.data;
  if (l.compression === "deflate") {
    const planes = await inflate(l.data);
    bytes = new Uint8Array(w * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < w; j++) bytes[i * w + j] = planes[j * n + i];
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(n);
  const tmp = new DataView(new ArrayBuffer(4));
  for (let i = 0; i < n; i++) {
    if (l.dtype === "f32") out[i] = dv.getFloat32(4 * i, true);
    else if (l.dtype === "bf16") {
      tmp.setUint32(0, dv.getUint16(2 * i, true) * 65536);
      out[i] = tmp.getFloat32(0);
    } else {
      const s = new DataView(l.scales!.buffer, l.scales!.byteOffset).getFloat32(
        4 * Math.floor(i / l.shape[2]),
        true,
      );
      out[i] = Math.fround(dv.getInt8(i) * s);
    }
  }
  return out;
}

/** The largest error the format allows for value `x` read back as `y` (see the doc's rules). */
function allowed(encoding: StateEncoding, x: number, rowScale: number): number {
  if (encoding.startsWith("f32")) return 0;
  if (encoding.startsWith("bf16")) {
    return Math.abs(x) * 2 ** -8 + 2 ** -134; // half a bf16 ulp: 2^-8 relative, or half the subnormal step
  }
  return rowScale / 2 * (1 + 2 ** -20) + Math.abs(x) * 2 ** -23;
}

for (const encoding of STATE_ENCODINGS) {
  Deno.test(`encodings: ${encoding} round trip, by the codec and by the document`, async () => {
    const s = awkward();
    for (const secret of [undefined, "k"]) {
      const bytes = await encodeSession(s, { ...enc, secret, encoding });
      const d = await decodeSession(bytes, { ...enc, secret });
      assertInvariants(d, config);
      assert.equal(d.encoding, encoding);
      assert.equal(sessionSummary(bytes).encoding, encoding);
      assert.deepEqual(d.tokens, s.tokens);
      assert.deepEqual(d.rng, s.rng);
      // Encoding is deterministic (deflate too).
      assert.deepEqual(await encodeSession(s, { ...enc, secret, encoding }), bytes);
      const layers = payloadObject(bytes).layers as Layer[];
      for (let l = 0; l < config.numLayers; l++) {
        const x = s.state.layers[l];
        const y = d.state.layers[l];
        const meta = layers[l];
        assert.equal(`${meta.dtype}${meta.compression === "deflate" ? "+deflate" : ""}`, encoding);
        assert.deepEqual(await readLayerByTheDoc(meta), y, `layer ${l}: the document's reading`);
        if (encoding.startsWith("f32")) {
          assert.deepEqual(new Uint8Array(y.buffer), new Uint8Array(x.buffer), `layer ${l} bits`);
          continue;
        }
        const dv = config.headDim;
        for (let i = 0; i < x.length; i++) {
          const row = Math.floor(i / dv);
          const scale = meta.scales
            ? new DataView(meta.scales.buffer, meta.scales.byteOffset).getFloat32(4 * row, true)
            : 0;
          const err = Math.abs(x[i] - y[i]);
          assert.ok(
            err <= allowed(encoding, x[i], scale),
            `${encoding} layer ${l}[${i}]: ${x[i]} read back as ${y[i]}`,
          );
          assert.ok(Number.isFinite(y[i]));
        }
        // A row of zeros stays zeros; q8's scale for it is 0.
        if (l === 1) assert.deepEqual([...y.subarray(4, 8)], [0, 0, 0, 0]);
      }
    }
  });
}

Deno.test("encodings: exact unless asked, an unknown name is a 400, sizes shrink", async () => {
  const s = makeSnapshot(config, 5, 2);
  const plain = await encodeSession(s, enc);
  assert.equal((await decodeSession(plain, enc)).encoding, "f32");
  await assert.rejects(
    encodeSession(s, { ...enc, encoding: "f16" as StateEncoding }),
    (e: unknown) =>
      e instanceof TnlError && e.code === "invalid_input" && /q8\+deflate/.test(e.message),
  );
  // The tiny model's layers: bf16 halves the layer bytes, q8 quarters them plus one scale per row.
  const layerBytes = async (encoding: StateEncoding) =>
    (payloadObject(await encodeSession(s, { ...enc, encoding })).layers as Layer[])
      .reduce((n, l) => n + l.data.length + (l.scales?.length ?? 0), 0);
  const f32 = await layerBytes("f32");
  assert.equal(f32, (64 + 32 + 32) * 4);
  assert.equal(await layerBytes("bf16"), f32 / 2);
  assert.equal(await layerBytes("q8"), f32 / 4 + (16 + 8 + 8) * 4);
});

Deno.test("encodings: version 1 states (fixtures of the bytes written before version 2) still read", async () => {
  const want = makeSnapshot(config, 6, 11);
  for (
    const [file, secret] of [["state_v1.msgpack"], ["state_v1_signed.msgpack", "fixture secret"]]
  ) {
    const bytes = await Deno.readFile(new URL(file, FIXTURES));
    assert.equal((readPortable(bytes).value as Map<string, unknown>).get("version"), 1);
    const d = await decodeSession(bytes, { ...enc, secret });
    assert.equal(d.encoding, "f32");
    assert.equal(sessionSummary(bytes).encoding, "f32");
    assert.equal(d.id, want.id);
    assert.deepEqual(d.tokens, want.tokens);
    assert.deepEqual(d.sampling, want.sampling);
    d.state.layers.forEach((l, i) => assert.deepEqual(l, want.state.layers[i]));
    // Written again, it is version 2 and reads the same.
    const again = await decodeSession(await encodeSession(d, enc), enc);
    assert.deepEqual(again.state.layers, d.state.layers);
  }
  // A version 1 payload may not use version 2's layer fields.
  const v1 = await Deno.readFile(new URL("state_v1.msgpack", FIXTURES));
  const p = payloadObject(v1);
  (p.layers as Layer[])[0].compression = "none";
  await assert.rejects(
    decodeSession(await envelope(pack(p), undefined, 1), enc),
    /state layer 0: unknown field "compression"/,
  );
});

/** Expect a state_invalid whose message matches `re`. */
async function refused(bytes: Uint8Array, re: RegExp): Promise<void> {
  await assert.rejects(decodeSession(bytes, enc), (e: unknown) => {
    assert.ok(e instanceof StateError, String(e));
    assert.equal(e.code, "state_invalid", e.message);
    assert.match(e.message, re);
    return true;
  });
}

/** A deflated state's payload, edited by `mod`, in a fresh envelope. */
async function crafted(
  encoding: StateEncoding,
  mod: (layers: Layer[], p: Record<string, unknown>) => void | Promise<void>,
): Promise<Uint8Array> {
  const p = payloadObject(await encodeSession(makeSnapshot(config), { ...enc, encoding }));
  await mod(p.layers as Layer[], p);
  return envelope(pack(p));
}

async function zlib(bytes: Uint8Array): Promise<Uint8Array> {
  const body = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
    new CompressionStream("deflate"),
  );
  return new Uint8Array(await new Response(body).arrayBuffer());
}

Deno.test("encodings: inconsistent layers and compressed data are refused (400)", async () => {
  const cases: [string, StateEncoding, (l: Layer[]) => void | Promise<void>, RegExp][] = [
    ["cut short", "f32+deflate", (l) => {
      l[0].data = l[0].data.subarray(0, l[0].data.length - 9);
    }, /state layer 0.data: (inflates to \d+ bytes|deflate checksum|not a valid deflate)/],
    ["cut in the checksum", "f32+deflate", (l) => {
      l[1].data = l[1].data.subarray(0, l[1].data.length - 2);
    }, /state layer 1.data: deflate checksum does not match/],
    ["checksum flipped", "bf16+deflate", (l) => {
      l[2].data[l[2].data.length - 1] ^= 1;
    }, /state layer 2.data: (not a valid deflate stream|deflate checksum)/],
    ["trailing bytes", "q8+deflate", (l) => {
      const d = new Uint8Array(l[0].data.length + 3);
      d.set(l[0].data);
      l[0].data = d;
    }, /state layer 0.data: not a valid deflate stream/],
    ["not zlib", "f32+deflate", (l) => {
      l[0].data = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
    }, /state layer 0.data: not a valid deflate stream/],
    ["empty", "f32+deflate", (l) => {
      l[0].data = new Uint8Array(0);
    }, /state layer 0.data: inflates to 0 bytes, its shape holds 256/],
    ["inflates to too few bytes", "f32+deflate", async (l) => {
      l[1].data = await zlib(new Uint8Array(127));
    }, /state layer 1.data: inflates to 127 bytes, its shape holds 128/],
    ["inflates to too many bytes", "bf16+deflate", async (l) => {
      l[1].data = await zlib(new Uint8Array(65));
    }, /state layer 1.data: inflates to more than the 64 bytes its shape holds/],
    ["uncompressed data of the wrong length", "bf16", (l) => {
      l[2].data = l[2].data.subarray(1);
    }, /state layer 2: 63 bytes of data for shape \[2,4,4\] \(expected 64\)/],
    ["mixed encodings", "f32", (l) => {
      l[1].compression = "deflate";
    }, /state layer 1: encoding f32\+deflate, layer 0 is f32 \(one encoding per state\)/],
    ["unknown compression", "f32", (l) => {
      l[0].compression = "zstd";
    }, /state layer 0: compression the string "zstd", expected "none" or "deflate"/],
    ["unknown dtype", "f32", (l) => {
      l[0].dtype = "f16";
    }, /state layer 0: dtype the string "f16", expected "f32", "bf16" or "q8"/],
    ["q8 without scales", "q8", (l) => {
      delete l[0].scales;
    }, /state layer 0: missing field "scales"/],
    ["scales on f32", "f32", (l) => {
      l[0].scales = new Uint8Array(64);
    }, /state layer 0: unknown field "scales"/],
    ["scales of the wrong length", "q8+deflate", (l) => {
      l[1].scales = l[1].scales!.subarray(4);
    }, /state layer 1.scales: 28 bytes for 8 rows \(expected 32\)/],
    ["NaN scale", "q8", (l) => {
      new DataView(l[2].scales!.buffer, l[2].scales!.byteOffset).setFloat32(4, NaN, true);
    }, /state layer 2.scales: row 1 has scale NaN/],
    ["negative scale", "q8", (l) => {
      new DataView(l[2].scales!.buffer, l[2].scales!.byteOffset).setFloat32(0, -1, true);
    }, /state layer 2.scales: row 0 has scale -1/],
    ["q8 value -128", "q8", (l) => {
      l[0].data[5] = 0x80;
    }, /state layer 0: q8 value -128 at index 5/],
    ["q8 product overflows", "q8", (l) => {
      new DataView(l[0].scales!.buffer, l[0].scales!.byteOffset).setFloat32(0, 3e38, true);
      l[0].data.fill(100, 0, 4);
    }, /state layer 0: non-finite value Infinity at \[0,0,0\]/],
    ["bf16 infinity", "bf16", (l) => {
      l[1].data.set([0x80, 0x7f], 6); // value 3: +Infinity
    }, /state layer 1: non-finite value Infinity at \[0,0,3\]/],
    ["bf16 NaN in planes", "bf16+deflate", async (l) => {
      const planes = new Uint8Array(64);
      planes[32 + 17] = 0x7f; // value 17, high byte 0x7f and low 0xc0: NaN
      planes[17] = 0xc0;
      l[2].data = await zlib(planes);
    }, /state layer 2: non-finite value NaN at \[1,0,1\]/],
  ];
  for (const [name, encoding, mod, re] of cases) {
    await refused(await crafted(encoding, mod), re).catch((e) => {
      throw new Error(`case "${name}": ${e.message}`);
    });
  }
});

Deno.test("encodings: a deflate bomb is refused at once, with bounded memory", async () => {
  // 64 MiB of zeros deflate to about 64 KB: as layer 0's data it must stop at 256 bytes.
  const bomb = await zlib(new Uint8Array(64 * 2 ** 20));
  const bytes = await crafted("f32+deflate", (l) => {
    l[0].data = bomb;
  });
  await refused(bytes, /state layer 0.data: inflates to more than the 256 bytes its shape holds/);
  // The memory bound in a process of its own: test modules running in parallel share this one.
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("./deflate_bomb_child.ts", import.meta.url).pathname],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  assert.equal(out.code, 0);
  const { message, grewMiB } = JSON.parse(new TextDecoder().decode(out.stdout).trim());
  assert.match(message, /state_invalid .*inflates to more than the 256 bytes its shape holds/);
  assert.ok(grewMiB < 48, `rss grew by ${grewMiB.toFixed(0)} MiB`);
});
