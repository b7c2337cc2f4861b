import assert from "node:assert/strict";
import { renderChat } from "../../src/sessions/chat_template.ts";
import { cpuModel, expectError, jsonOf, post, sseChunks, testApp } from "../http/support.ts";

const { app, ctx } = await testApp();
const model = await cpuModel();
const messages = [
  { role: "system", content: "You are a poet." },
  { role: "user", content: "Speak of love." },
];

Deno.test("chat: OpenAI shape; prompt is the template's rendering", async () => {
  const body = await jsonOf(
    await post(app, "/v1/chat/completions", {
      model: "tnl-shakespeare-6m",
      messages,
      max_tokens: 6,
      temperature: 0,
    }),
  );
  assert.match(body.id as string, /^chatcmpl-/);
  assert.equal(body.object, "chat.completion");
  assert.equal(body.model, "tnl-shakespeare-6m");
  const [c] = body.choices as Record<string, unknown>[];
  const msg = c.message as { role: string; content: string };
  assert.equal(msg.role, "assistant");
  assert.equal(typeof msg.content, "string");
  assert.equal(c.logprobs, null);
  const prompt = renderChat(ctx.serving!.chatTemplate, messages);
  assert.equal(prompt, "system: You are a poet.\n\nuser: Speak of love.\n\nassistant:");
  assert.equal(
    (body.usage as { prompt_tokens: number }).prompt_tokens,
    model.tokenizer.encode(prompt).length,
  );
  // Same text as a completion of the rendered prompt with the template's stop strings.
  const comp = await jsonOf(
    await post(app, "/v1/completions", {
      prompt,
      max_tokens: 6,
      temperature: 0,
      stop: ctx.serving!.chatTemplate.stop,
    }),
  );
  assert.equal(msg.content, (comp.choices as { text: string }[])[0].text);
});

Deno.test("chat: content parts, max_completion_tokens wins over max_tokens", async () => {
  const body = await jsonOf(
    await post(app, "/v1/chat/completions", {
      messages: [{
        role: "user",
        content: [{ type: "text", text: "Hi" }, { type: "text", text: "!" }],
      }],
      max_completion_tokens: 2,
      max_tokens: 50,
      temperature: 0,
    }),
  );
  assert.ok((body.usage as { completion_tokens: number }).completion_tokens <= 2);
});

Deno.test("chat: streaming chunks: role first, content deltas, finish, usage, [DONE]", async () => {
  const req = { messages, max_tokens: 8, temperature: 0.8, seed: 7 };
  const whole = await jsonOf(await post(app, "/v1/chat/completions", req));
  const chunks = await sseChunks(
    await post(app, "/v1/chat/completions", {
      ...req,
      stream: true,
      stream_options: { include_usage: true },
    }),
  );
  const first = (chunks[0].choices as { delta: Record<string, unknown> }[])[0];
  assert.deepEqual(first.delta, { role: "assistant", content: "" });
  let text = "";
  for (const ch of chunks.slice(1, -2)) {
    assert.equal(ch.object, "chat.completion.chunk");
    const [c] = ch.choices as { delta: { content: string }; finish_reason: null }[];
    assert.equal(c.finish_reason, null);
    text += c.delta.content;
  }
  assert.equal(text, (whole.choices as { message: { content: string } }[])[0].message.content);
  const fin = (chunks.at(-2)!.choices as { finish_reason: string; delta: unknown }[])[0];
  assert.deepEqual(fin.delta, {});
  assert.equal(fin.finish_reason, (whole.choices as { finish_reason: string }[])[0].finish_reason);
  assert.deepEqual(chunks.at(-1)!.choices, []);
  assert.deepEqual(chunks.at(-1)!.usage, whole.usage);
  // Without include_usage: no usage chunk.
  const plain = await sseChunks(await post(app, "/v1/chat/completions", { ...req, stream: true }));
  assert.ok(plain.every((c) => (c.choices as unknown[]).length === 1 && !("usage" in c)));
});

Deno.test("chat: logprobs with top_logprobs in choices[].logprobs.content", async () => {
  const body = await jsonOf(
    await post(app, "/v1/chat/completions", {
      messages,
      max_tokens: 4,
      temperature: 0,
      logprobs: true,
      top_logprobs: 3,
      logit_bias: { "5": -100 },
    }),
  );
  const [c] = body.choices as {
    message: { content: string };
    logprobs: { content: Record<string, unknown>[] };
  }[];
  const content = c.logprobs.content;
  assert.equal(content.length, 4);
  let joined = "";
  for (const t of content) {
    assert.equal(typeof t.token, "string");
    assert.ok(typeof t.logprob === "number" && (t.logprob as number) <= 0);
    if (/^\\x[0-9a-f]{2}$/.test(t.token as string)) assert.equal((t.bytes as number[]).length, 1);
    else assert.deepEqual(t.bytes, Array.from(new TextEncoder().encode(t.token as string)));
    const top = t.top_logprobs as { token: string; logprob: number; bytes: number[] }[];
    assert.equal(top.length, 3);
    assert.equal(top[0].logprob, t.logprob);
    assert.ok(top.every((a) => a.logprob >= -9999));
    joined += t.token;
  }
  assert.equal(
    joined.replace(/\\x[0-9a-f]{2}/g, ""),
    c.message.content.replace(/[\u0080-\uffff]/g, ""),
  );
  // logprobs without top_logprobs: an empty list per token.
  const b2 = await jsonOf(
    await post(app, "/v1/chat/completions", { messages, max_tokens: 2, logprobs: true }),
  );
  const c2 = (b2.choices as { logprobs: { content: { top_logprobs: unknown[] }[] } }[])[0];
  assert.ok(c2.logprobs.content.every((t) => t.top_logprobs.length === 0));
});

