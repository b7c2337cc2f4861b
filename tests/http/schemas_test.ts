import assert from "node:assert/strict";
import { HttpError } from "../../src/http/errors.ts";
import {
  parseChatRequest,
  parseCompletionRequest,
  parsePrompt,
  parseSessionCreate,
} from "../../src/http/schemas.ts";

const limits = { vocabSize: 100, maxTokensLimit: 1000, defaultChatMaxTokens: 64 };

function param(f: () => unknown): string | null {
  try {
    f();
  } catch (e) {
    assert.ok(e instanceof HttpError);
    assert.equal(e.status, 400);
    return e.param;
  }
  throw new Error("did not throw");
}

Deno.test("schemas: completion defaults and mapping to engine parameters", () => {
  const p = parseCompletionRequest({ prompt: "hi" }, limits);
  assert.equal(p.maxTokens, 16);
  assert.deepEqual(p.sampling, {});
  assert.deepEqual(p.stop, []);
  assert.equal(p.stream, false);
  assert.equal(p.includeUsage, false);
  assert.equal(p.logprobs, undefined);
  assert.equal(p.store, true);
  assert.equal(p.echo, false);
  const q = parseCompletionRequest({
    prompt: [[1, 2]],
    max_tokens: 0,
    temperature: 0.5,
    top_p: 0.9,
    top_k: -1,
    min_p: 0.1,
    repetition_penalty: 1.2,
    presence_penalty: 1,
    frequency_penalty: -1,
    logit_bias: { "3": 5 },
    seed: 9,
    stop: "x",
    logprobs: 0,
    n: 1,
    stream: true,
    stream_options: { include_usage: true },
    user: { anything: true },
    session: "s_1",
    store: false,
    extra_field: 1,
  }, limits);
  assert.deepEqual(q.prompt, [1, 2]);
  assert.equal(q.maxTokens, 0);
  assert.deepEqual(q.sampling, {
    temperature: 0.5,
    topP: 0.9,
    topK: 0,
    minP: 0.1,
    repetitionPenalty: 1.2,
    presencePenalty: 1,
    frequencyPenalty: -1,
    logitBias: { "3": 5 },
    seed: 9,
  });
  assert.deepEqual(q.stop, ["x"]);
  assert.equal(q.logprobs, 0);
  assert.ok(q.stream && q.includeUsage);
  assert.equal(q.session, "s_1");
  assert.equal(q.store, false);
  // null reads as absent.
  assert.equal(
    parseCompletionRequest({ prompt: "a", max_tokens: null, n: null, stop: null }, limits)
      .maxTokens,
    16,
  );
});

Deno.test("schemas: chat defaults, max_completion_tokens, logprobs", () => {
  const c = parseChatRequest({ messages: [{ role: "user", content: "" }] }, limits);
  assert.equal(c.maxTokens, 64);
  assert.deepEqual(c.messages, [{ role: "user", content: "" }]);
  assert.equal(c.logprobs, undefined);
  assert.equal(
    parseChatRequest({ messages: [{ role: "user", content: "x" }], logprobs: true }, limits)
      .logprobs,
    0,
  );
  assert.equal(
    parseChatRequest(
      { messages: [{ role: "user", content: "x" }], logprobs: true, top_logprobs: 7 },
      limits,
    ).logprobs,
    7,
  );
  assert.equal(
    parseChatRequest({
      messages: [{ role: "user", content: "x" }],
      max_tokens: 5,
      max_completion_tokens: 3,
    }, limits)
      .maxTokens,
    3,
  );
  // With a session, messages may be empty (continue the reply).
  assert.deepEqual(parseChatRequest({ messages: [], session: "abc" }, limits).messages, []);
});

Deno.test("schemas: prompts", () => {
  assert.equal(parsePrompt("a"), "a");
  assert.equal(parsePrompt(["a"]), "a");
  assert.deepEqual(parsePrompt([1]), [1]);
  assert.deepEqual(parsePrompt([[1]]), [1]);
  for (const bad of [1, null, [], ["a", "b"], [[1], [2]], [1, "a"], [1.5], [[]], [{}], {}]) {
    assert.equal(param(() => parsePrompt(bad)), "prompt", JSON.stringify(bad));
  }
});

Deno.test("schemas: session creation", () => {
  assert.deepEqual(parseSessionCreate({}), { id: undefined });
  assert.deepEqual(parseSessionCreate({ id: "a-b_c", prompt: [5] }), { id: "a-b_c", prompt: [5] });
  assert.equal(param(() => parseSessionCreate({ id: "" })), "id");
  assert.equal(param(() => parseSessionCreate({ id: "x".repeat(129) })), "id");
  assert.equal(param(() => parseSessionCreate({ prompt: "a", messages: [] })), "messages");
  assert.deepEqual(parseSessionCreate({ state_encoding: "q8+deflate" }), {
    id: undefined,
    stateEncoding: "q8+deflate",
  });
  assert.equal(param(() => parseSessionCreate({ state_encoding: "q9" })), "state_encoding");
});

Deno.test("schemas: chat messages need a known role and content (400 naming the field)", () => {
  const chat = (messages: unknown) => () => parseChatRequest({ messages }, limits);
  const ok = { role: "user", content: "x" };
  for (const role of ["system", "developer", "user", "assistant"]) {
    assert.equal(
      parseChatRequest({ messages: [{ role, content: "x" }] }, limits).messages[0].role,
      role,
    );
  }
  for (const role of ["u", "User", "tool", "function", "narrator", "__proto__"]) {
    assert.equal(param(chat([ok, { role, content: "x" }])), "messages[1].role", role);
  }
  assert.equal(param(chat([{ role: 5, content: "x" }])), "messages[0].role");
  assert.equal(param(chat([{ role: "user" }])), "messages[0].content");
  assert.equal(param(chat([ok, { role: "assistant", content: null }])), "messages[1].content");
  assert.throws(chat([{ role: "bot", content: "x" }]), /messages\[0\]\.role: "bot" is not one of/);
});
