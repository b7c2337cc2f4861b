import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { TnlError } from "../../src/errors.ts";
import {
  consoleProgress,
  type DownloadProgress,
  isSafeFileName,
  parseModelSource,
  resolveModelSource,
} from "../../src/model/hub.ts";
import { openWeights } from "../../src/model/weights/open.ts";
import { encodeSafetensors } from "../../src/model/weights/safetensors.ts";
import { DEFAULT_MODEL_DIR, fixturesDir } from "../fixtures.ts";

/** The r1-f32 fixture's config and weights when present, else the embedded model's. */
async function modelFiles(): Promise<Record<string, Uint8Array>> {
  const fx = fixturesDir();
  const dir = fx ? `${fx}r1-f32/` : DEFAULT_MODEL_DIR;
  return {
    "config.json": await Deno.readFile(`${dir}config.json`),
    "model.safetensors": await Deno.readFile(`${dir}model.safetensors`),
    "tokenizer.model": await Deno.readFile(`${DEFAULT_MODEL_DIR}tokenizer.model`),
  };
}

const sha256 = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");
const sha1 = (b: Uint8Array): string => createHash("sha1").update(b).digest("hex");

interface Logged {
  server: "hub" | "cdn";
  path: string;
  range: string | null;
  auth: string | null;
}

interface HubOptions {
  repo?: string;
  revision?: string;
  /** Require `Authorization: Bearer <token>` on the hub (not on the CDN). */
  token?: string;
  /** Files whose next download sends half the body and then breaks the connection. */
  failOnce?: Set<string>;
  /** Answer Range requests with the whole file (200). */
  ignoreRange?: boolean;
  /** Advertise a wrong SHA-256 for these files. */
  badSha?: Set<string>;
  /** Fail every request with this status. */
  status?: number;
  /** Always send only half of these files (with the full Content-Length). */
  alwaysShort?: Set<string>;
}

interface Hub {
  /** Endpoint URL (no trailing slash). */
  endpoint: string;
  log: Logged[];
  files: Record<string, Uint8Array>;
  opts: HubOptions;
  close(): Promise<void>;
}

function isLfs(name: string): boolean {
  return !name.endsWith(".json");
}

/** Serve `data` honouring `Range: bytes=N-` (unless told not to), with the hub's failure modes. */
function serveBytes(
  req: Request,
  data: Uint8Array,
  name: string,
  opts: HubOptions,
  headers: Headers,
): Response {
  headers.set("accept-ranges", "bytes");
  const range = req.headers.get("range")?.match(/^bytes=(\d+)-$/);
  let start = 0;
  let status = 200;
  if (range && !opts.ignoreRange) {
    start = Number(range[1]);
    if (start >= data.byteLength) {
      headers.set("content-range", `bytes */${data.byteLength}`);
      return new Response(null, { status: 416, headers });
    }
    status = 206;
    headers.set("content-range", `bytes ${start}-${data.byteLength - 1}/${data.byteLength}`);
  }
  const body = data.subarray(start);
  headers.set("content-length", String(body.byteLength));
  const short = opts.alwaysShort?.has(name);
  if (opts.failOnce?.has(name) || short) {
    opts.failOnce?.delete(name);
    const half = body.subarray(0, Math.floor(body.byteLength / 2));
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(half);
        c.close(); // fewer bytes than Content-Length: the connection breaks
      },
    });
    return new Response(stream, { status, headers });
  }
  return new Response(body as Uint8Array<ArrayBuffer>, { status, headers });
}

