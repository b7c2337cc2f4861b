/**
 * The server as a client "no one here wrote" sees it: the `openai` npm package against
 * `main.ts serve` in a subprocess (CPU backend). Completions and chat, streaming and not, seeded
 * determinism, errors, resume across processes, 32 concurrent streams, disconnects.
 */

import assert from "node:assert/strict";
// A test-only dependency: imported by version here, not in the runtime import map.
// deno-lint-ignore no-import-prefix
import OpenAI from "npm:openai@7.57.0";
import { decodeSession } from "../../src/state/codec.ts";
import { type ChildServer, cpuModel, startChildServer } from "./support.ts";

const MODEL = "tnl-shakespeare-6m";
const model = await cpuModel();
const codec = {
  config: model.config,
  modelFingerprint: model.fingerprint,
  tokenizerFingerprint: model.tokenizer.fingerprint,
};

function client(srv: ChildServer): OpenAI {
  return new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: "unused", maxRetries: 0, timeout: 60_000 });
}

async function postJson(url: string, body: unknown): Promise<Record<string, unknown>> {
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  assert.ok(res.ok, `${res.status} ${text}`);
  return JSON.parse(text);
}

async function stateTokens(
  srv: ChildServer,
  id: string,
): Promise<{ bytes: Uint8Array; tokens: number[] }> {
  const res = await fetch(`${srv.url}/v1/sessions/${id}/state`);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "application/vnd.msgpack");
  const bytes = new Uint8Array(await res.arrayBuffer());
  const snap = await decodeSession(bytes, codec);
  return { bytes, tokens: Array.from(snap.tokens!) };
}

async function metric(srv: ChildServer, name: string): Promise<number> {
  const text = await (await fetch(`${srv.url}/metrics`)).text();
  const m = text.match(new RegExp(`^${name} (\\S+)$`, "m"));
  assert.ok(m, name);
  return Number(m[1]);
}

