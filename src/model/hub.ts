/**
 * Model sources: a local directory, an `http(s)` URL of a directory, or a Hugging Face repo id
 * (`OpenNLPLab/TransNormerLLM-1B`, optionally `@revision`), resolved to a local directory.
 *
 * Remote files are fetched in the hub's layout (`<endpoint>/<repo>/resolve/<revision>/<file>`) into
 * a cache directory: `config.json`, `tokenizer.model`, then the first weights layout that exists
 * (safetensors index and shards, `model.safetensors`, `.bin` index and shards, `pytorch_model.bin`).
 * Each download streams to `<file>.part`, resumes with a `Range` request, checks the size and the
 * SHA-256 the hub advertises for LFS files, then is renamed into place. A `.complete.json`
 * manifest records finished files, so a complete cache is used without touching the network.
 * @module
 */

import { createHash } from "node:crypto";
import { TnlError } from "../errors.ts";

/** Progress of one file's download. */
export interface DownloadProgress {
  /** File name inside the model directory. */
  readonly file: string;
  /** Bytes on disk so far (a resumed download starts at the bytes already there). */
  readonly bytes: number;
  /** Expected size, or null when the server does not say. */
  readonly total: number | null;
  /** True on the last report for this file (it is complete and in place). */
  readonly done: boolean;
}

/** Options of {@link resolveModelSource}. */
export interface ResolveOptions {
  /** Cache root (default `$TNL_CACHE_DIR`, else `$HOME/.cache/tnl-edge`). */
  cacheDir?: string;
  /** Hub revision: branch, tag or commit (default `main`; `repo@rev` in the source wins). */
  revision?: string;
  /** Bearer token (default `$HF_TOKEN` for hub sources; URL sources only use this option). */
  token?: string;
  /** Hub endpoint (default `$HF_ENDPOINT`, else `https://huggingface.co`). */
  endpoint?: string;
  /** Called as bytes arrive. */
  onProgress?: (p: DownloadProgress) => void;
  /** The `fetch` to use (tests, proxies). */
  fetch?: typeof fetch;
  /** Extra attempts after a dropped connection or a short body, resuming each time (default 3). */
  retries?: number;
}

/** What a source string names. */
export type ModelSource =
  | { readonly kind: "dir"; readonly path: string }
  | { readonly kind: "url"; readonly url: string }
  | { readonly kind: "hub"; readonly repo: string; readonly revision: string | null };

const REPO_PART = /^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$/;
const REVISION = /^[A-Za-z0-9._/-]{1,200}$/;
const FILE_NAME = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$/;
const MANIFEST = ".complete.json";
const WEIGHT_CANDIDATES = [
  "model.safetensors.index.json",
  "model.safetensors",
  "pytorch_model.bin.index.json",
  "pytorch_model.bin",
] as const;

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined; // no --allow-env
  }
}

function invalid(detail: string): TnlError {
  return new TnlError("model_source_invalid", detail);
}