function startHub(files: Record<string, Uint8Array>, opts: HubOptions = {}): Hub {
  const log: Logged[] = [];
  const repo = opts.repo ?? "org/tiny-model";
  const byHash = new Map<string, string>();
  const cdn = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, (req) => {
    const path = new URL(req.url).pathname;
    log.push({
      server: "cdn",
      path,
      range: req.headers.get("range"),
      auth: req.headers.get("authorization"),
    });
    const name = byHash.get(path.slice(1));
    if (!name) return new Response("no such blob", { status: 404 });
    return serveBytes(req, files[name], name, opts, new Headers({ etag: `"cdn-${path.length}"` }));
  });
  const cdnUrl = `http://127.0.0.1:${cdn.addr.port}`;
  const hub = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, (req) => {
    const url = new URL(req.url);
    log.push({
      server: "hub",
      path: url.pathname,
      range: req.headers.get("range"),
      auth: req.headers.get("authorization"),
    });
    if (opts.status) return new Response("boom", { status: opts.status });
    const plain = url.pathname.match(/^\/plain\/([^/]+)$/);
    if (plain) {
      const data = files[plain[1]];
      if (!data) return new Response("not found", { status: 404 });
      return serveBytes(req, data, plain[1], opts, new Headers({ etag: `"${sha256(data)}"` }));
    }
    const m = url.pathname.match(/^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/([^/]+)$/);
    if (!m || m[1] !== repo) return new Response("Repository not found", { status: 404 });
    if (decodeURIComponent(m[2]) !== (opts.revision ?? "main")) {
      return new Response("Revision not found", { status: 404 });
    }
    if (opts.token && req.headers.get("authorization") !== `Bearer ${opts.token}`) {
      return new Response("unauthorized", { status: 401 });
    }
    const name = decodeURIComponent(m[3]);
    const data = files[name];
    if (!data) return new Response("Entry not found", { status: 404 });
    if (isLfs(name)) {
      const sha = opts.badSha?.has(name) ? "0".repeat(64) : sha256(data);
      byHash.set(sha256(data), name);
      return new Response(null, {
        status: 302,
        headers: {
          location: `${cdnUrl}/${sha256(data)}`,
          "x-linked-etag": `"${sha}"`,
          "x-linked-size": String(data.byteLength),
          etag: `"${sha}"`,
        },
      });
    }
    return serveBytes(req, data, name, opts, new Headers({ etag: `W/"${sha1(data)}"` }));
  });
  return {
    endpoint: `http://127.0.0.1:${hub.addr.port}`,
    log,
    files,
    opts,
    close: async () => {
      await hub.shutdown();
      await cdn.shutdown();
    },
  };
}

async function withHub(
  files: Record<string, Uint8Array>,
  opts: HubOptions,
  fn: (hub: Hub, cacheDir: string) => Promise<void>,
): Promise<void> {
  const hub = startHub(files, opts);
  const cacheDir = await Deno.makeTempDir();
  try {
    await fn(hub, cacheDir);
  } finally {
    await hub.close();
    await Deno.remove(cacheDir, { recursive: true });
  }
}

async function assertFiles(dir: string, files: Record<string, Uint8Array>): Promise<void> {
  for (const [name, data] of Object.entries(files)) {
    const got = await Deno.readFile(`${dir}/${name}`);
    assert.equal(got.byteLength, data.byteLength, name);
    assert.equal(sha256(got), sha256(data), name);
  }
  for await (const e of Deno.readDir(dir)) assert.ok(!e.name.endsWith(".part"), `left ${e.name}`);
}

async function rejectsCode(
  p: () => Promise<unknown>,
  code: string,
  pattern: RegExp,
): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof TnlError, `expected TnlError, got ${e}`);
    assert.equal(e.code, code, e.message);
    assert.match(e.message, pattern);
    return true;
  });
}

Deno.test("hub: downloads a repo in the hub layout, checks hashes, then serves from cache", async () => {
  const files = await modelFiles();
  await withHub(files, { token: "secret" }, async (hub, cacheDir) => {
    const progress: DownloadProgress[] = [];
    const dir = await resolveModelSource("org/tiny-model", {
      endpoint: hub.endpoint,
      cacheDir,
      token: "secret",
      onProgress: (p) => progress.push(p),
    });
    assert.equal(dir, `${cacheDir}/org--tiny-model/main`);
    await assertFiles(dir, files);
    const hubPaths = hub.log.filter((l) => l.server === "hub").map((l) => l.path);
    assert.deepEqual(hubPaths, [
      "/org/tiny-model/resolve/main/config.json",
      "/org/tiny-model/resolve/main/tokenizer.model",
      "/org/tiny-model/resolve/main/model.safetensors.index.json",
      "/org/tiny-model/resolve/main/model.safetensors",
    ]);
    assert.ok(hub.log.filter((l) => l.server === "hub").every((l) => l.auth === "Bearer secret"));
    // The token does not follow the redirect to another origin.
    const cdn = hub.log.filter((l) => l.server === "cdn");
    assert.equal(cdn.length, 2);
    assert.ok(cdn.every((l) => l.auth === null));
    const done = progress.filter((p) => p.done).map((p) => p.file);
    assert.deepEqual(done, ["config.json", "tokenizer.model", "model.safetensors"]);
    const last = progress.findLast((p) => p.file === "model.safetensors")!;
    assert.equal(last.bytes, files["model.safetensors"].byteLength);
    assert.equal(last.total, files["model.safetensors"].byteLength);
    const manifest = JSON.parse(await Deno.readTextFile(`${dir}/.complete.json`));
    assert.equal(manifest.files["model.safetensors"].size, files["model.safetensors"].byteLength);
    assert.equal(manifest.files["model.safetensors"].sha256, sha256(files["model.safetensors"]));
    const w = await openWeights(dir);
    assert.ok(w.tensors.has("model.embed_tokens.weight"));
    w.close();

    // Second resolve: everything is cached, no request at all.
    const before = hub.log.length;
    assert.equal(
      await resolveModelSource("org/tiny-model", { endpoint: hub.endpoint, cacheDir }),
      dir,
    );
    assert.equal(hub.log.length, before);

    // A file removed from the cache is fetched again, alone.
    await Deno.remove(`${dir}/tokenizer.model`);
    await resolveModelSource("org/tiny-model", {
      endpoint: hub.endpoint,
      cacheDir,
      token: "secret",
    });
    const again = hub.log.slice(before).filter((l) => l.server === "hub").map((l) => l.path);
    assert.ok(again.includes("/org/tiny-model/resolve/main/tokenizer.model"));
    assert.ok(!again.includes("/org/tiny-model/resolve/main/model.safetensors"));
    await assertFiles(dir, files);
  });
});

