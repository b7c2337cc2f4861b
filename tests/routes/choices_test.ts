/**
 * Several choices per request: `n` on `/v1/completions` and `/v1/chat/completions` and prompt
 * arrays on `/v1/completions`, streamed and not, in OpenAI's `index` order, each in its own new
 * session; choice copy c of a seeded request samples as a single request with `seed + c` would.
 * With a session, n > 1 is a 400.
 * @module
 */

import assert from "node:assert/strict";
import { expectError, jsonOf, post, sseChunks, testApp, waitFor } from "../http/support.ts";

const { app, store } = await testApp();
const sampling = { temperature: 0.9, top_k: 40, max_tokens: 8 };

type Choice = Record<string, unknown> & { index: number; session: string | null };

async function single(prompt: string, seed: number): Promise<string> {
  const b = await jsonOf(await post(app, "/v1/completions", { prompt, seed, ...sampling }));
  return (b.choices as { text: string }[])[0].text;
}

Deno.test("choices: completions n = 2 gives two sampled choices, as seed and seed + 1", async () => {
  const b = await jsonOf(
    await post(app, "/v1/completions", { prompt: "ROMEO:", n: 2, seed: 5, ...sampling }),
  );
  const choices = b.choices as Choice[];
  assert.deepEqual(choices.map((c) => c.index), [0, 1]);
  assert.equal(choices[0].text, await single("ROMEO:", 5));
  assert.equal(choices[1].text, await single("ROMEO:", 6));
  assert.notEqual(choices[0].text, choices[1].text);
  // Each choice in its own stored session; the prompt's tokens counted once.
  assert.equal(b.session, null);
  assert.ok(choices[0].session && choices[1].session && choices[0].session !== choices[1].session);
  for (const c of choices) assert.ok(await store.get(c.session!), `session ${c.session} stored`);
  const usage = b.usage as Record<string, number>;
  assert.equal(usage.prompt_tokens, 2);
  assert.equal(usage.completion_tokens, 16);
  // A choice's session continues like any other.
  const next = await jsonOf(
    await post(app, "/v1/completions", { prompt: "", session: choices[1].session, max_tokens: 3 }),
  );
  assert.equal(next.session, choices[1].session);
});

Deno.test("choices: a prompt array with n = 2: prompt by prompt, n each", async () => {
  const prompts = ["ROMEO:", "JULIET:", [1, 100, 200]];
  const b = await jsonOf(
    await post(app, "/v1/completions", { prompt: prompts, n: 2, seed: 9, echo: true, ...sampling }),
  );
  const choices = b.choices as (Choice & { text: string })[];
  assert.deepEqual(choices.map((c) => c.index), [0, 1, 2, 3, 4, 5]);
  assert.ok(choices[2].text.startsWith("JULIET:"), "echo of the choice's own prompt");
  assert.equal(choices[2].text, "JULIET:" + await single("JULIET:", 9));
  assert.equal(choices[3].text, "JULIET:" + await single("JULIET:", 10));
  assert.equal(choices[0].text, "ROMEO:" + await single("ROMEO:", 9));
  assert.equal(new Set(choices.map((c) => c.session)).size, 6);
  const usage = b.usage as Record<string, number>;
  let promptTokens = 0;
  for (const prompt of prompts) {
    const one = await jsonOf(await post(app, "/v1/completions", { prompt, max_tokens: 0 }));
    promptTokens += (one.usage as Record<string, number>).prompt_tokens;
  }
  assert.equal(usage.prompt_tokens, promptTokens);
  assert.equal(usage.completion_tokens, 6 * 8);
});

