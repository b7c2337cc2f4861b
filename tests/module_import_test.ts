/**
 * The module as another project uses it: a copy of the checkout in a directory whose path has a
 * space, imported by relative path from a separate Deno project (its own `deno.json`, no import map
 * entries for our dependencies) running the README's example; and the module imported over http,
 * loading its embedded model over `fetch`.
 * @module
 */

import assert from "node:assert/strict";
import { DEFAULT_MODEL_DIR, loadModel, modelDirOf } from "../src/load.ts";

const ROOT = new URL("../", import.meta.url);
/** What the module needs at run time (the `publish` list of deno.json, less the docs). */
const MODULE_PATHS = ["mod.ts", "deno.json", "src", "routes", "wgsl", "models/tnl-shakespeare-6m"];

async function copyTree(from: URL, to: string): Promise<void> {
  const st = await Deno.stat(from);
  if (st.isFile) {
    await Deno.copyFile(from, to);
    return;
  }
  await Deno.mkdir(to, { recursive: true });
  for await (const e of Deno.readDir(from)) {
    const name = e.isDirectory ? e.name + "/" : e.name;
    await copyTree(
      new URL(name, from.href.endsWith("/") ? from : from.href + "/"),
      `${to}/${e.name}`,
    );
  }
}

/** The README's import-by-path example (the `ts` block after its marker). */
async function readmeExample(): Promise<string> {
  const readme = await Deno.readTextFile(new URL("README.md", ROOT));
  const at = readme.indexOf("<!-- example: import by path");
  assert.ok(at >= 0, "README has the import-by-path example");
  const m = /```ts\n([\s\S]*?)```/.exec(readme.slice(at));
  assert.ok(m, "the example's ts block");
  return m[1];
}

Deno.test("module: a separate project imports a checkout by path (with a space) and generates", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "tnl-import-" });
  try {
    const checkout = `${tmp}/with space/tnl`;
    for (const p of MODULE_PATHS) {
      await Deno.mkdir(`${checkout}/${p}`.replace(/\/[^/]*$/, ""), { recursive: true });
      await copyTree(new URL(p, ROOT), `${checkout}/${p}`);
    }
    const app = `${tmp}/with space/app`;
    await Deno.mkdir(app, { recursive: true });
    await Deno.writeTextFile(`${app}/deno.json`, JSON.stringify({ lock: false }));
    // The README's code, greedy and short so the result can be compared with this process's.
    let code = await readmeExample();
    code = code.replace(
      "{ maxTokens: 50, temperature: 0.8, seed: 1 }",
      "{ maxTokens: 12, temperature: 0 }",
    );
    assert.ok(code.includes("maxTokens: 12"), "the example's generate options were found");
    code += '\nconst { DEFAULT_MODEL_DIR } = await import("../tnl/mod.ts");\n' +
      "console.error(`DIR=${DEFAULT_MODEL_DIR}`);\n";
    await Deno.writeTextFile(`${app}/main.ts`, code);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", "main.ts"],
      cwd: app,
      env: { TNL_CACHE_DIR: `${tmp}/cache` },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    assert.ok(stderr.includes(`DIR=${checkout}/models/tnl-shakespeare-6m/`), stderr);

    const model = await loadModel(undefined, { backend: "cpu" });
    try {
      let want = "";
      for await (const c of model.generate("ROMEO:", { maxTokens: 12, temperature: 0 })) {
        want += c.text;
      }
      assert.ok(want.length > 0);
      assert.equal(new TextDecoder().decode(out.stdout), want);
    } finally {
      await model.dispose();
    }
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("module: DEFAULT_MODEL_DIR is a path for file: URLs, decoded (spaces), with a slash", () => {
  assert.ok(!DEFAULT_MODEL_DIR.startsWith("file:"), DEFAULT_MODEL_DIR);
  assert.ok(DEFAULT_MODEL_DIR.endsWith("/models/tnl-shakespeare-6m/"), DEFAULT_MODEL_DIR);
  assert.equal(
    modelDirOf(new URL("file:///tmp/with%20space/tnl/models/m/")),
    "/tmp/with space/tnl/models/m/",
  );
  assert.equal(
    modelDirOf(new URL("https://example.com/x/models/m/")),
    "https://example.com/x/models/m/",
  );
});

Deno.test("module: imported over http, the module fetches its embedded model and runs", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "tnl-fetch-" });
  const served: string[] = [];
  // The checkout, served as a static site (any https host or CDN behaves the same).
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = decodeURIComponent(new URL(req.url).pathname).slice(1);
    if (path.split("/").some((p) => p === ".." || p.startsWith("."))) {
      return new Response("not found", { status: 404 });
    }
    try {
      const body = await Deno.readFile(new URL(path, ROOT));
      served.push(path);
      const type = path.endsWith(".ts") ? "application/typescript" : "application/octet-stream";
      return new Response(req.method === "HEAD" ? null : body, {
        headers: { "content-type": type, "content-length": String(body.length) },
      });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  try {
    const base = `http://127.0.0.1:${server.addr.port}/`;
    assert.equal(
      modelDirOf(new URL("models/tnl-shakespeare-6m/", base)),
      `${base}models/tnl-shakespeare-6m/`,
    );
    const app = `${tmp}/app`;
    await Deno.mkdir(app);
    await Deno.writeTextFile(`${app}/deno.json`, JSON.stringify({ lock: false }));
    await Deno.writeTextFile(
      `${app}/main.ts`,
      `import { DEFAULT_MODEL_DIR, loadModel } from "${base}mod.ts";
const model = await loadModel(undefined, { backend: "cpu" });
let text = "";
for await (const c of model.generate("ROMEO:", { maxTokens: 12, temperature: 0 })) text += c.text;
console.log(JSON.stringify({ dir: DEFAULT_MODEL_DIR, local: model.dir, text }));
await model.dispose();
`,
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--quiet", "main.ts"],
      cwd: app,
      env: { TNL_CACHE_DIR: `${tmp}/cache` },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const got = JSON.parse(new TextDecoder().decode(out.stdout));
    assert.equal(got.dir, `${base}models/tnl-shakespeare-6m/`);
    assert.ok(got.local.startsWith(`${tmp}/cache/`), got.local);
    assert.ok(served.includes("models/tnl-shakespeare-6m/model.safetensors"));
    const local = await loadModel(undefined, { backend: "cpu" });
    try {
      let want = "";
      for await (const c of local.generate("ROMEO:", { maxTokens: 12, temperature: 0 })) {
        want += c.text;
      }
      assert.equal(got.text, want);
    } finally {
      await local.dispose();
    }
  } finally {
    await server.shutdown();
    await Deno.remove(tmp, { recursive: true });
  }
});