Deno.test("hub: missing or wrong token gives download_failed naming the URL and 401", async () => {
  const files = await modelFiles();
  await withHub(files, { token: "secret" }, async (hub, cacheDir) => {
    const saved = Deno.env.get("HF_TOKEN");
    Deno.env.delete("HF_TOKEN");
    try {
      await rejectsCode(
        () => resolveModelSource("org/tiny-model", { endpoint: hub.endpoint, cacheDir }),
        "download_failed",
        /GET http:\/\/127\.0\.0\.1:\d+\/org\/tiny-model\/resolve\/main\/config\.json: HTTP 401/,
      );
      await rejectsCode(
        () =>
          resolveModelSource("org/tiny-model", { endpoint: hub.endpoint, cacheDir, token: "nope" }),
        "download_failed",
        /HTTP 401/,
      );
      // HF_TOKEN from the environment is used.
      Deno.env.set("HF_TOKEN", "secret");
      const dir = await resolveModelSource("org/tiny-model", { endpoint: hub.endpoint, cacheDir });
      await assertFiles(dir, files);
    } finally {
      if (saved === undefined) Deno.env.delete("HF_TOKEN");
      else Deno.env.set("HF_TOKEN", saved);
    }
  });
});

Deno.test("hub: a connection that breaks mid-file is resumed with a Range request", async () => {
  const files = await modelFiles();
  const size = files["model.safetensors"].byteLength;
  await withHub(files, { failOnce: new Set(["model.safetensors"]) }, async (hub, cacheDir) => {
    const dir = await resolveModelSource("org/tiny-model", { endpoint: hub.endpoint, cacheDir });
    await assertFiles(dir, files);
    const cdn = hub.log.filter((l) => l.server === "cdn");
    assert.equal(cdn.length, 3); // tokenizer, broken weights, resumed weights
    assert.equal(cdn[1].range, null);
    assert.equal(cdn[2].range, `bytes=${Math.floor(size / 2)}-`);
  });
});

Deno.test("hub: an existing .part is resumed; a server ignoring Range restarts it", async () => {
  const files = await modelFiles();
  const weights = files["model.safetensors"];
  for (const ignoreRange of [false, true]) {
    await withHub(files, { ignoreRange }, async (hub, cacheDir) => {
      const dir = `${cacheDir}/org--tiny-model/main`;
      await Deno.mkdir(dir, { recursive: true });
      await Deno.writeFile(`${dir}/model.safetensors.part`, weights.subarray(0, 1000));
      await resolveModelSource("org/tiny-model", { endpoint: hub.endpoint, cacheDir });
      await assertFiles(dir, files);
      const w = hub.log.filter((l) => l.server === "cdn" && l.range !== null);
      assert.deepEqual(w.map((l) => l.range), ["bytes=1000-"]);
    });
  }
});

Deno.test("hub: a .part that is already whole is finished without a body (416)", async () => {
  const files = await modelFiles();
  await withHub(files, {}, async (hub, cacheDir) => {
    const dir = `${cacheDir}/org--tiny-model/main`;
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeFile(`${dir}/model.safetensors.part`, files["model.safetensors"]);
    await resolveModelSource("org/tiny-model", { endpoint: hub.endpoint, cacheDir });
    await assertFiles(dir, files);
  });
});

