import assert from "node:assert/strict";
import { parseSse, readSse, SSE_DONE, sseEvent, SseParser, SseWriter } from "../../src/http/sse.ts";

Deno.test("sse: events are data lines ending in a blank line", () => {
  assert.equal(sseEvent({ a: 1 }), 'data: {"a":1}\n\n');
  assert.equal(sseEvent(SSE_DONE), "data: [DONE]\n\n");
  assert.equal(sseEvent("x\ny"), "data: x\ndata: y\n\n");
});

Deno.test("sse: the parser handles split chunks, CRLF, comments, multi-line data", () => {
  const text =
    'data: {"a":1}\n\n: keep-alive\n\ndata: x\r\ndata: y\r\n\r\nevent: e\ndata:z\n\ndata: [DONE]\n\n';
  assert.deepEqual(parseSse(text), ['{"a":1}', "x\ny", "z", "[DONE]"]);
  for (let cut = 0; cut < text.length; cut++) {
    const p = new SseParser();
    const got = [...p.push(text.slice(0, cut)), ...p.push(text.slice(cut))];
    assert.deepEqual(got, ['{"a":1}', "x\ny", "z", "[DONE]"], `cut at ${cut}`);
  }
  assert.deepEqual(parseSse("data: incomplete\n"), []);
});

Deno.test("sse: the writer streams events; a cancel fires onCancel and later sends are dropped", async () => {
  const w = new SseWriter();
  w.send({ n: 1 });
  w.comment("ping");
  w.send(SSE_DONE);
  w.close();
  w.send({ n: 2 });
  const res = w.response({ "x-a": "b" });
  assert.equal(res.headers.get("content-type"), "text/event-stream; charset=utf-8");
  assert.equal(res.headers.get("cache-control"), "no-cache");
  assert.equal(res.headers.get("x-a"), "b");
  assert.deepEqual(await readSse(res.body!), ['{"n":1}', "[DONE]"]);

  let cancelled = 0;
  const w2 = new SseWriter(() => cancelled++);
  w2.onCancel(() => cancelled++);
  const reader = w2.stream.getReader();
  w2.send({ n: 1 });
  await reader.read();
  await reader.cancel();
  assert.equal(cancelled, 2);
  assert.ok(w2.cancelled);
  w2.send({ n: 2 }); // no throw
  w2.close();
  w2.onCancel(() => cancelled++);
  assert.equal(cancelled, 3);
});
