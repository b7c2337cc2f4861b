/** A fixture of `tests/run_tests_test.ts`: a test fails, then the process aborts at exit. */
import { abortAtExit } from "./libc_abort.ts";

Deno.test("passes", () => {});
Deno.test("fails, and the process aborts while exiting", () => {
  abortAtExit();
  throw new Error("this test fails on purpose");
});
