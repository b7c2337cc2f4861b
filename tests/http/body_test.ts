import assert from "node:assert/strict";
import { readBody, readJsonObject } from "../../src/http/body.ts";
import { HttpError } from "../../src/http/errors.ts";

function req(body: BodyInit | null, headers: Record<string, string> = {}): Request {
  return new Request("http://x/", { method: "POST", body, headers, duplex: "half" } as RequestInit);
}

async function status(p: Promise<unknown>): Promise<number> {
  try {
    await p;
    return 200;
  } catch (e) {
    assert.ok(e instanceof HttpError, String(e));
    return e.status;
  }
}

Deno.test("body: reads whole bodies under the limit", async () => {
  assert.deepEqual(await readBody(req("abc"), 3), new TextEncoder().encode("abc"));
  assert.deepEqual(await readBody(req(null), 3), new Uint8Array(0));
  assert.deepEqual(await readJsonObject(req('{"a":1}'), 100), { a: 1 });
  assert.deepEqual(await readJsonObject(req(""), 100, { allowEmpty: true }), {});
});

Deno.test("body: a declared length over the limit is refused before reading", async () => {
  let pulled = 0;
  const body = new ReadableStream({
    pull(c) {
      pulled++;
      c.enqueue(new Uint8Array(10));
    },
  });
  assert.equal(await status(readBody(req(body, { "content-length": "1000" }), 100)), 413);
  assert.ok(pulled <= 1, `pulled ${pulled}`);
});

Deno.test("body: an undeclared stream is cut off as soon as it passes the limit", async () => {
  let pulled = 0;
  let cancelled = false;
  const body = new ReadableStream({
    pull(c) {
      pulled++;
      c.enqueue(new Uint8Array(64));
    },
    cancel() {
      cancelled = true;
    },
  });
  assert.equal(await status(readBody(req(body), 1000)), 413);
  assert.ok(pulled <= 20, `pulled ${pulled}`);
  assert.ok(cancelled);
  // A lying Content-Length does not help.
  assert.equal(await status(readBody(req("x".repeat(500), { "content-length": "5" }), 100)), 413);
});

Deno.test("body: JSON errors are 400s", async () => {
  for (const b of ["", "{", "[]", "null", "1", '"s"']) {
    assert.equal(await status(readJsonObject(req(b), 100)), 400, b);
  }
  assert.equal(await status(readJsonObject(req(new Uint8Array([0x7b, 0xc3, 0x7d])), 100)), 400);
});