Deno.test("choices: streamed n = 2 chat matches the JSON answer, per index, with usage", async () => {
  const body = {
    messages: [{ role: "user", content: "Speak." }],
    n: 2,
    seed: 3,
    ...sampling,
  };
  const plain = await jsonOf(await post(app, "/v1/chat/completions", body));
  const want = (plain.choices as { message: { content: string } }[]).map((c) => c.message.content);
  assert.deepEqual((plain.choices as Choice[]).map((c) => c.index), [0, 1]);
  const chunks = await sseChunks(
    await post(app, "/v1/chat/completions", {
      ...body,
      stream: true,
      stream_options: { include_usage: true },
    }),
  );
  const text = ["", ""];
  const finished = [0, 0];
  const roles = [0, 0];
  const sessions = [new Set<unknown>(), new Set<unknown>()];
  for (const ch of chunks) {
    const list = ch.choices as (Choice & {
      delta: { content?: string; role?: string };
      finish_reason: string | null;
    })[];
    if (list.length === 0) {
      const usage = ch.usage as Record<string, number>;
      assert.equal(usage.completion_tokens, 16);
      continue;
    }
    assert.equal(list.length, 1);
    assert.equal(ch.session, null);
    const c = list[0];
    text[c.index] += c.delta.content ?? "";
    if (c.delta.role) roles[c.index]++;
    if (c.finish_reason) finished[c.index]++;
    sessions[c.index].add(c.session);
  }
  assert.deepEqual(text, want);
  assert.deepEqual(finished, [1, 1]);
  assert.deepEqual(roles, [1, 1]);
  assert.ok(sessions.every((s) => s.size === 1) && [...sessions[0]][0] !== [...sessions[1]][0]);
  assert.equal(chunks.at(-1)!.usage !== null, true);
});

Deno.test("choices: with a session n must be 1 (also on /v1/sessions/:id/completions)", async () => {
  const first = await jsonOf(await post(app, "/v1/completions", { prompt: "A", max_tokens: 1 }));
  const id = first.session as string;
  await expectError(
    await post(app, "/v1/completions", { prompt: "B", session: id, n: 2 }),
    400,
    "n",
  );
  await expectError(
    await post(app, `/v1/sessions/${id}/completions`, { prompt: "B", n: 2 }),
    400,
    "n",
  );
  await expectError(
    await post(app, `/v1/sessions/${id}/completions`, { prompt: ["B", "C"] }),
    400,
    "prompt",
  );
  await expectError(
    await post(app, "/v1/chat/completions", {
      messages: [{ role: "user", content: "x" }],
      session: id,
      n: 3,
    }),
    400,
    "n",
  );
});

Deno.test("choices: OpenAI fields we do not implement are a 400 unless they ask for nothing", async () => {
  const messages = [{ role: "user", content: "x" }];
  const noop = {
    messages,
    max_tokens: 2,
    tools: [],
    tool_choice: "none",
    functions: [],
    function_call: "none",
    parallel_tool_calls: false,
    response_format: { type: "text" },
    modalities: ["text"],
    user: "u",
    metadata: { a: "b" },
  };
  await jsonOf(await post(app, "/v1/chat/completions", noop));
  const e = await expectError(
    await post(app, "/v1/chat/completions", {
      messages,
      tools: [{ type: "function", function: { name: "get_weather" } }],
    }),
    400,
    "tools",
  );
  assert.match(e.message, /^tools: tool calls are not supported/);
});

Deno.test("choices: a client that goes away frees every choice's session and slot", async () => {
  const t = await testApp();
  const engine = t.ctx.serving!.engine;
  const ac = new AbortController();
  const r = post(t.app, "/v1/completions", { prompt: ["a", "b"], n: 2, max_tokens: 5000 }, {
    signal: ac.signal,
  });
  await waitFor(() => engine.stats().running === 4, 10_000, "running");
  ac.abort();
  const res = await r;
  assert.equal(res.status, 499);
  await res.body?.cancel();
  await waitFor(() => engine.stats().running === 0 && t.ctx.busy.size === 0, 10_000, "freed");
  const s = await post(t.app, "/v1/chat/completions", {
    messages: [{ role: "user", content: "x" }],
    n: 3,
    max_tokens: 5000,
    stream: true,
  });
  const reader = s.body!.getReader();
  await reader.read();
  await reader.cancel();
  await waitFor(() => engine.stats().running === 0 && t.ctx.busy.size === 0, 10_000, "freed");
  for (const id of t.ctx.busy.keys()) assert.fail(`session ${id} still held`);
});
