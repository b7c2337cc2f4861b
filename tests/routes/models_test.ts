import assert from "node:assert/strict";
import { expectError, jsonOf, testApp } from "../http/support.ts";

const { app } = await testApp();

Deno.test("models: the list holds the served model, named after its directory", async () => {
  const body = await jsonOf(await app.request("/v1/models"));
  assert.equal(body.object, "list");
  const data = body.data as Record<string, unknown>[];
  assert.equal(data.length, 1);
  assert.equal(data[0].id, "tnl-shakespeare-6m");
  assert.equal(data[0].object, "model");
  assert.equal(typeof data[0].created, "number");
  assert.equal(data[0].owned_by, "tnl-edge");
  assert.deepEqual(await jsonOf(await app.request("/v1/models/tnl-shakespeare-6m")), data[0]);
  await expectError(await app.request("/v1/models/org/other"), 404, "model");
});
