import assert from "node:assert/strict";
import { cpuModel, expectError, jsonOf, post, sseChunks, testApp } from "../http/support.ts";

const { app } = await testApp();
const model = await cpuModel();
const tok = model.tokenizer;

Deno.test("completions: OpenAI shape, default max_tokens 16, session returned", async () => {
  const res = await post(app, "/v1/completions", {
    model: "tnl-shakespeare-6m",
    prompt: "ROMEO:",
    temperature: 0,
    user: "someone",
    some_unknown_field: { nested: true },
  });
  assert.match(res.headers.get("x-request-id") ?? "", /^req_/);
  const body = await jsonOf(res);
  assert.match(body.id as string, /^cmpl-/);
  assert.equal(body.object, "text_completion");
  assert.equal(typeof body.created, "number");
  assert.equal(body.model, "tnl-shakespeare-6m");
  const [choice] = body.choices as Record<string, unknown>[];
  assert.equal(choice.index, 0);
  assert.equal(typeof choice.text, "string");
  assert.equal(choice.logprobs, null);
  assert.ok(choice.finish_reason === "length" || choice.finish_reason === "stop");
  const usage = body.usage as Record<string, number>;
  assert.equal(usage.prompt_tokens, tok.encode("ROMEO:").length);
  assert.equal(usage.completion_tokens, 16);
  assert.equal(usage.total_tokens, usage.prompt_tokens + 16);
  assert.match(body.session as string, /^s_/);
});

Deno.test("completions: greedy output equals the engine's, prompt as text, ids and arrays", async () => {
  const ids = Array.from(tok.encode("JULIET:"));
  let expected = "";
  for await (const c of model.generate("JULIET:", { maxTokens: 8, temperature: 0 })) {
    expected += c.text;
  }
  for (const prompt of ["JULIET:", ["JULIET:"], ids, [ids]]) {
    const body = await jsonOf(
      await post(app, "/v1/completions", { prompt, max_tokens: 8, temperature: 0 }),
    );
    const [choice] = body.choices as { text: string }[];
    assert.equal(choice.text, expected, `prompt ${JSON.stringify(prompt)}`);
  }
});

Deno.test("completions: echo, stop, empty prompt", async () => {
  const echoed = await jsonOf(
    await post(app, "/v1/completions", {
      prompt: "KING:",
      max_tokens: 3,
      echo: true,
      temperature: 0,
    }),
  );
  assert.ok((echoed.choices as { text: string }[])[0].text.startsWith("KING:"));
  // Greedy from "ROMEO:" starts with a newline; stopping at it gives "" and finish "stop".
  const stopped = await jsonOf(
    await post(app, "/v1/completions", {
      prompt: "ROMEO:",
      max_tokens: 20,
      temperature: 0,
      stop: "\n",
    }),
  );
  const [c] = stopped.choices as { text: string; finish_reason: string }[];
  assert.equal(c.finish_reason, "stop");
  assert.ok(!c.text.includes("\n"));
  const empty = await jsonOf(
    await post(app, "/v1/completions", { prompt: "", max_tokens: 2, temperature: 0 }),
  );
  assert.equal((empty.usage as { prompt_tokens: number }).prompt_tokens, 1); // BOS
});

Deno.test("completions: logprobs 0-5 in the legacy shape", async () => {
  const body = await jsonOf(
    await post(app, "/v1/completions", {
      prompt: "ROMEO:",
      max_tokens: 4,
      temperature: 0,
      logprobs: 3,
    }),
  );
  const [c] = body.choices as { text: string; logprobs: Record<string, unknown[]> }[];
  const lp = c.logprobs;
  assert.equal(lp.tokens.length, 4);
  assert.equal(lp.token_logprobs.length, 4);
  assert.equal(lp.text_offset.length, 4);
  assert.equal(lp.tokens.join(""), c.text);
  assert.deepEqual(
    lp.text_offset,
    [0, 1, 2, 3].map((i) => (lp.tokens as string[]).slice(0, i).join("").length),
  );
  for (let i = 0; i < 4; i++) {
    const top = lp.top_logprobs[i] as Record<string, number>;
    assert.ok(Object.keys(top).length >= 1 && Object.keys(top).length <= 3);
    // Greedy: the chosen token is the most probable one.
    assert.equal(Math.max(...Object.values(top)), lp.token_logprobs[i]);
  }
  await expectError(
    await post(app, "/v1/completions", { prompt: "a", logprobs: 6 }),
    400,
    "logprobs",
  );
});

Deno.test("completions: seeded sampling is reproducible, streaming equals non-streaming", async () => {
  const req = { prompt: "ROMEO:", max_tokens: 12, temperature: 0.9, seed: 42, top_k: 40 };
  const a = await jsonOf(await post(app, "/v1/completions", req));
  const b = await jsonOf(await post(app, "/v1/completions", req));
  const text = (a.choices as { text: string }[])[0].text;
  assert.equal((b.choices as { text: string }[])[0].text, text);
  const chunks = await sseChunks(
    await post(app, "/v1/completions", {
      ...req,
      stream: true,
      stream_options: { include_usage: true },
    }),
  );
  let streamed = "";
  for (const ch of chunks.slice(0, -1)) {
    assert.equal(ch.object, "text_completion");
    assert.equal(ch.usage, null);
    streamed += (ch.choices as { text: string }[])[0].text;
  }
  assert.equal(streamed, text);
  const last = chunks.at(-1)!;
  assert.deepEqual(last.choices, []);
  assert.equal((last.usage as { completion_tokens: number }).completion_tokens, 12);
  const fin = chunks.at(-2)!.choices as { finish_reason: string }[];
  assert.equal(fin[0].finish_reason, "length");
});

