/**
 * The committed `kernels.wat` must be the generator's output, and `kernels_wasm.ts` its compilation.
 */

import assert from "node:assert/strict";
import {
  compileWat,
  GENERATED_PATH,
  renderModule,
  sharedVariant,
  WAT_PATH,
} from "../../../tools/build_wasm.ts";
import {
  KERNELS_SHARED_WASM_BASE64,
  KERNELS_WASM_BASE64,
} from "../../../src/cpu/wasm/kernels_wasm.ts";
import { generateWat, WAT_OUT_PATH } from "../../../tools/gen_kernels_wat.ts";

const root = new URL("../../../", import.meta.url);

Deno.test("wasm build: kernels_wasm.ts is up to date with kernels.wat", async () => {
  const text = await Deno.readTextFile(new URL(WAT_PATH, root));
  const bytes = await compileWat(text);
  const shared = await compileWat(sharedVariant(text), WAT_PATH, true);
  for (const [built, b64] of [[bytes, KERNELS_WASM_BASE64], [shared, KERNELS_SHARED_WASM_BASE64]]) {
    const committed = Uint8Array.from(atob(b64 as string), (c) => c.charCodeAt(0));
    const b = built as Uint8Array;
    assert.ok(
      b.length === committed.length && b.every((v, i) => v === committed[i]),
      `${GENERATED_PATH} is stale: run deno run -A tools/build_wasm.ts`,
    );
  }
  assert.equal(await Deno.readTextFile(new URL(GENERATED_PATH, root)), renderModule(bytes, shared));
  assert.ok(WebAssembly.validate(bytes));
  assert.ok(WebAssembly.validate(shared));
});

Deno.test("wasm build: kernels.wat is the output of tools/gen_kernels_wat.ts", async () => {
  assert.equal(
    await Deno.readTextFile(new URL(WAT_OUT_PATH, root)),
    generateWat(),
    `${WAT_OUT_PATH} is stale: run deno run -A tools/gen_kernels_wat.ts`,
  );
});
