/**
 * State encodings in the sessions room: `ModelSession.export({ encoding })` and its `lossy` after a
 * resume; the library exports of the encoding names; `SessionManager` saves in a lease's encoding,
 * keeps a lossy lineage marked, and never continues a lossy save from its exact live object.
 * @module
 */

import assert from "node:assert/strict";
import * as lib from "../../mod.ts";
import { TnlError } from "../../src/errors.ts";
import { SessionManager } from "../../src/sessions/mod.ts";
import { decodeSession } from "../../src/state/codec.ts";
import { MemorySessionStore } from "../../src/state/memory_store.ts";
import { cpuModel } from "../http/support.ts";

const model = await cpuModel();
const codec = {
  config: model.config,
  modelFingerprint: model.fingerprint,
  tokenizerFingerprint: model.tokenizer.fingerprint,
};

async function run(s: lib.ModelSession, prompt: string): Promise<string> {
  let out = "";
  for await (const c of s.generate(prompt, { maxTokens: 6, temperature: 0 })) out += c.text;
  return out;
}

Deno.test("library: the encoding names and predicates are exported from mod.ts", () => {
  assert.deepEqual(lib.STATE_ENCODINGS, [
    "f32",
    "f32+deflate",
    "bf16",
    "bf16+deflate",
    "q8",
    "q8+deflate",
  ]);
  assert.equal(lib.DEFAULT_STATE_ENCODING, "f32");
  assert.ok(lib.isStateEncoding("q8+deflate") && !lib.isStateEncoding("q4"));
  assert.ok(lib.isExactEncoding("f32+deflate") && !lib.isExactEncoding("bf16"));
});

Deno.test("model session: export({ encoding }) and the lossy mark of a resumed session", async () => {
  const s = await model.session();
  await run(s, "ROMEO:");
  assert.equal(s.lossy, null);
  const exact = await s.export();
  const deflated = await s.export({ encoding: "f32+deflate" });
  const small = await s.export({ encoding: "q8+deflate" });
  assert.equal((await decodeSession(exact, codec)).encoding, "f32");
  const d = await decodeSession(deflated, codec);
  assert.equal(d.encoding, "f32+deflate");
  assert.deepEqual(d.state.layers, (await decodeSession(exact, codec)).state.layers);
  assert.equal((await decodeSession(small, codec)).encoding, "q8+deflate");
  assert.ok(small.length < exact.length / 3);

  // Exact resumes go on exactly; the lossy one is marked, and its exports stay marked.
  const fromExact = await model.session(deflated);
  assert.equal(fromExact.lossy, null);
  const fromSmall = await model.session(small);
  assert.equal(fromSmall.lossy, "q8+deflate");
  const [a, b] = [await run(fromExact, ""), await run(s, "")];
  assert.equal(a, b);
  await run(fromSmall, "");
  const again = await decodeSession(await fromSmall.export(), codec);
  assert.equal(again.encoding, "f32");
  assert.equal(again.lossy, "q8+deflate");
  await assert.rejects(
    s.export({ encoding: "zip" as "q8" }),
    (e: unknown) => e instanceof TnlError && e.code === "invalid_input" && /zip/.test(e.message),
  );
});

Deno.test("session manager: a lease's encoding, a lossy save leaves the cache, the lineage stays marked", async () => {
  const store = new MemorySessionStore();
  const m = new SessionManager({ model, engine: model.engine(), store, modelId: "m" });
  assert.equal(m.encoding, "f32");
  const first = await m.create("s1");
  const saved = await first.save();
  await first.release();
  assert.equal(saved.encoding, "f32");
  assert.equal(saved.lossy, null);

  // An exact save keeps the live object for the next request.
  const second = await m.open("s1");
  assert.equal(second.session, first.session);
  const q = await second.save();
  await second.release();
  // Saved in bf16 (the manager's default is f32; the lease asks): ...
  const third = await m.open("s1", { encoding: "bf16" });
  assert.equal(third.encoding, "bf16");
  const lossy = await third.save();
  await third.release();
  assert.equal(lossy.encoding, "bf16");
  assert.equal(lossy.lossy, "bf16");
  assert.ok(lossy.bytes.length < q.bytes.length);
  // ... the next request resumes from the stored bf16 bytes, not from the exact live object.
  const fourth = await m.open("s1");
  assert.notEqual(fourth.session, third.session);
  const stored = await decodeSession(lossy.bytes, codec);
  assert.deepEqual(fourth.session.toSnapshot().state.layers, stored.state.layers);
  const back = await fourth.save();
  await fourth.release();
  assert.equal(back.encoding, "f32");
  assert.equal(back.lossy, "bf16");
  const info = await m.info("s1");
  assert.equal(info.state_encoding, "f32");
  assert.equal(info.state_exact, false);
  assert.equal(info.state_lossy, "bf16");
  assert.throws(
    () =>
      new SessionManager({
        model,
        engine: model.engine(),
        store,
        modelId: "m",
        encoding: "x" as "q8",
      }),
    /state encoding "x": expected one of f32, /,
  );
  await assert.rejects(m.create("s2", { encoding: "y" as "q8" }), /state encoding "y"/);
  await assert.rejects(m.open("s1", { encoding: "y" as "q8" }), /state encoding "y"/);
  assert.equal(m.busy.size, 0); // nothing held by the refused requests
});
