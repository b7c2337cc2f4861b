/**
 * The runtime imports its packages by full specifier (`src/deps.ts` and two on-demand imports) so it
 * works imported by path; the tests use the same packages through `deno.json`'s import map. Both
 * must name the same versions, and the runtime must not use a bare specifier.
 * @module
 */

import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);

async function* sources(dir: URL): AsyncGenerator<[string, string]> {
  for await (const e of Deno.readDir(dir)) {
    if (e.isDirectory) yield* sources(new URL(e.name + "/", dir));
    else if (e.name.endsWith(".ts")) {
      const url = new URL(e.name, dir);
      yield [url.href.slice(ROOT.href.length), await Deno.readTextFile(url)];
    }
  }
}

Deno.test("deps: runtime npm specifiers match the import map; no bare specifiers at run time", async () => {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  const mapped = new Map<string, string>(); // package name → version in the import map
  for (const v of Object.values(config.imports as Record<string, string>)) {
    const m = /^npm:\/?(@?[^@/]+(?:\/[^@/]+)?)@([^/]+)/.exec(v);
    if (m) mapped.set(m[1], m[2]);
  }
  const found: string[] = [];
  const files: [string, string][] = [["mod.ts", await Deno.readTextFile(new URL("mod.ts", ROOT))]];
  for (const d of ["src/", "routes/"]) {
    for await (const f of sources(new URL(d, ROOT))) files.push(f);
  }
  for (const [path, text] of files) {
    for (
      const m of text.matchAll(
        /^\s*(?:import|export)\b[^;"]*?\sfrom\s*"([^"]+)"|\bimport\("([^"]+)"\)/gm,
      )
    ) {
      const spec = m[1] ?? m[2];
      if (spec.startsWith(".") || spec.startsWith("node:")) continue;
      const npm = /^npm:(@?[^@/]+(?:\/[^@/]+)?)@([^/]+)/.exec(spec);
      assert.ok(npm, `${path}: "${spec}" is not a relative, node: or versioned npm: specifier`);
      assert.equal(mapped.get(npm[1]), npm[2], `${path}: ${spec} vs deno.json's import map`);
      found.push(npm[1]);
    }
  }
  for (const name of ["hono", "msgpackr", "@redis/client", "@sctg/sentencepiece-js"]) {
    assert.ok(found.includes(name), `${name} is imported by the runtime`);
  }
});
