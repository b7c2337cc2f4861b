/**
 * The committed `kernels.wat` must be the generator's output, and `kernels_wasm.ts` its compilation.
 */

import assert from "node:assert/strict";
import { compileWat, GENERATED_PATH, renderModule, WAT_PATH } from "../../../tools/build_wasm.ts";
import { KERNELS_WASM_BASE64 } from "../../../src/cpu/wasm/kernels_wasm.ts";
import { generateWat, WAT_OUT_PATH } from "../../../tools/gen_kernels_wat.ts";

const root = new URL("../../../", import.meta.url);

Deno.test("wasm build: kernels_wasm.ts is up to date with kernels.wat", async () => {
  const bytes = await compileWat(await Deno.readTextFile(new URL(WAT_PATH, root)));
  const committed = Uint8Array.from(atob(KERNELS_WASM_BASE64), (c) => c.charCodeAt(0));
  assert.ok(
    bytes.length === committed.length && bytes.every((b, i) => b === committed[i]),
    `${GENERATED_PATH} is stale: run deno run -A tools/build_wasm.ts`,
  );
  assert.equal(await Deno.readTextFile(new URL(GENERATED_PATH, root)), renderModule(bytes));
  assert.ok(WebAssembly.validate(bytes));
});

Deno.test("wasm build: kernels.wat is the output of tools/gen_kernels_wat.ts", async () => {
  assert.equal(
    await Deno.readTextFile(new URL(WAT_OUT_PATH, root)),
    generateWat(),
    `${WAT_OUT_PATH} is stale: run deno run -A tools/gen_kernels_wat.ts`,
  );
});