Deno.test("hub: a SHA-256 mismatch fails and removes the part; a corrupt .part is caught", async () => {
  const files = await modelFiles();
  await withHub(files, { badSha: new Set(["model.safetensors"]) }, async (hub, cacheDir) => {
    await rejectsCode(
      () => resolveModelSource("org/tiny-model", { endpoint: hub.endpoint, cacheDir }),
      "download_failed",
      /model\.safetensors: SHA-256 [0-9a-f]{64} does not match the expected 0{64}/,
    );
    const dir = `${cacheDir}/org--tiny-model/main`;
    await assert.rejects(() => Deno.stat(`${dir}/model.safetensors.part`), Deno.errors.NotFound);
    await assert.rejects(() => Deno.stat(`${dir}/model.safetensors`), Deno.errors.NotFound);
  });
  await withHub(files, {}, async (hub, cacheDir) => {
    const dir = `${cacheDir}/org--tiny-model/main`;
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeFile(`${dir}/model.safetensors.part`, new Uint8Array(5000).fill(42));
    await rejectsCode(
      () => resolveModelSource("org/tiny-model", { endpoint: hub.endpoint, cacheDir }),
      "download_failed",
      /SHA-256/,
    );
    // The bad part is gone, so the next attempt starts afresh and succeeds.
    await resolveModelSource("org/tiny-model", { endpoint: hub.endpoint, cacheDir });
    await assertFiles(dir, files);
  });
});

Deno.test("hub: a body that keeps ending short fails after the retries", async () => {
  const files = await modelFiles();
  await withHub(files, { alwaysShort: new Set(["model.safetensors"]) }, async (hub, cacheDir) => {
    await rejectsCode(
      () => resolveModelSource("org/tiny-model", { endpoint: hub.endpoint, cacheDir, retries: 1 }),
      "download_failed",
      /resolve\/main\/model\.safetensors: download failed after 2 attempts/,
    );
  });
});

Deno.test("hub: sharded safetensors through the index; unsafe shard names are refused", async () => {
  const base = await modelFiles();
  const t = (name: string, v: number) => ({
    name,
    dtype: "F32" as const,
    shape: [2, 2],
    data: new Uint8Array(new Float32Array([v, v + 1, v + 2, v + 3]).buffer),
  });
  const shard1 = encodeSafetensors([t("a", 1)]);
  const shard2 = encodeSafetensors([t("b", 5)]);
  const index = (second: string) =>
    new TextEncoder().encode(JSON.stringify({
      metadata: { total_size: 32 },
      weight_map: { a: "model-00001-of-00002.safetensors", b: second },
    }));
  const files = {
    "config.json": base["config.json"],
    "tokenizer.model": base["tokenizer.model"],
    "model.safetensors.index.json": index("model-00002-of-00002.safetensors"),
    "model-00001-of-00002.safetensors": shard1,
    "model-00002-of-00002.safetensors": shard2,
  };
  await withHub(files, { repo: "OpenNLPLab/Sharded", revision: "v1.0" }, async (hub, cacheDir) => {
    const dir = await resolveModelSource("OpenNLPLab/Sharded@v1.0", {
      endpoint: hub.endpoint,
      cacheDir,
    });
    assert.equal(dir, `${cacheDir}/OpenNLPLab--Sharded/v1.0`);
    await assertFiles(dir, files);
    const w = await openWeights(dir);
    assert.deepEqual([...w.tensors.keys()].sort(), ["a", "b"]);
    w.close();
  });
  for (const bad of ["../evil.safetensors", "sub/x.safetensors", ".hidden", "..", "a\\b"]) {
    const evil = { ...files, "model.safetensors.index.json": index(bad) };
    await withHub(evil, {}, async (hub, cacheDir) => {
      await rejectsCode(
        () => resolveModelSource("org/tiny-model", { endpoint: hub.endpoint, cacheDir }),
        "model_source_invalid",
        /unsafe shard file name/,
      );
    });
  }
});

