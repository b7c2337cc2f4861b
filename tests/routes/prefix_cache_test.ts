/**
 * The prefix cache through the routes and the edge handler: a second request sharing a long prefix
 * reports `cached_tokens` and answers what a server without the cache answers; `/metrics` counts it;
 * `prefixCacheBytes: 0` turns it off.
 */

import assert from "node:assert/strict";
import { createEdgeHandler } from "../../src/edge/handler.ts";
import { jsonOf, post, testApp } from "../http/support.ts";
import { cpuModel } from "../http/support.ts";
import { heldOutTokens } from "../sessions/prefix_support.ts";

const model = await cpuModel();
const text = await heldOutTokens(model);
/** Two prompts sharing 300 tokens (the CPU's prefill chunk is 256: one boundary in common). */
const prompts = [0, 1].map((i) => [
  ...text.subarray(0, 300),
  ...text.subarray(4000 + 30 * i, 4020 + 30 * i),
]);
const body = (prompt: number[]) => ({ prompt, max_tokens: 6, temperature: 0, store: false });

Deno.test("prefix cache (routes): cached tokens reported, same text as without the cache", async () => {
  const on = await testApp();
  const off = await testApp({ options: { prefixCacheBytes: 0 } });
  const usage = (r: Record<string, unknown>) =>
    r.usage as { prompt_tokens: number; prompt_tokens_details: { cached_tokens: number } };
  const text = (r: Record<string, unknown>) => (r.choices as { text: string }[])[0].text;
  const first = await jsonOf(await post(on.app, "/v1/completions", body(prompts[0])));
  const second = await jsonOf(await post(on.app, "/v1/completions", body(prompts[1])));
  assert.equal(usage(first).prompt_tokens_details.cached_tokens, 0);
  assert.equal(usage(second).prompt_tokens_details.cached_tokens, 256);
  assert.equal(usage(second).prompt_tokens, 320);
  const cold = await jsonOf(await post(off.app, "/v1/completions", body(prompts[1])));
  assert.equal(usage(cold).prompt_tokens_details.cached_tokens, 0);
  assert.equal(text(second), text(cold));
  const metrics = await (await on.app.request("/metrics")).text();
  assert.match(metrics, /^tnl_prefix_cache_hits_total 1$/m);
  assert.match(metrics, /^tnl_prefix_cache_tokens_skipped_total 256$/m);
  assert.match(metrics, /^tnl_prefix_cache_entries 1$/m);
  const none = await (await off.app.request("/metrics")).text();
  assert.doesNotMatch(none, /tnl_prefix_cache/);
});

Deno.test({
  name: "prefix cache (edge): a new inline session starts from the cached prefix",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const edge = createEdgeHandler({ loaded: model });
    const off = createEdgeHandler({ loaded: model, prefixCacheBytes: 0 });
    const call = async (h: typeof edge, prompt: number[]) => {
      const res = await h(
        new Request("http://edge/v1/generate", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ prompt, max_tokens: 6, temperature: 0 }),
        }),
      );
      assert.equal(res.status, 200);
      return await res.json();
    };
    await call(edge, prompts[0]);
    const warm = await call(edge, prompts[1]);
    const cold = await call(off, prompts[1]);
    assert.equal(warm.usage.prompt_tokens_details.cached_tokens, 256);
    assert.equal(cold.usage.prompt_tokens_details.cached_tokens, 0);
    assert.equal(warm.usage.prompt_tokens, cold.usage.prompt_tokens);
    assert.deepEqual(warm.tokens, cold.tokens);
  },
});
