import assert from "node:assert/strict";
import { loadModel } from "../src/load.ts";
import { InputError } from "../src/errors.ts";

Deno.test("loadModel: int8 weights are a different model (fingerprint) that still generates", async () => {
  const plain = await loadModel(undefined, { backend: "cpu" });
  const int8 = await loadModel(undefined, { backend: "cpu", quantize: "int8" });
  try {
    assert.notEqual(int8.fingerprint, plain.fingerprint);
    // The unquantized fingerprint does not depend on the option being spelled out.
    const none = await loadModel(undefined, { backend: "cpu", quantize: "none" });
    assert.equal(none.fingerprint, plain.fingerprint);
    await none.dispose();
    const ids = int8.tokenizer.encode("ROMEO:");
    const a = await int8.forward(ids, int8.newState());
    const b = await plain.forward(ids, plain.newState());
    let d = 0;
    for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
    assert.ok(d > 0 && d < 1, `last logits differ by ${d}`);
  } finally {
    await int8.dispose();
    await plain.dispose();
  }
});

Deno.test("loadModel: an unknown quantization is rejected by name", async () => {
  await assert.rejects(
    // deno-lint-ignore no-explicit-any
    () => loadModel(undefined, { backend: "cpu", quantize: "int4" as any }),
    (e: unknown) => e instanceof InputError && /quantize.*int4/.test(e.message),
  );
});