Deno.test("completions: continuing the returned session equals one longer generation", async () => {
  const whole = await jsonOf(
    await post(app, "/v1/completions", { prompt: "ROMEO:", max_tokens: 10, temperature: 0 }),
  );
  const first = await jsonOf(
    await post(app, "/v1/completions", { prompt: "ROMEO:", max_tokens: 4, temperature: 0 }),
  );
  const second = await jsonOf(
    await post(app, "/v1/completions", { prompt: "", session: first.session, max_tokens: 6 }),
  );
  assert.equal(second.session, first.session);
  const t = (b: Record<string, unknown>) => (b.choices as { text: string }[])[0].text;
  assert.equal(t(first) + t(second), t(whole));
  assert.equal((second.usage as { prompt_tokens: number }).prompt_tokens, 0);
});

Deno.test("completions: store false keeps no session", async () => {
  const body = await jsonOf(
    await post(app, "/v1/completions", { prompt: "A", max_tokens: 1, store: false }),
  );
  assert.equal(body.session, null);
});

Deno.test("completions: field errors name the field", async () => {
  const cases: [Record<string, unknown>, string][] = [
    [{ prompt: 5 }, "prompt"],
    [{ prompt: ["a", 5] }, "prompt[1]"],
    [{ prompt: ["a", []] }, "prompt[1]"],
    [{ prompt: ["a", "b"], session: "s_x" }, "prompt"],
    [{ prompt: [] }, "prompt"],
    [{ prompt: [1, 2.5] }, "prompt"],
    [{ prompt: [1, 99999] }, "prompt"],
    [{}, "prompt"],
    [{ prompt: "a", n: 0 }, "n"],
    [{ prompt: "a", n: 2, session: "s_x" }, "n"],
    [{ prompt: Array(5).fill("a"), n: 16 }, "n"],
    [{ prompt: "a", tools: [{ type: "function" }] }, "tools"],
    [{ prompt: "a", response_format: { type: "json_schema" } }, "response_format"],
    [{ prompt: "a", max_tokens: "5" }, "max_tokens"],
    [{ prompt: "a", max_tokens: -1 }, "max_tokens"],
    [{ prompt: "a", max_tokens: 1e9 }, "max_tokens"],
    [{ prompt: "a", temperature: -1 }, "temperature"],
    [{ prompt: "a", temperature: "hot" }, "temperature"],
    [{ prompt: "a", top_p: 0 }, "top_p"],
    [{ prompt: "a", top_k: 1.5 }, "top_k"],
    [{ prompt: "a", min_p: 2 }, "min_p"],
    [{ prompt: "a", repetition_penalty: 0 }, "repetition_penalty"],
    [{ prompt: "a", presence_penalty: 3 }, "presence_penalty"],
    [{ prompt: "a", frequency_penalty: "x" }, "frequency_penalty"],
    [{ prompt: "a", logit_bias: [1] }, "logit_bias"],
    [{ prompt: "a", logit_bias: { "999999": 1 } }, "logit_bias"],
    [{ prompt: "a", logit_bias: { "5": 1000 } }, "logit_bias"],
    [{ prompt: "a", seed: -1 }, "seed"],
    [{ prompt: "a", seed: "1" }, "seed"],
    [{ prompt: "a", stop: 3 }, "stop"],
    [{ prompt: "a", stop: [""] }, "stop"],
    [{ prompt: "a", stream: "yes" }, "stream"],
    [{ prompt: "a", stream_options: 1 }, "stream_options"],
    [{ prompt: "a", stream_options: { include_usage: "y" } }, "stream_options.include_usage"],
    [{ prompt: "a", echo: 1 }, "echo"],
    [{ prompt: "a", suffix: "x" }, "suffix"],
    [{ prompt: "a", best_of: 3 }, "best_of"],
    [{ prompt: "a", model: 7 }, "model"],
    [{ prompt: "a", session: 7 }, "session"],
    [{ prompt: "a", session: "bad id!" }, "session"],
    [{ prompt: "a", store: "no" }, "store"],
  ];
  for (const [body, param] of cases) {
    const e = await expectError(await post(app, "/v1/completions", body), 400, param);
    assert.ok(e.message.includes(param), `message names ${param}: ${e.message}`);
    assert.equal(e.type, "invalid_request_error");
  }
});

Deno.test("completions: unknown model is a 404 in the OpenAI shape", async () => {
  const e = await expectError(
    await post(app, "/v1/completions", { model: "gpt-4", prompt: "a" }),
    404,
    "model",
  );
  assert.equal(e.code, "model_not_found");
});

Deno.test("completions: unknown session is a 404", async () => {
  await expectError(
    await post(app, "/v1/completions", { prompt: "a", session: "s_doesnotexist" }),
    404,
    "session",
  );
});