Deno.test("chat: a logit bias of -100 on every token but one forces it", async () => {
  const V = model.config.vocabSize;
  const forced = model.tokenizer.encode(" the")[0];
  const bias: Record<string, number> = {};
  for (let i = 0; i < V; i++) if (i !== forced) bias[String(i)] = -100;
  const body = await jsonOf(
    await post(app, "/v1/chat/completions", {
      messages,
      max_tokens: 2,
      temperature: 0,
      logprobs: true,
      top_logprobs: 20,
      logit_bias: bias,
    }),
  );
  const [c] = body.choices as {
    message: { content: string };
    logprobs: { content: { token: string; logprob: number }[] };
  }[];
  assert.equal(c.message.content, " the the");
  for (const t of c.logprobs.content) {
    assert.equal(t.token, " the");
    assert.ok(Number.isFinite(t.logprob));
  }
});

Deno.test("chat: continuing a session sends only the new messages", async () => {
  const first = await jsonOf(
    await post(app, "/v1/chat/completions", { messages, max_tokens: 5, temperature: 0 }),
  );
  const id = first.session as string;
  const before = await jsonOf(await app.request(`/v1/sessions/${id}`));
  const second = await jsonOf(
    await post(app, "/v1/chat/completions", {
      session: id,
      messages: [{ role: "user", content: "More." }],
      max_tokens: 5,
      temperature: 0,
    }),
  );
  assert.equal(second.session, id);
  const after = await jsonOf(await app.request(`/v1/sessions/${id}`));
  assert.equal(after.generation, (before.generation as number) + 1);
  // The session grew by the continuation prompt and the reply.
  const usage = second.usage as { prompt_tokens: number; completion_tokens: number };
  assert.equal(
    after.tokens,
    (before.tokens as number) + usage.prompt_tokens + usage.completion_tokens,
  );
  assert.ok(usage.prompt_tokens > 0 && usage.prompt_tokens < 20);
});

Deno.test("chat: field errors name the field", async () => {
  const cases: [Record<string, unknown>, string][] = [
    [{}, "messages"],
    [{ messages: "hi" }, "messages"],
    [{ messages: [] }, "messages"],
    [{ messages: [5] }, "messages[0]"],
    [{ messages: [{ content: "x" }] }, "messages[0].role"],
    [{ messages: [{ role: "user", content: 5 }] }, "messages[0].content"],
    [
      { messages: [{ role: "user", content: [{ type: "image_url" }] }] },
      "messages[0].content[0].type",
    ],
    [
      { messages: [{ role: "user", content: [{ type: "text", text: 1 }] }] },
      "messages[0].content[0].text",
    ],
    [{ messages, n: 0 }, "n"],
    [{ messages, n: 17 }, "n"],
    [{ messages, n: 1.5 }, "n"],
    [{ messages, n: 2, session: "s_x" }, "n"],
    [{ messages, tools: [{ type: "function", function: { name: "f" } }] }, "tools"],
    [{ messages, tool_choice: "auto" }, "tool_choice"],
    [{ messages, functions: [{ name: "f" }] }, "functions"],
    [{ messages, function_call: "auto" }, "function_call"],
    [{ messages, response_format: { type: "json_object" } }, "response_format"],
    [{ messages, audio: { voice: "x" } }, "audio"],
    [{ messages, logprobs: 1 }, "logprobs"],
    [{ messages, top_logprobs: 2 }, "top_logprobs"],
    [{ messages, logprobs: true, top_logprobs: 21 }, "top_logprobs"],
    [{ messages, max_completion_tokens: 0 }, "max_completion_tokens"],
    [{ messages, max_tokens: "x" }, "max_tokens"],
    [{ messages, stop: Array(20).fill("x").map((x, i) => x + i) }, "stop"],
  ];
  for (const [body, param] of cases) {
    await expectError(await post(app, "/v1/chat/completions", body), 400, param);
  }
  await expectError(
    await post(app, "/v1/chat/completions", { model: "other", messages }),
    404,
    "model",
  );
});