function failed(detail: string, cause?: unknown): TnlError {
  return new TnlError("download_failed", detail, cause === undefined ? undefined : { cause });
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

async function fileSize(path: string): Promise<number | null> {
  try {
    const s = await Deno.stat(path);
    return s.isFile ? s.size : null;
  } catch {
    return null;
  }
}

/** Whether `name` is a plain file name safe to join to a directory (no `/`, `\`, `..`, dotfile). */
export function isSafeFileName(name: string): boolean {
  return FILE_NAME.test(name) && !name.includes("..") && !name.endsWith(".part");
}

/**
 * Classify a source string: an existing directory (or a path that looks like one), an `http(s)`
 * URL, or a hub repo id `org/name[@revision]`.
 */
export async function parseModelSource(source: string): Promise<ModelSource> {
  if (/^https?:\/\//i.test(source)) {
    let u: URL;
    try {
      u = new URL(source);
    } catch {
      throw invalid(`"${source}" is not a valid URL`);
    }
    if (u.search || u.hash) {
      throw invalid(`model URL "${source}" must not carry a query or fragment`);
    }
    return { kind: "url", url: u.href.endsWith("/") ? u.href : u.href + "/" };
  }
  if (/^file:/i.test(source)) {
    let path: string;
    try {
      path = decodeURIComponent(new URL(source).pathname);
    } catch {
      throw invalid(`"${source}" is not a valid file URL`);
    }
    if (!(await isDirectory(path))) throw invalid(`model directory "${path}" does not exist`);
    return { kind: "dir", path };
  }
  if (await isDirectory(source)) return { kind: "dir", path: source };
  const looksLikePath = /^(\.{1,2}[\\/]|[\\/]|~|[A-Za-z]:[\\/])/.test(source) ||
    source.endsWith("/");
  const at = source.indexOf("@");
  const repo = at < 0 ? source : source.slice(0, at);
  const revision = at < 0 ? null : source.slice(at + 1);
  const parts = repo.split("/");
  if (
    !looksLikePath && parts.length === 2 &&
    parts.every((p) => REPO_PART.test(p) && !p.includes(".."))
  ) {
    if (revision !== null && (!REVISION.test(revision) || revision.includes(".."))) {
      throw invalid(`bad revision "${revision}" in "${source}"`);
    }
    return { kind: "hub", repo, revision };
  }
  throw invalid(
    `"${source}" is not an existing directory, an http(s) URL, or a hub repo id like "org/name"`,
  );
}

function cacheRoot(opts: ResolveOptions): string {
  if (opts.cacheDir) return opts.cacheDir.replace(/\/+$/, "");
  const fromEnv = env("TNL_CACHE_DIR");
  if (fromEnv) return fromEnv.replace(/\/+$/, "");
  const home = env("HOME") ?? env("USERPROFILE");
  if (!home) throw invalid("no cache directory: set TNL_CACHE_DIR or pass cacheDir");
  return `${home}/.cache/tnl-edge`;
}

function sanitize(s: string): string {
  return s.replace(/\//g, "--").replace(/[^A-Za-z0-9._-]/g, "_").replace(/^\.+/, "_");
}

interface Manifest {
  version: 1;
  source: string;
  files: Record<string, { size: number; sha256?: string }>;
  /** Every file of the model, once all are in place. */
  all?: string[];
}

async function readManifest(dir: string, source: string): Promise<Manifest> {
  try {
    const m = JSON.parse(await Deno.readTextFile(`${dir}/${MANIFEST}`)) as Manifest;
    if (m?.version === 1 && m.source === source && typeof m.files === "object" && m.files) return m;
  } catch { /* absent or unreadable: start afresh */ }
  return { version: 1, source, files: {} };
}

async function writeManifest(dir: string, m: Manifest): Promise<void> {
  const tmp = `${dir}/${MANIFEST}.${crypto.randomUUID()}.tmp`;
  await Deno.writeTextFile(tmp, JSON.stringify(m, null, 2) + "\n");
  await Deno.rename(tmp, `${dir}/${MANIFEST}`);
}

/** A 64-hex SHA-256 from an ETag-like header value, else null. */
function sha256Of(header: string | null): string | null {
  if (!header) return null;
  const v = header.trim().replace(/^W\//, "").replace(/^"|"$/g, "").toLowerCase();
  return /^[0-9a-f]{64}$/.test(v) ? v : null;
}

function sizeOf(header: string | null): number | null {
  if (header === null || !/^\d+$/.test(header.trim())) return null;
  const n = Number(header.trim());
  return Number.isSafeInteger(n) ? n : null;
}

async function writeAll(file: Deno.FsFile, data: Uint8Array): Promise<void> {
  let p = 0;
  while (p < data.byteLength) p += await file.write(data.subarray(p));
}

async function hashFile(path: string, hash: ReturnType<typeof createHash>): Promise<void> {
  const f = await Deno.open(path, { read: true });
  try {
    const buf = new Uint8Array(1 << 20);
    while (true) {
      const n = await f.read(buf);
      if (n === null) break;
      hash.update(buf.subarray(0, n));
    }
  } finally {
    f.close();
  }
}

/** A transport failure worth retrying (resuming from the `.part` file). */
class Retryable extends Error {}

interface Remote {
  readonly base: string;
  readonly token: string | undefined;
  readonly fetch: typeof fetch;
}

/** GET following redirects by hand: keeps the `X-Linked-*` headers of the hub's redirect, and
 * drops the token when a redirect leaves the origin. */
async function get(
  remote: Remote,
  url: string,
  range: number,
): Promise<{ res: Response; url: string; linkedEtag: string | null; linkedSize: string | null }> {
  let current = url;
  let linkedEtag: string | null = null;
  let linkedSize: string | null = null;
  let auth = remote.token !== undefined;
  for (let hop = 0; hop < 10; hop++) {
    const headers = new Headers({ "accept-encoding": "identity" });
    if (auth) headers.set("authorization", `Bearer ${remote.token}`);
    if (range > 0) headers.set("range", `bytes=${range}-`);
    let res: Response;
    try {
      res = await remote.fetch(current, { headers, redirect: "manual" });
    } catch (e) {
      throw new Retryable(`GET ${current}: ${(e as Error).message}`, { cause: e });
    }
    linkedEtag ??= res.headers.get("x-linked-etag");
    linkedSize ??= res.headers.get("x-linked-size");
    const location = res.headers.get("location");
    if (res.status >= 300 && res.status < 400 && location) {
      await res.body?.cancel();
      const next = new URL(location, current);
      if (next.origin !== new URL(current).origin) auth = false;
      current = next.href;
      continue;
    }
    return { res, url: current, linkedEtag, linkedSize };
  }
  throw failed(`GET ${url}: too many redirects`);
}

/**
 * Download `name` into `dir` (through `name.part`). Returns false on 404 (the caller decides),
 * true once the file is in place.
 */
async function download(
  remote: Remote,
  dir: string,
  name: string,
  manifest: Manifest,
  opts: ResolveOptions,
): Promise<boolean> {
  const url = remote.base + encodeURIComponent(name);
  const target = `${dir}/${name}`;
  const part = `${target}.part`;
  const retries = opts.retries ?? 3;
  for (let attempt = 0;; attempt++) {
    try {
      const result = await downloadOnce(remote, url, name, target, part, opts);
      if (result === null) return false;
      manifest.files[name] = result;
      await writeManifest(dir, manifest);
      return true;
    } catch (e) {
      if (!(e instanceof Retryable)) throw e;
      if (attempt >= retries) {
        throw failed(`${url}: download failed after ${attempt + 1} attempts: ${e.message}`, e);
      }
      await new Promise((r) => setTimeout(r, Math.min(2000, 100 * 2 ** attempt)));
    }
  }
}

async function downloadOnce(
  remote: Remote,
  url: string,
  name: string,
  target: string,
  part: string,
  opts: ResolveOptions,
): Promise<{ size: number; sha256?: string } | null> {
  let offset = (await fileSize(part)) ?? 0;
  let { res, linkedEtag, linkedSize } = await get(remote, url, offset);
  if (res.status === 404) {
    await res.body?.cancel();
    return null;
  }
  let partWhole = false;
  if (res.status === 416 && offset > 0) {
    // Nothing after the part: it may already be whole (checked below); otherwise start over.
    const range = res.headers.get("content-range")?.match(/^bytes \*\/(\d+)$/);
    await res.body?.cancel();
    const size = sizeOf(range?.[1] ?? null);
    if (size === offset && (sizeOf(linkedSize) ?? size) === size) {
      partWhole = true;
      linkedSize = String(size);
    } else {
      await Deno.remove(part).catch(() => {});
      offset = 0;
      ({ res, linkedEtag, linkedSize } = await get(remote, url, 0));
    }
  }
  if (!partWhole && res.status !== 200 && res.status !== 206) {
    await res.body?.cancel();
    const hint = res.status === 401 || res.status === 403
      ? " (gated or private: set HF_TOKEN?)"
      : "";
    throw failed(`GET ${url}: HTTP ${res.status} ${res.statusText}${hint}`);
  }
  let total: number | null = sizeOf(linkedSize);
  const encoding = res.headers.get("content-encoding");
  const identity = !encoding || encoding === "identity";
  if (res.status === 206) {
    const m = res.headers.get("content-range")?.match(/^bytes (\d+)-(\d+)\/(\d+|\*)$/);
    if (!m || Number(m[1]) !== offset) {
      // A range we did not ask for: start over with a plain request.
      await res.body?.cancel();
      await Deno.remove(part).catch(() => {});
      throw new Retryable(
        `GET ${url}: unexpected Content-Range ${res.headers.get("content-range")}`,
      );
    }
    if (m[3] !== "*") total ??= Number(m[3]);
  } else if (res.status === 200 && !partWhole) {
    offset = 0; // a server that ignores Range sends the whole file: restart
    const len = identity ? sizeOf(res.headers.get("content-length")) : null;
    if (len !== null && total !== null && len !== total) {
      await res.body?.cancel();
      throw failed(`GET ${url}: Content-Length ${len} but X-Linked-Size ${total}`);
    }
    total ??= len;
  }
  if (res.status === 206 && identity && !partWhole) {
    const len = sizeOf(res.headers.get("content-length"));
    if (len !== null && total !== null && offset + len !== total) {
      await res.body?.cancel();
      throw failed(`GET ${url}: range of ${len} bytes from ${offset} does not make ${total}`);
    }
  }
  const expectedSha = sha256Of(linkedEtag) ?? sha256Of(res.headers.get("etag"));
  const hash = expectedSha ? createHash("sha256") : null;
  if (hash && offset > 0) await hashFile(part, hash);
  let bytes = offset;
  if (!partWhole) {
    const file = await Deno.open(part, {
      write: true,
      create: true,
      truncate: offset === 0,
      append: offset > 0,
    });
    try {
      opts.onProgress?.({ file: name, bytes, total, done: false });
      if (res.body) {
        for await (const chunk of res.body) {
          await writeAll(file, chunk);
          hash?.update(chunk);
          bytes += chunk.byteLength;
          if (total !== null && bytes > total) {
            throw failed(`GET ${url}: received more than the ${total} bytes announced`);
          }
          opts.onProgress?.({ file: name, bytes, total, done: false });
        }
      }
    } catch (e) {
      if (e instanceof TnlError) {
        await Deno.remove(part).catch(() => {});
        throw e;
      }
      // Dropped connection: keep the part for the next attempt.
      throw new Retryable(`GET ${url}: ${(e as Error).message} after ${bytes} bytes`, { cause: e });
    } finally {
      file.close();
    }
  }
  if (total !== null && bytes < total) {
    throw new Retryable(`GET ${url}: body ended at ${bytes} of ${total} bytes`);
  }
  let sha256: string | undefined;
  if (hash) {
    sha256 = hash.digest("hex");
    if (sha256 !== expectedSha) {
      await Deno.remove(part).catch(() => {});
      throw failed(`GET ${url}: SHA-256 ${sha256} does not match the expected ${expectedSha}`);
    }
  }
  await Deno.rename(part, target);
  opts.onProgress?.({ file: name, bytes, total: total ?? bytes, done: true });
  return sha256 ? { size: bytes, sha256 } : { size: bytes };
}

async function cached(dir: string, name: string, manifest: Manifest): Promise<boolean> {
  const m = manifest.files[name];
  return m !== undefined && (await fileSize(`${dir}/${name}`)) === m.size;
}

async function fetchModel(remote: Remote, dir: string, opts: ResolveOptions): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const manifest = await readManifest(dir, remote.base);
  if (manifest.all && manifest.all.length > 0) {
    const ok = await Promise.all(manifest.all.map((f) => cached(dir, f, manifest)));
    if (ok.every(Boolean)) return;
  }
  const got: string[] = [];
  const fetchFile = async (name: string, required: boolean): Promise<boolean> => {
    if (
      !(await cached(dir, name, manifest)) && !(await download(remote, dir, name, manifest, opts))
    ) {
      if (required) {
        throw failed(`GET ${remote.base}${encodeURIComponent(name)}: HTTP 404 Not Found`);
      }
      return false;
    }
    got.push(name);
    return true;
  };
  await fetchFile("config.json", true);
  await fetchFile("tokenizer.model", true);
  let weights: string | null = null;
  for (const candidate of WEIGHT_CANDIDATES) {
    if (await fetchFile(candidate, false)) {
      weights = candidate;
      break;
    }
  }
  if (weights === null) {
    throw failed(`no weights at ${remote.base} (tried ${WEIGHT_CANDIDATES.join(", ")}: all 404)`);
  }
  if (weights.endsWith(".index.json")) {
    let index: unknown;
    try {
      index = JSON.parse(await Deno.readTextFile(`${dir}/${weights}`));
    } catch (e) {
      throw invalid(`${remote.base}${weights}: not valid JSON: ${(e as Error).message}`);
    }
    const map = (index as { weight_map?: unknown })?.weight_map;
    if (typeof map !== "object" || map === null || Array.isArray(map)) {
      throw invalid(`${remote.base}${weights}: no "weight_map" object`);
    }
    const shards = [...new Set(Object.values(map as Record<string, unknown>))];
    for (const s of shards) {
      if (typeof s !== "string" || !isSafeFileName(s)) {
        throw invalid(`${remote.base}${weights}: unsafe shard file name ${JSON.stringify(s)}`);
      }
    }
    for (const s of (shards as string[]).sort()) await fetchFile(s, true);
  }
  manifest.all = got;
  await writeManifest(dir, manifest);
}

/**
 * Resolve a model source to a local directory holding `config.json`, `tokenizer.model` and the
 * weights. A local directory is returned as is; a URL or hub repo id is downloaded (or found
 * complete) in the cache under `<cacheDir>/<sanitized repo>/<revision>`. Failures throw a
 * `TnlError` with code `model_source_invalid` or `download_failed` naming the URL and status.
 */
export async function resolveModelSource(
  source: string,
  opts: ResolveOptions = {},
): Promise<string> {
  const parsed = await parseModelSource(source);
  if (parsed.kind === "dir") return parsed.path;
  const doFetch = opts.fetch ?? fetch;
  if (parsed.kind === "url") {
    const hash = createHash("sha256").update(parsed.url).digest("hex").slice(0, 16);
    const host = sanitize(new URL(parsed.url).host);
    const dir = `${cacheRoot(opts)}/url--${host}--${hash}`;
    await fetchModel({ base: parsed.url, token: opts.token, fetch: doFetch }, dir, opts);
    return dir;
  }
  const revision = parsed.revision ?? opts.revision ?? "main";
  if (!REVISION.test(revision) || revision.includes("..")) {
    throw invalid(`bad revision "${revision}"`);
  }
  const endpoint = (opts.endpoint ?? env("HF_ENDPOINT") ?? "https://huggingface.co").replace(
    /\/+$/,
    "",
  );
  const token = opts.token ?? env("HF_TOKEN") ?? env("HUGGING_FACE_HUB_TOKEN");
  const base = `${endpoint}/${parsed.repo}/resolve/${encodeURIComponent(revision)}/`;
  const dir = `${cacheRoot(opts)}/${sanitize(parsed.repo)}/${sanitize(revision)}`;
  await fetchModel({ base, token, fetch: doFetch }, dir, opts);
  return dir;
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = -1;
  do {
    v /= 1024;
    u++;
  } while (v >= 1024 && u < units.length - 1);
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[u]}`;
}

/** Options of {@link consoleProgress} (for tests; defaults write to stderr). */
export interface ConsoleProgressOptions {
  /** Where text goes (default: stderr). */
  write?: (text: string) => void;
  /** Render a live bar (default: whether stderr is a terminal). */
  terminal?: boolean;
  /** Bar width in characters (default 30). */
  width?: number;
}

/**
 * A progress callback for {@link resolveModelSource}: on a terminal, a one-line bar redrawn in
 * place (at most ~10 times a second); otherwise one line per finished file.
 */
export function consoleProgress(
  options: ConsoleProgressOptions = {},
): (p: DownloadProgress) => void {
  const encoder = new TextEncoder();
  const write = options.write ?? ((s: string) => {
    try {
      Deno.stderr.writeSync(encoder.encode(s));
    } catch { /* stderr closed */ }
  });
  let terminal = options.terminal;
  if (terminal === undefined) {
    try {
      terminal = Deno.stderr.isTerminal();
    } catch {
      terminal = false;
    }
  }
  const width = options.width ?? 30;
  let last = 0;
  const started = new Map<string, { t: number; bytes: number }>();
  return (p) => {
    const now = Date.now();
    if (!started.has(p.file)) started.set(p.file, { t: now, bytes: p.bytes });
    const s = started.get(p.file)!;
    const secs = (now - s.t) / 1000;
    const rate = secs > 0 ? (p.bytes - s.bytes) / secs : 0;
    if (!terminal) {
      if (p.done) {
        const speed = secs > 0.5 ? `, ${formatBytes(rate)}/s` : "";
        write(`downloaded ${p.file} (${formatBytes(p.bytes)}${speed})\n`);
        started.delete(p.file);
      }
      return;
    }
    if (!p.done && now - last < 100) return;
    last = now;
    const frac = p.total ? Math.min(1, p.bytes / p.total) : 0;
    const filled = Math.round(frac * width);
    const bar = p.total
      ? `[${"#".repeat(filled)}${".".repeat(width - filled)}] ${
        (frac * 100).toFixed(0).padStart(3)
      }%`
      : "[?]";
    const size = p.total ? `${formatBytes(p.bytes)}/${formatBytes(p.total)}` : formatBytes(p.bytes);
    const speed = rate > 0 ? ` ${formatBytes(rate)}/s` : "";
    write(`\r\x1b[2K${p.file} ${bar} ${size}${speed}${p.done ? "\n" : ""}`);
    if (p.done) started.delete(p.file);
  };
}
