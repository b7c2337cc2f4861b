/**
 * Runs the GPU tests on Mesa's GL adapter (llvmpipe through GL): `deno task test`'s second half.
 *
 * Mesa's GL driver sometimes corrupts its heap while the process exits, after every test has
 * reported ("double free or corruption" in CI, "corrupted size vs. prev_size in fastbins" in 1 of
 * 6 runs here; never on the Vulkan adapters). A run that dies of a signal is therefore run once
 * more, and says so; a test failure (exit code 1) or a second signal fails at once.
 * @module
 */

const args = ["test", "-A", "--quiet", "--lock=tests/deno.lock", "tests/gpu", ...Deno.args];
const env = { DENO_WEBGPU_BACKEND: "gl" };

/** One run of the suite; returns the child's status. */
async function run(): Promise<Deno.CommandStatus> {
  const child = new Deno.Command(Deno.execPath(), {
    args,
    env,
    stdout: "inherit",
    stderr: "inherit",
  })
    .spawn();
  return await child.status;
}

let status = await run();
if (!status.success && status.signal !== null) {
  console.error(
    `\n[gpu_gl] the GL test process died of ${status.signal} (exit code ${status.code}); ` +
      "running the GL suite once more",
  );
  status = await run();
}
if (!status.success) {
  console.error(
    `[gpu_gl] GL suite failed: exit code ${status.code}${
      status.signal ? `, signal ${status.signal}` : ""
    }`,
  );
}
Deno.exit(status.code);
