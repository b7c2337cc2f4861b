/**
 * The prompt-token limit (`--max-prompt-tokens`) on every route that takes a prompt, and on the
 * edge handler: a 400 naming the field, the count and the limit; a huge text is refused before the
 * tokenizer reads it.
 * @module
 */

import assert from "node:assert/strict";
import { createEdgeHandler } from "../../src/edge/handler.ts";
import { AppContext } from "../../src/http/context.ts";
import { DEFAULT_MAX_PROMPT_TOKENS, encodePrompt } from "../../src/sessions/prompt.ts";
import { MemorySessionStore } from "../../src/state/memory_store.ts";
import { cpuModel, expectError, jsonOf, post, testApp } from "../http/support.ts";

const model = await cpuModel();
const tok = model.tokenizer;
const LIMIT = 8;
const { app } = await testApp({ options: { maxPromptTokens: LIMIT, maxTokensLimit: 2 } });

/** A text of exactly `n` tokens. */
function textOf(n: number): string {
  const words = "ROMEO: what light through yonder window breaks and more words follow here now";
  for (let len = 1; len <= words.length; len++) {
    const t = words.slice(0, len);
    if (tok.encode(t).length === n) return t;
  }
  throw new Error(`no prefix of ${n} tokens`);
}

function tooLong(e: { message: string; code: string | null }, count: string) {
  assert.equal(e.code, "context_length_exceeded");
  assert.match(e.message, new RegExp(`${count} tokens, more than this server's limit of ${LIMIT}`));
}

Deno.test("prompt limit: completions, chat and sessions answer 400 with the count and the limit", async () => {
  const fits = textOf(LIMIT), over = textOf(LIMIT + 1);
  await jsonOf(await post(app, "/v1/completions", { prompt: fits, max_tokens: 1 }));
  tooLong(
    await expectError(await post(app, "/v1/completions", { prompt: over }), 400, "prompt"),
    "9",
  );
  const ids = Array.from({ length: LIMIT + 3 }, () => 5);
  tooLong(
    await expectError(await post(app, "/v1/completions", { prompt: ids }), 400, "prompt"),
    "11",
  );
  await jsonOf(await post(app, "/v1/completions", { prompt: ids.slice(0, LIMIT), max_tokens: 1 }));
  const long = [{ role: "user", content: "x ".repeat(40) }];
  tooLong(
    await expectError(await post(app, "/v1/chat/completions", { messages: long }), 400, "messages"),
    "\\d+",
  );
  tooLong(await expectError(await post(app, "/v1/sessions", { prompt: over }), 400, "prompt"), "9");
  tooLong(
    await expectError(await post(app, "/v1/sessions", { messages: long }), 400, "messages"),
    "\\d+",
  );
  const s = await jsonOf(await post(app, "/v1/sessions", { prompt: fits }), 201);
  tooLong(
    await expectError(
      await post(app, `/v1/sessions/${s.id}/completions`, { prompt: over }),
      400,
      "prompt",
    ),
    "9",
  );
  // The refused continuation left the session as it was, and it still continues.
  assert.equal((await jsonOf(await app.request(`/v1/sessions/${s.id}`))).tokens, s.tokens);
  await jsonOf(
    await post(app, `/v1/sessions/${s.id}/completions`, { prompt: " a", max_tokens: 1 }),
  );
});

Deno.test("prompt limit: a 1 MB text is refused without being tokenized", async () => {
  let encoded = 0;
  const encode = tok.encode;
  tok.encode = (...a: Parameters<typeof encode>) => {
    encoded++;
    return encode.apply(tok, a);
  };
  try {
    const big = "First Citizen: speak, speak. ".repeat(36_000); // ~1 MB, ~300k tokens
    const e = await expectError(await post(app, "/v1/completions", { prompt: big }), 400, "prompt");
    assert.match(e.message, /^prompt: at least \d+ tokens, more than this server's limit of 8/);
    const d = new AppContext({ model, store: new MemorySessionStore() });
    assert.equal(d.options.maxPromptTokens, DEFAULT_MAX_PROMPT_TOKENS);
    assert.throws(() => encodePrompt(tok, big, DEFAULT_MAX_PROMPT_TOKENS), /at least/);
    assert.equal(encoded, 0);
    // Without a limit (0) it is encoded.
    assert.ok(encodePrompt(tok, big.slice(0, 1000), 0).length > 0);
    assert.equal(encoded, 1);
  } finally {
    tok.encode = encode;
  }
  assert.throws(
    () =>
      new AppContext({ model, store: new MemorySessionStore(), options: { maxPromptTokens: -1 } }),
    /maxPromptTokens/,
  );
});

Deno.test({
  name: "prompt limit: the edge handler answers 400 too",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const h = createEdgeHandler({ loaded: model, maxPromptTokens: LIMIT });
    const req = (prompt: unknown) =>
      new Request("http://edge/v1/generate", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ prompt, max_tokens: 1 }),
      });
    for (const prompt of [textOf(LIMIT + 1), Array.from({ length: LIMIT + 1 }, () => 3)]) {
      const res = await h(req(prompt));
      const text = await res.text();
      assert.equal(res.status, 400, text);
      const e = JSON.parse(text).error;
      assert.equal(e.param, "prompt");
      assert.equal(e.code, "context_length_exceeded");
    }
    const res = await h(req(textOf(LIMIT)));
    assert.equal(res.status, 200, await res.text());
  },
});
