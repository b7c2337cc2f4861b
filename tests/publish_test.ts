/**
 * The JSR package: `deno publish --dry-run` passes (license, no slow types) and the package holds the
 * module, its kernels and the embedded model, not the tests, benchmarks, tools or CI.
 * @module
 */

import assert from "node:assert/strict";

Deno.test("publish: the dry run passes with the module and its model only", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["publish", "--dry-run", "--allow-dirty"],
    cwd: new URL("../", import.meta.url),
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, text);
  assert.match(text, /Dry run complete/);
  const root = new URL("../", import.meta.url).href;
  const listed = [...text.matchAll(/(file:\/\/\S+) \(/g)].map((m) => m[1].slice(root.length));
  assert.ok(listed.length > 0, text);
  for (
    const want of [
      "mod.ts",
      "LICENSE",
      "src/load.ts",
      "wgsl/matvec.wgsl",
      "models/tnl-shakespeare-6m/model.safetensors",
      "models/tnl-shakespeare-6m/tokenizer.model",
      "models/tnl-shakespeare-6m/config.json",
    ]
  ) assert.ok(listed.includes(want), `${want} is in the package`);
  for (const f of listed) {
    assert.ok(!/^(tests|bench|tools|\.ci)\//.test(f), `${f} is not part of the package`);
  }
});
