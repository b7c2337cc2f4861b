import assert from "node:assert/strict";
import { junitSummary } from "./run_tests.ts";

const FIXTURES = new URL("./support/run_tests/", import.meta.url);

/** Runs `tests/run_tests.ts` on one fixture module; its exit code and what it wrote to stderr. */
async function runTests(fixture: string): Promise<{ code: number; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("./run_tests.ts", import.meta.url).pathname,
      "-A",
      "--quiet",
      new URL(fixture, FIXTURES).pathname,
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

Deno.test("junitSummary: totals of a complete report; null for a partial or missing one", () => {
  const xml = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="deno test" tests="3" failures="1" errors="0" time="0.011">
  <testsuite name="./a.ts" tests="3" disabled="0" errors="0" failures="1"></testsuite>
</testsuites>
`;
  assert.deepEqual(junitSummary(xml), { tests: 3, failures: 1, errors: 0 });
  assert.equal(junitSummary(xml.slice(0, xml.indexOf("</testsuites>"))), null);
  assert.equal(junitSummary(""), null);
  assert.equal(junitSummary(xml.replace(' errors="0"', "")), null);
});

Deno.test("run_tests: a process that aborts at exit after every test passed counts as passed", async () => {
  const { code, stderr } = await runTests("abort_at_exit.ts");
  assert.equal(code, 0, stderr);
  assert.equal(stderr.includes("died of SIGABRT while exiting"), true, stderr);
});

Deno.test("run_tests: a failed test fails even when the process then aborts at exit", async () => {
  const { code, stderr } = await runTests("fails_then_aborts_at_exit.ts");
  assert.equal(code, 134, stderr);
  assert.equal(stderr.includes("running it once more"), true, stderr);
});

Deno.test("run_tests: an abort while tests run is run once more, then fails", async () => {
  const { code, stderr } = await runTests("abort_while_running.ts");
  assert.equal(code, 134, stderr);
  assert.equal(stderr.match(/running it once more/g)?.length, 1, stderr);
  assert.equal(stderr.includes("failed: exit code 134, signal SIGABRT"), true, stderr);
});
