/** A fixture of `tests/run_tests_test.ts`: the process aborts while its test runs. */
import { abortNow } from "./libc_abort.ts";

Deno.test("aborts while running", () => abortNow());