Deno.test({
  name: "openai client: completions, chat, streaming, seeds, errors, concurrency, resume",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    const a = await startChildServer();
    let b: ChildServer | null = null;
    try {
      const oa = client(a);

      await t.step("models list", async () => {
        const list = await oa.models.list();
        assert.deepEqual(list.data.map((m) => m.id), [MODEL]);
      });

      await t.step(
        "completions: seeded twice gives the same text; streaming gives it too",
        async () => {
          const req = {
            model: MODEL,
            prompt: "ROMEO:",
            max_tokens: 12,
            temperature: 0.9,
            seed: 11,
          };
          const x = await oa.completions.create(req);
          const y = await oa.completions.create(req);
          assert.equal(x.object, "text_completion");
          assert.equal(x.model, MODEL);
          assert.equal(x.choices[0].text, y.choices[0].text);
          assert.equal(x.usage!.completion_tokens, 12);
          assert.match((x as unknown as { session: string }).session, /^s_/);
          const stream = await oa.completions.create({
            ...req,
            stream: true,
            stream_options: { include_usage: true },
          });
          let text = "";
          let usage: OpenAI.CompletionUsage | undefined;
          for await (const chunk of stream) {
            if (chunk.choices.length) text += chunk.choices[0].text;
            if (chunk.usage) usage = chunk.usage;
          }
          assert.equal(text, x.choices[0].text);
          assert.deepEqual(usage, x.usage);
        },
      );

      await t.step(
        "chat: seeded twice gives the same message; streaming gives it too",
        async () => {
          const req = {
            model: MODEL,
            messages: [{ role: "user" as const, content: "Speak, Horatio." }],
            max_completion_tokens: 10,
            temperature: 0.8,
            seed: 3,
          };
          const x = await oa.chat.completions.create(req);
          const y = await oa.chat.completions.create(req);
          assert.equal(x.object, "chat.completion");
          assert.equal(x.choices[0].message.role, "assistant");
          assert.equal(x.choices[0].message.content, y.choices[0].message.content);
          const stream = await oa.chat.completions.create({ ...req, stream: true });
          let text = "";
          let role = "";
          let finish: string | null = null;
          for await (const chunk of stream) {
            const c = chunk.choices[0];
            if (c.delta.role) role = c.delta.role;
            text += c.delta.content ?? "";
            if (c.finish_reason) finish = c.finish_reason;
          }
          assert.equal(role, "assistant");
          assert.equal(text, x.choices[0].message.content);
          assert.equal(finish, x.choices[0].finish_reason);
          // Logprobs through the client types.
          const lp = await oa.chat.completions.create({ ...req, logprobs: true, top_logprobs: 2 });
          assert.equal(lp.choices[0].logprobs!.content!.length, lp.usage!.completion_tokens);
        },
      );

      await t.step("a session continues through the client's extra body", async () => {
        const first = await oa.completions.create({
          model: MODEL,
          prompt: "KING:",
          max_tokens: 4,
          temperature: 0,
        });
        const session = (first as unknown as { session: string }).session;
        // Undocumented parameters go in the params object (the client sends it as the body).
        const params = { model: MODEL, prompt: "", max_tokens: 4, temperature: 0, session };
        const next = await oa.completions.create(
          params as OpenAI.CompletionCreateParamsNonStreaming,
        );
        assert.equal((next as unknown as { session: string }).session, session);
        const whole = await oa.completions.create({
          model: MODEL,
          prompt: "KING:",
          max_tokens: 8,
          temperature: 0,
        });
        assert.equal(first.choices[0].text + next.choices[0].text, whole.choices[0].text);
      });

      await t.step("n = 2 and prompt arrays answer one choice per prompt and copy", async () => {
        const r = await oa.completions.create({
          model: MODEL,
          prompt: ["ROMEO:", "JULIET:"],
          n: 2,
          max_tokens: 3,
          seed: 1,
        });
        assert.deepEqual(r.choices.map((c) => c.index), [0, 1, 2, 3]);
        const chat = await oa.chat.completions.create({
          model: MODEL,
          messages: [{ role: "user", content: "a" }],
          n: 2,
          max_tokens: 3,
        });
        assert.deepEqual(chat.choices.map((c) => c.index), [0, 1]);
      });

      await t.step("errors reach the client as typed API errors", async () => {
        await assert.rejects(
          oa.completions.create({ model: "gpt-4", prompt: "a" }),
          (e: unknown) => e instanceof OpenAI.NotFoundError && e.status === 404,
        );
        await assert.rejects(
          oa.chat.completions.create({
            model: MODEL,
            messages: [{ role: "user", content: "a" }],
            tools: [{ type: "function", function: { name: "f", parameters: {} } }],
          }),
          (e: unknown) =>
            e instanceof OpenAI.BadRequestError && (e.error as { param: string }).param === "tools",
        );
        await assert.rejects(
          oa.chat.completions.create({ model: MODEL, messages: [], max_tokens: 1 }),
          (e: unknown) => e instanceof OpenAI.BadRequestError,
        );
      });

      await t.step(
        "32 concurrent streams, each with its own seed, equal their runs alone",
        async () => {
          const N = 32;
          const run = async (seed: number) => {
            const stream = await oa.completions.create({
              model: MODEL,
              prompt: "ROMEO:",
              max_tokens: 6,
              temperature: 0.9,
              seed,
              stream: true,
            });
            let text = "";
            for await (const c of stream) text += c.choices[0]?.text ?? "";
            return text;
          };
          const alone: string[] = [];
          for (let i = 0; i < N; i++) alone.push(await run(1000 + i));
          const together = await Promise.all(Array.from({ length: N }, (_, i) => run(1000 + i)));
          assert.deepEqual(together, alone);
          assert.ok(new Set(alone).size > 1, "different seeds give different texts");
        },
      );

      await t.step("clients that disconnect mid-stream free their slots", async () => {
        for (let i = 0; i < 3; i++) {
          const stream = await oa.completions.create({
            model: MODEL,
            prompt: "ROMEO:",
            max_tokens: 5000,
            stream: true,
          });
          let n = 0;
          for await (const _ of stream) {
            if (++n === 2) break; // the client aborts the request
          }
        }
        const t0 = Date.now();
        for (;;) {
          const running = await metric(a, "tnl_running_sequences");
          const queue = await metric(a, "tnl_queue_depth");
          const busy = await metric(a, "tnl_sessions_busy");
          if (running === 0 && queue === 0 && busy === 0) break;
          assert.ok(Date.now() - t0 < 10_000, `running ${running}, queue ${queue}, busy ${busy}`);
          await new Promise((r) => setTimeout(r, 50));
        }
      });

      for (const sampling of [{ temperature: 0 }, { temperature: 0.9, seed: 77 }]) {
        await t.step(`resume in a new process is exact (${JSON.stringify(sampling)})`, async () => {
          const N = 24, k = 10;
          const whole = await postJson(`${a.url}/v1/sessions`, { prompt: "JULIET:" });
          const w = await postJson(`${a.url}/v1/sessions/${whole.id}/completions`, {
            ...sampling,
            max_tokens: N,
          });
          const wholeTokens = (await stateTokens(a, whole.id as string)).tokens;

          const split = await postJson(`${a.url}/v1/sessions`, { prompt: "JULIET:" });
          const first = await postJson(`${a.url}/v1/sessions/${split.id}/completions`, {
            ...sampling,
            max_tokens: k,
          });
          const { bytes } = await stateTokens(a, split.id as string);
          b ??= await startChildServer();
          const put = await fetch(`${b.url}/v1/sessions/${split.id}/state`, {
            method: "PUT",
            headers: { "content-type": "application/vnd.msgpack" },
            body: bytes as Uint8Array<ArrayBuffer>,
          });
          assert.equal(put.status, 201, await put.clone().text());
          await put.body?.cancel();
          const rest = await postJson(`${b.url}/v1/sessions/${split.id}/completions`, {
            temperature: sampling.temperature,
            max_tokens: N - k,
          });
          const resumed = (await stateTokens(b, split.id as string)).tokens;
          assert.deepEqual(resumed, wholeTokens);
          const text = (x: Record<string, unknown>) => (x.choices as { text: string }[])[0].text;
          assert.equal(text(first) + text(rest), text(w));
        });
      }
    } finally {
      const codeA = await a.stop();
      const codeB = b ? await (b as ChildServer).stop() : 0;
      assert.equal(codeA, 0, a.stderr.join("\n"));
      assert.equal(codeB, 0);
      assert.ok(a.stderr.some((l) => l.includes('"msg":"stopped"')), "graceful shutdown logged");
    }
  },
});
