/**
 * The command line: unknown commands and flags are errors listing the valid ones, the server binds
 * to 127.0.0.1 by default, and a first start prints only our own lines (no warning box about npm
 * build scripts, no `XDG_RUNTIME_DIR` error from the GPU probe, with that variable unset as on a
 * server). The start test runs `deno task start` with the normal Deno cache.
 * @module
 */

import assert from "node:assert/strict";
import { parseCommandLine } from "../main.ts";
import { freePort } from "./scale/support.ts";

const ROOT = new URL("../", import.meta.url);

Deno.test("main: flags per command; unknown commands, flags and arguments are errors", () => {
  const ok = parseCommandLine(["--port", "9000", "--host", "0.0.0.0"]);
  assert.ok(!("error" in ok));
  assert.equal(ok.command, "serve");
  assert.equal(ok.args.port, "9000");
  const gen = parseCommandLine(["generate", "--prompt", "ROMEO:", "--max-tokens", "3"]);
  assert.ok(!("error" in gen) && gen.command === "generate" && gen.args.prompt === "ROMEO:");
  const bogus = parseCommandLine(["--bogus"]);
  assert.ok("error" in bogus);
  assert.match(bogus.error, /unknown argument --bogus; valid flags: .*--port .*--host /);
  const wrongCommand = parseCommandLine(["generate", "--port", "1"]);
  assert.ok("error" in wrongCommand && /--port/.test(wrongCommand.error));
  const stray = parseCommandLine(["serve", "extra"]);
  assert.ok("error" in stray && /extra/.test(stray.error));
  const cmd = parseCommandLine(["frob"]);
  assert.ok(
    "error" in cmd && /unknown command "frob"; valid commands: serve, generate/.test(cmd.error),
  );
});

/**
 * Run `main.ts` with `args`: it must exit with status 2 before loading (a server that starts instead
 * is killed after a minute and fails the test); its stderr.
 */
async function refusedBeforeLoading(args: string[]): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "main.ts", ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  assert.equal(out.code, 2);
  const err = new TextDecoder().decode(out.stderr);
  assert.ok(!/loaded|listening/.test(err));
  return err;
}

Deno.test("main: an unknown flag exits with status 2 before loading anything", async () => {
  const err = await refusedBeforeLoading(["serve", "--bogus"]);
  assert.match(err, /^serve: unknown argument --bogus; valid flags: /);
});

Deno.test("main: --state-encoding takes the valid names and refuses others before loading", async () => {
  const ok = parseCommandLine(["--state-encoding", "q8+deflate"]);
  assert.ok(!("error" in ok) && ok.args["state-encoding"] === "q8+deflate");
  const err = await refusedBeforeLoading(["serve", "--state-encoding", "q4"]);
  assert.match(
    err,
    /^--state-encoding: "q4" is not one of f32, f32\+deflate, bf16, bf16\+deflate, q8, q8\+deflate/,
  );
});

Deno.test("main: --readback takes auto or map and refuses others before loading", async () => {
  const ok = parseCommandLine(["generate", "--prompt", "x", "--readback", "map"]);
  assert.ok(!("error" in ok) && ok.args.readback === "map");
  const err = await refusedBeforeLoading(["serve", "--readback", "canvas"]);
  assert.match(err, /^--readback: expected auto or map, got canvas/);
});

/** Lines Deno itself prints for `deno task` (the command) and on a first run (downloads). */
const DENO_LINE = /^(Task start |Download https:\/\/)/;
/** Our lines: the load line with the backend choice and the listening line. */
const OUR_LINE =
  /^(\{"time":"[^"]+","level":.*\}|loaded .* on (cpu|webgpu) \(.*\) in \d+ ms \[backend auto: .*\]|listening on http:\/\/127\.0\.0\.1:\d+)$/;

Deno.test("main: deno task start prints only its own lines and listens on 127.0.0.1", async () => {
  const port = freePort();
  const env = Deno.env.toObject();
  delete env.XDG_RUNTIME_DIR;
  env.NO_COLOR = "1";
  const child = new Deno.Command("deno", {
    args: ["task", "start", "--port", String(port)],
    cwd: ROOT,
    env,
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  const collect = async (s: ReadableStream<Uint8Array>) => {
    let buf = "";
    for await (const chunk of s.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      const parts = buf.split("\n");
      buf = parts.pop()!;
      lines.push(...parts);
    }
    if (buf) lines.push(buf);
  };
  const reading = Promise.all([collect(child.stdout), collect(child.stderr)]);
  try {
    let up = false;
    for (let i = 0; i < 600 && !up; i++) {
      await new Promise((r) => setTimeout(r, 100));
      up = lines.some((l) => l.startsWith("listening on"));
    }
    assert.ok(up, `the server did not start:\n${lines.join("\n")}`);
    const res = await fetch(`http://127.0.0.1:${port}/health`);
    await res.body?.cancel();
    assert.equal(res.status, 200);
  } finally {
    child.kill("SIGTERM");
    await child.status;
    await reading;
  }
  const ours = lines.filter((l) => l.trim() !== "" && !DENO_LINE.test(l));
  for (const l of ours) assert.match(l, OUR_LINE, `a foreign line: ${JSON.stringify(l)}`);
  assert.ok(ours.some((l) => l.startsWith("loaded ")), lines.join("\n"));
});