Deno.test("hub: .bin fallbacks, absent files and server errors", async () => {
  const base = await modelFiles();
  // No safetensors: pytorch_model.bin is used after the three 404s.
  const bin = { ...base, "pytorch_model.bin": new Uint8Array([1, 2, 3]) };
  delete (bin as Record<string, Uint8Array>)["model.safetensors"];
  await withHub(bin, {}, async (hub, cacheDir) => {
    const dir = await resolveModelSource("org/tiny-model", { endpoint: hub.endpoint, cacheDir });
    await assertFiles(dir, bin);
    const tried = hub.log.filter((l) => l.server === "hub").map((l) => l.path.split("/").pop());
    assert.deepEqual(tried.slice(2), [
      "model.safetensors.index.json",
      "model.safetensors",
      "pytorch_model.bin.index.json",
      "pytorch_model.bin",
    ]);
  });
  const noWeights = {
    "config.json": base["config.json"],
    "tokenizer.model": base["tokenizer.model"],
  };
  await withHub(noWeights, {}, async (hub, cacheDir) => {
    await rejectsCode(
      () => resolveModelSource("org/tiny-model", { endpoint: hub.endpoint, cacheDir }),
      "download_failed",
      /no weights at http:\/\/127\.0\.0\.1:\d+\/org\/tiny-model\/resolve\/main\//,
    );
  });
  await withHub(base, {}, async (hub, cacheDir) => {
    await rejectsCode(
      () => resolveModelSource("org/other-model", { endpoint: hub.endpoint, cacheDir }),
      "download_failed",
      /\/org\/other-model\/resolve\/main\/config\.json: HTTP 404/,
    );
  });
  await withHub(base, { status: 500 }, async (hub, cacheDir) => {
    await rejectsCode(
      () => resolveModelSource("org/tiny-model", { endpoint: hub.endpoint, cacheDir }),
      "download_failed",
      /resolve\/main\/config\.json: HTTP 500/,
    );
  });
});

Deno.test("hub: a plain https/http directory URL is fetched file by file", async () => {
  const files = await modelFiles();
  await withHub(files, {}, async (hub, cacheDir) => {
    const dir = await resolveModelSource(`${hub.endpoint}/plain`, { cacheDir });
    assert.ok(dir.startsWith(`${cacheDir}/url--127.0.0.1_`), dir);
    await assertFiles(dir, files);
    assert.ok(hub.log.every((l) => l.auth === null));
  });
});

Deno.test("hub: local directories and bad sources", async () => {
  assert.equal(await resolveModelSource(DEFAULT_MODEL_DIR), DEFAULT_MODEL_DIR);
  assert.deepEqual(await parseModelSource("OpenNLPLab/TransNormerLLM-1B"), {
    kind: "hub",
    repo: "OpenNLPLab/TransNormerLLM-1B",
    revision: null,
  });
  assert.deepEqual(await parseModelSource("OpenNLPLab/TransNormerLLM-1B@refs/pr/3"), {
    kind: "hub",
    repo: "OpenNLPLab/TransNormerLLM-1B",
    revision: "refs/pr/3",
  });
  assert.deepEqual(await parseModelSource("https://example.com/models/x"), {
    kind: "url",
    url: "https://example.com/models/x/",
  });
  for (
    const bad of [
      "./does-not-exist",
      "/nope/nope/",
      "justaname",
      "a/b/c",
      "../x/y",
      "org/..",
      "o/n@../x",
    ]
  ) {
    await rejectsCode(() => resolveModelSource(bad), "model_source_invalid", /./);
  }
  assert.ok(isSafeFileName("model-00001-of-00002.safetensors"));
  for (const bad of ["", ".", "..", "../a", "a/b", "a\\b", ".complete.json", "x.part", "a b"]) {
    assert.ok(!isSafeFileName(bad), bad);
  }
});

Deno.test("hub: consoleProgress renders a bar on a terminal, a line per file otherwise", () => {
  let out = "";
  const lines = consoleProgress({ terminal: false, write: (s) => out += s });
  lines({ file: "a.bin", bytes: 0, total: 2048, done: false });
  lines({ file: "a.bin", bytes: 1024, total: 2048, done: false });
  assert.equal(out, "");
  lines({ file: "a.bin", bytes: 2048, total: 2048, done: true });
  assert.match(out, /^downloaded a\.bin \(2\.00 KiB.*\)\n$/);
  out = "";
  const bar = consoleProgress({ terminal: true, width: 10, write: (s) => out += s });
  bar({ file: "w.safetensors", bytes: 512, total: 1024, done: false });
  assert.ok(out.startsWith("\r\x1b[2Kw.safetensors [#####.....]  50% 512 B/1.00 KiB"), out);
  bar({ file: "w.safetensors", bytes: 1024, total: 1024, done: true });
  assert.ok(out.endsWith("\n"));
  assert.match(out, /\[##########\] 100%/);
});
