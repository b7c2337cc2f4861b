/**
 * The library's session: generate, export, resume in three lines; a resumed session goes on
 * exactly as the original would; signed bytes need the secret.
 */

import assert from "node:assert/strict";
import { StateError } from "../../src/state/errors.ts";
import type { ModelSession } from "../../src/sessions/mod.ts";
import { cpuModel } from "../http/support.ts";

const model = await cpuModel();

async function text(s: ModelSession, prompt: string, opts = {}): Promise<[string, string]> {
  let out = "", finish = "";
  for await (const c of s.generate(prompt, { maxTokens: 12, ...opts })) {
    out += c.text;
    if (c.finishReason) finish = c.finishReason;
  }
  return [out, finish];
}

Deno.test("model session: a resumed session goes on as the original does", async () => {
  const s = await model.session();
  const [first, why] = await text(s, "ROMEO:", { temperature: 0.8, seed: 3 });
  assert.equal(why, "length");
  assert.ok(first.length > 0);
  const bytes = await s.export();
  const s2 = await model.session(bytes);
  assert.equal(s2.id, s.id);
  assert.equal(s2.position, s.position);
  // Sampling settings and the random stream carry over (no seed given: the stream goes on).
  const [resumed] = await text(s2, "");
  const [original] = await text(s, "");
  assert.equal(resumed, original);
  // A prompt appends to the conversation in both.
  assert.deepEqual(await text(s2, " JULIET:"), await text(s, " JULIET:"));
});

Deno.test("model session: signed bytes resume only with the secret", async () => {
  const s = await model.session(undefined, { secret: "k" });
  await text(s, "ROMEO:", { temperature: 0 });
  const bytes = await s.export();
  await assert.rejects(model.session(bytes), StateError);
  await assert.rejects(model.session(bytes, { secret: "other" }), StateError);
  const ok = await model.session(bytes, { secret: "k" });
  assert.equal(ok.position, s.position);
  await assert.rejects(model.session(new Uint8Array([1, 2, 3])), StateError);
});

Deno.test("model session: an empty prompt on a new session starts from BOS", async () => {
  const s = await model.session();
  const [out, why] = await text(s, "", { temperature: 0 });
  assert.equal(why, "length");
  assert.equal(typeof out, "string");
  assert.ok(s.position > 0);
});
