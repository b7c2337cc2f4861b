/**
 * Aborts the process through libc (FFI), for the fixtures of `tests/run_tests_test.ts`: now, or
 * while the process exits (as Mesa's teardown sometimes does).
 * @module
 */

const libc = Deno.dlopen("libc.so.6", {
  abort: { parameters: [], result: "void" },
  dlsym: { parameters: ["pointer", "buffer"], result: "pointer" },
  __cxa_atexit: { parameters: ["pointer", "pointer", "pointer"], result: "i32" },
});

/** Aborts the process at once (SIGABRT). */
export function abortNow(): void {
  libc.symbols.abort();
}

/** Registers libc's `abort` to run while the process exits, after `deno test` has reported. */
export function abortAtExit(): void {
  const abort = libc.symbols.dlsym(null, new TextEncoder().encode("abort\0"));
  if (abort === null) throw new Error("libc has no abort");
  libc.symbols.__cxa_atexit(abort, null, null);
}
