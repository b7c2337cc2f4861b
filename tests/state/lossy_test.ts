/**
 * Format version 3's `lossy`: a state written in a lossy encoding says so, and a state resumed
 * from one keeps saying so after it is saved in an exact encoding (it never passes for exact);
 * version 2 states read it from their layers; a `lossy` that contradicts the layers, or names no
 * lossy encoding, is refused.
 * @module
 */

import assert from "node:assert/strict";
import { decodeSession, encodeSession, sessionSummary } from "../../src/state/codec.ts";
import { StateError } from "../../src/state/errors.ts";
import { TnlError } from "../../src/errors.ts";
import { envelope, FP, makeSnapshot, pack, payloadObject, tinyConfig } from "./support.ts";

const config = tinyConfig();
const enc = { config, ...FP };

async function refused(bytes: Uint8Array, re: RegExp): Promise<void> {
  await assert.rejects(decodeSession(bytes, enc), (e: unknown) => {
    assert.ok(e instanceof StateError, String(e));
    assert.equal(e.code, "state_invalid");
    assert.match(e.message, re);
    return true;
  });
}

Deno.test("lossy: exact encodings write nil, lossy ones their name, and it survives exact saves", async () => {
  const snap = makeSnapshot(config, 6);
  for (const encoding of ["f32", "f32+deflate"] as const) {
    const bytes = await encodeSession(snap, { ...enc, encoding });
    assert.equal(payloadObject(bytes).lossy, null);
    assert.equal((await decodeSession(bytes, enc)).lossy, null);
    assert.equal(sessionSummary(bytes).lossy, null);
  }
  for (const encoding of ["bf16", "bf16+deflate", "q8", "q8+deflate"] as const) {
    const bytes = await encodeSession(snap, { ...enc, encoding });
    assert.equal(payloadObject(bytes).lossy, encoding);
    const d = await decodeSession(bytes, enc);
    assert.equal(d.lossy, encoding);
    // Saved again exactly: the f32 layers say f32, `lossy` still says where the values came from.
    const again = await encodeSession(d, enc);
    assert.equal(sessionSummary(again).encoding, "f32");
    assert.equal(sessionSummary(again).lossy, encoding);
    const d2 = await decodeSession(again, enc);
    assert.equal(d2.encoding, "f32");
    assert.equal(d2.lossy, encoding);
    // Through a second lossy encoding, the first one is what it keeps.
    const other = encoding.startsWith("q8") ? "bf16" : "q8";
    const third = await encodeSession(d2, { ...enc, encoding: other });
    assert.equal((await decodeSession(third, enc)).lossy, encoding);
  }
});

Deno.test("lossy: version 2 states read it from their layers; contradictions are refused", async () => {
  const snap = makeSnapshot(config, 6);
  for (const encoding of ["f32+deflate", "q8"] as const) {
    const p = payloadObject(await encodeSession(snap, { ...enc, encoding }));
    delete p.lossy;
    p.version = 2;
    const v2 = await envelope(pack(p), undefined, 2);
    const want = encoding === "q8" ? "q8" : null;
    assert.equal((await decodeSession(v2, enc)).lossy, want);
    assert.equal(sessionSummary(v2).lossy, want);
    // Version 2 has no `lossy` field.
    await refused(
      await envelope(pack({ ...p, lossy: want }), undefined, 2),
      /payload: unknown field "lossy"/,
    );
  }
  const q8 = payloadObject(await encodeSession(snap, { ...enc, encoding: "q8+deflate" }));
  await refused(
    await envelope(pack({ ...q8, lossy: null })),
    /lossy: nil, but the layers are q8\+deflate/,
  );
  for (const bad of ["f32", "q9", 8]) {
    await refused(
      await envelope(pack({ ...q8, lossy: bad })),
      /lossy: .*expected nil or a lossy encoding \(bf16, bf16\+deflate, q8, q8\+deflate\)/,
    );
  }
  const missing = { ...q8 };
  delete missing.lossy;
  await refused(await envelope(pack(missing)), /lossy/);
});

Deno.test("lossy: the encoder refuses a snapshot whose lossy names no lossy encoding", async () => {
  for (const lossy of ["f32", "zip"]) {
    await assert.rejects(
      encodeSession({ ...makeSnapshot(config, 6), lossy }, enc),
      (e: unknown) =>
        e instanceof TnlError && e.code === "internal" && /snapshot.lossy/.test(e.message),
    );
  }
});
