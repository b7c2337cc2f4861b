import assert from "node:assert/strict";
import { TnlError } from "../../src/errors.ts";
import {
  CHAT_TEMPLATE_FILE,
  DEFAULT_CHAT_TEMPLATE,
  loadChatTemplate,
  messageEnd,
  parseChatTemplate,
  renderChat,
  renderContinuation,
  renderMessage,
} from "../../src/sessions/chat_template.ts";

const msgs = [
  { role: "system", content: "Be kind." },
  { role: "user", content: "Hello" },
];

Deno.test("chat template: the default renders role: content blocks and a generation prompt", () => {
  assert.equal(
    renderChat(DEFAULT_CHAT_TEMPLATE, msgs),
    "system: Be kind.\n\nuser: Hello\n\nassistant:",
  );
  assert.equal(messageEnd(DEFAULT_CHAT_TEMPLATE), "\n\n");
  assert.deepEqual(DEFAULT_CHAT_TEMPLATE.stop, ["\n\nuser:", "\n\nsystem:", "\n\nassistant:"]);
  // One-pass substitution: placeholders inside content stay as they are.
  assert.equal(
    renderMessage(DEFAULT_CHAT_TEMPLATE, { role: "user", content: "{role} and {content}" }),
    "user: {role} and {content}\n\n",
  );
});

Deno.test("chat template: a file overrides fields; roles and prefix", async () => {
  const dir = await Deno.makeTempDir();
  try {
    assert.deepEqual(await loadChatTemplate(dir), DEFAULT_CHAT_TEMPLATE);
    await Deno.writeTextFile(
      `${dir}/${CHAT_TEMPLATE_FILE}`,
      JSON.stringify({
        message: "<{role}>{content}</s>",
        generation_prompt: "<BOT>",
        stop: ["</s>"],
        roles: { user: "USER", assistant: "BOT" },
        prefix: "[chat]",
      }),
    );
    const t = await loadChatTemplate(dir + "/");
    assert.equal(renderChat(t, msgs), "[chat]<system>Be kind.</s><USER>Hello</s><BOT>");
    assert.deepEqual(t.stop, ["</s>"]);
    assert.equal(messageEnd(t), "</s>");
    // Fields left out keep the defaults.
    await Deno.writeTextFile(
      `${dir}/${CHAT_TEMPLATE_FILE}`,
      JSON.stringify({ generation_prompt: "A:" }),
    );
    const t2 = await loadChatTemplate(dir);
    assert.equal(t2.message, DEFAULT_CHAT_TEMPLATE.message);
    assert.equal(t2.generationPrompt, "A:");
    assert.deepEqual(t2.stop, DEFAULT_CHAT_TEMPLATE.stop);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("chat template: malformed files and fields are config_invalid errors naming the field", async () => {
  const bad: [unknown, string][] = [
    [[], "JSON object"],
    [{ message: 5 }, '"message"'],
    [{ message: "{role} only" }, "{content}"],
    [{ generation_prompt: [] }, '"generation_prompt"'],
    [{ stop: "x" }, '"stop"'],
    [{ stop: [""] }, '"stop"'],
    [{ stop: [1] }, '"stop"'],
    [{ roles: [] }, '"roles"'],
    [{ roles: { user: 1 } }, '"roles.user"'],
    [{ prefix: 1 }, '"prefix"'],
  ];
  for (const [value, needle] of bad) {
    assert.throws(
      () => parseChatTemplate(value, "t.json"),
      (e: unknown) =>
        e instanceof TnlError && e.code === "config_invalid" && e.message.includes(needle),
      JSON.stringify(value),
    );
  }
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/${CHAT_TEMPLATE_FILE}`, "{not json");
    await assert.rejects(
      loadChatTemplate(dir),
      (e: unknown) => e instanceof TnlError && /not valid JSON/.test(e.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("chat template: a continuation closes the reply and skips what the session already ends with", () => {
  const t = DEFAULT_CHAT_TEMPLATE;
  const next = [{ role: "user", content: "More" }];
  // The reply ended at the stop string "\n\nuser:", which the state has consumed.
  assert.equal(renderContinuation(t, next, "Sure thing.\n\nuser:"), " More\n\nassistant:");
  // The reply ended by length: the whole message end is written.
  assert.equal(renderContinuation(t, next, "Sure thing"), "\n\nuser: More\n\nassistant:");
  // The reply ended with one newline.
  assert.equal(renderContinuation(t, next, "Sure thing.\n"), "\nuser: More\n\nassistant:");
  // In every case the text of the conversation is the same.
  for (
    const tail of ["Sure thing.\n\nuser:", "Sure thing.\n\n", "Sure thing.\n\nu", "Sure thing."]
  ) {
    const joined = tail + renderContinuation(t, next, tail);
    assert.ok(joined.startsWith("Sure thing."));
    assert.ok(joined.endsWith("\n\nuser: More\n\nassistant:"), JSON.stringify(joined));
  }
});

Deno.test("chat template: the generation prompt leaves the next word's space to the model", async () => {
  const { loadModel } = await import("../../src/load.ts");
  const model = await loadModel(undefined, { backend: "cpu" });
  try {
    const tok = model.tokenizer;
    const piece = (id: number) => tok.model.pieces[id].piece;
    const prompt = renderChat(DEFAULT_CHAT_TEMPLATE, [{ role: "user", content: "Hello" }]);
    // The prompt does not end with a lone space piece, which belongs to the next word.
    const ids = tok.encode(prompt);
    assert.notEqual(piece(ids[ids.length - 1]), "\u2581");
    // So the greedy reply starts a word (a piece with its space, or a newline), not mid-word; with
    // "assistant: " it began "Que, my lord".
    let first = -1;
    for await (const c of model.generate(prompt, { maxTokens: 1, temperature: 0 })) {
      if (c.tokens.length && first < 0) first = c.tokens[0];
    }
    assert.match(piece(first), /^(\u2581|<0x0A>)/, `first token ${JSON.stringify(piece(first))}`);
  } finally {
    await model.dispose();
  }
});
