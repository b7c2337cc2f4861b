import assert from "node:assert/strict";
import { jsonOf, post, sseChunks, testApp } from "../http/support.ts";

Deno.test("metrics: Prometheus text with requests, durations, tokens, engine and sessions", async () => {
  const { app, logs } = await testApp();
  await jsonOf(await post(app, "/v1/completions", { prompt: "ROMEO:", max_tokens: 3 }));
  await sseChunks(
    await post(app, "/v1/completions", { prompt: "ROMEO:", max_tokens: 2, stream: true }),
  );
  await (await post(app, "/v1/completions", { prompt: 1 })).body?.cancel();
  const res = await app.request("/metrics");
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type")!, /^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  const value = (line: string) => {
    const m = text.match(new RegExp(`^${line.replace(/[{}()"+.\/]/g, "\\$&")} (\\S+)$`, "m"));
    assert.ok(m, `metric ${line} in\n${text}`);
    return Number(m[1]);
  };
  assert.equal(
    value('tnl_http_requests_total{route="/v1/completions",method="POST",status="200"}'),
    2,
  );
  assert.equal(
    value('tnl_http_requests_total{route="/v1/completions",method="POST",status="400"}'),
    1,
  );
  assert.equal(value('tnl_http_request_duration_seconds_count{route="/v1/completions"}'), 3);
  assert.equal(
    value('tnl_http_request_duration_seconds_bucket{route="/v1/completions",le="+Inf"}'),
    3,
  );
  assert.ok(value("tnl_prompt_tokens_total") >= 4);
  assert.ok(value("tnl_completion_tokens_total") >= 5);
  assert.equal(value("tnl_queue_depth"), 0);
  assert.equal(value("tnl_running_sequences"), 0);
  assert.ok(value("tnl_batch_size") >= 1);
  assert.ok(value("tnl_tokens_per_second") >= 0);
  assert.equal(value("tnl_sessions"), 2);
  assert.ok(value("tnl_state_bytes_stored") > 100_000);
  assert.equal(value("tnl_sessions_busy"), 0);
  assert.equal(value("tnl_model_ready"), 1);
  // Two generations had a first token; the 3 + 2 tokens gave 3 inter-token gaps.
  assert.equal(value("tnl_time_to_first_token_seconds_count"), 2);
  assert.equal(value('tnl_time_to_first_token_seconds_bucket{le="+Inf"}'), 2);
  assert.equal(value("tnl_inter_token_latency_seconds_count"), 3);
  assert.equal(value("tnl_prefilling_sequences"), 0);
  assert.ok(value("tnl_decode_round_steps") >= 0);
  // Every sample line is well-formed.
  for (const line of text.trim().split("\n")) {
    assert.match(line, /^(# (HELP|TYPE) \w+ .+|\w+(\{[^}]*\})? [-+\d.eInfNa]+)$/, line);
  }
  // The stream's log line came at its end, with its tokens.
  const streamed = logs.filter((l) => l.msg === "request" && l.path === "/v1/completions");
  assert.ok(streamed.some((l) => (l.tokens as { completion: number })?.completion === 2));
});
