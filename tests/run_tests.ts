/**
 * Runs `deno test` with the given arguments (`deno task test` runs it twice: every test on the
 * default adapter, then the GPU tests on Mesa's GL adapter with `DENO_WEBGPU_BACKEND=gl`).
 *
 * Mesa's drivers sometimes corrupt their heap while the process exits, after every test has
 * reported ("double free or corruption", "corrupted size vs. prev_size in fastbins": seen in the GL
 * run, 1 of 6 runs here and once in CI, and once in a full run on lavapipe). A run that dies of a
 * signal is therefore run once more, and says so; a test failure (exit code 1) or a second signal
 * fails at once.
 * @module
 */

const args = ["test", ...Deno.args];
const label = Deno.env.get("DENO_WEBGPU_BACKEND") ?? "default adapter";

/** One run of the suite; returns the child's status. */
async function run(): Promise<Deno.CommandStatus> {
  const child = new Deno.Command(Deno.execPath(), { args, stdout: "inherit", stderr: "inherit" })
    .spawn();
  return await child.status;
}

let status = await run();
if (!status.success && status.signal !== null) {
  console.error(
    `\n[run_tests] the test process (${label}) died of ${status.signal} ` +
      `(exit code ${status.code}); running it once more`,
  );
  status = await run();
}
if (!status.success) {
  console.error(
    `[run_tests] tests (${label}) failed: exit code ${status.code}${
      status.signal ? `, signal ${status.signal}` : ""
    }`,
  );
}
Deno.exit(status.code);
