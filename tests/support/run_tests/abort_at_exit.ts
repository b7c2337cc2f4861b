/** A fixture of `tests/run_tests_test.ts`: the test passes, then the process aborts at exit. */
import { abortAtExit } from "./libc_abort.ts";

Deno.test("passes, then the process aborts while exiting", () => abortAtExit());
