/**
 * Locating the official implementation's fixtures (`../shared/fixtures` beside the repository).
 *
 * When they are absent, fixture tests are skipped, unless `TNL_REQUIRE_FIXTURES=1` (set by CI), in
 * which case they fail: the parity tests must run in CI.
 * @module
 */

const repoRoot = new URL("../", import.meta.url);

/** The fixtures directory (with a trailing slash), or null when it is not there. */
export function fixturesDir(): string | null {
  const env = Deno.env.get("TNL_FIXTURES_DIR");
  const dir = env
    ? (env.endsWith("/") ? env : env + "/")
    : new URL("../shared/fixtures/", repoRoot).pathname;
  try {
    return Deno.statSync(dir).isDirectory ? dir : null;
  } catch {
    return null;
  }
}

/** Path of the embedded default model directory. */
export const DEFAULT_MODEL_DIR: string = new URL("models/tnl-shakespeare-6m/", repoRoot).pathname;

/** Register a test that needs the fixtures; `fn` gets the fixtures directory. */
export function fixtureTest(
  name: string,
  fn: (dir: string, t: Deno.TestContext) => Promise<void> | void,
): void {
  const dir = fixturesDir();
  const required = Deno.env.get("TNL_REQUIRE_FIXTURES") === "1";
  Deno.test({
    name,
    ignore: dir === null && !required,
    fn: (t) => {
      if (dir === null) {
        throw new Error(
          "fixtures not found: set TNL_FIXTURES_DIR or place them at ../shared/fixtures",
        );
      }
      return fn(dir, t);
    },
  });
}
