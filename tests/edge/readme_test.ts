/**
 * The deployment README (`src/edge/README.md`) is run as written: every `sh` block's commands
 * (`redis-server`, `deno serve`, `deno task start`, `curl`) and every `ts` block, section by
 * section. Ports and `/tmp` paths are remapped to free ones; servers start as the README says and
 * are stopped at the next heading; `SESSION_ID` is replaced by the `session` of the last answer;
 * `curl` requests are made with `fetch` and must answer 2xx with JSON.
 * @module
 */

import assert from "node:assert/strict";
import { freePort, haveRedis, ROOT } from "../scale/support.ts";

const README = `${ROOT}src/edge/README.md`;

/** Shell words of one command line (single and double quotes, no expansions). */
export function shellWords(line: string): string[] {
  const words: string[] = [];
  let cur = "";
  let inWord = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) throw new Error(`unclosed quote: ${line}`);
      cur += line.slice(i + 1, end);
      i = end;
      inWord = true;
    } else if (c === '"') {
      let j = i + 1;
      for (; j < line.length && line[j] !== '"'; j++) cur += line[j] === "\\" ? line[++j] : line[j];
      i = j;
      inWord = true;
    } else if (c === " " || c === "\t") {
      if (inWord) words.push(cur);
      cur = "";
      inWord = false;
    } else {
      cur += c;
      inWord = true;
    }
  }
  if (inWord) words.push(cur);
  return words;
}

interface Block {
  lang: string;
  code: string;
  section: string;
}

function blocks(md: string): Block[] {
  const out: Block[] = [];
  let section = "";
  const lines = md.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i];
    if (/^#{2,3} /.test(l)) section = l;
    const m = l.match(/^```(\w+)\s*$/);
    if (!m) continue;
    const body: string[] = [];
    for (i++; i < lines.length && !lines[i].startsWith("```"); i++) body.push(lines[i]);
    out.push({ lang: m[1], code: body.join("\n"), section });
  }
  return out;
}

interface Proc {
  child: Deno.ChildProcess;
  name: string;
  stderr: string[];
}

Deno.test({
  name: "deployment README: every command runs as written",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const md = await Deno.readTextFile(README);
    const all = blocks(md);
    assert.ok(all.filter((b) => b.lang === "sh").length >= 5, "the README has its sh blocks");
    const redis = await haveRedis();
    const tmp = await Deno.makeTempDir({ prefix: "tnl-readme-" });
    let procs: Proc[] = [];
    let ports = new Map<string, number>();
    let paths = new Map<string, string>();
    let session: string | null = null;
    let section = "";
    let skip = false;
    let ran = 0;

    const stopAll = async () => {
      for (const p of procs.reverse()) {
        try {
          p.child.kill("SIGTERM");
        } catch { /* gone */ }
        await p.child.status;
      }
      procs = [];
    };
    const remap = (s: string) =>
      s.replace(/\b(localhost|127\.0\.0\.1):(\d{4,5})\b/g, (_, host, port) => {
        if (!ports.has(port)) ports.set(port, freePort());
        return `${host}:${ports.get(port)}`;
      }).replace(/\/tmp\/[\w.-]+/g, (p) => {
        if (!paths.has(p)) paths.set(p, `${tmp}/${paths.size}-${p.slice(5)}`);
        return paths.get(p)!;
      });
    const portArg = (args: string[]) =>
      args.map((a, i) => {
        if (args[i - 1] !== "--port") return a;
        if (!ports.has(a)) ports.set(a, freePort());
        return String(ports.get(a));
      });

    /** Spawn a long-running command and wait until it is ready. */
    const spawn = async (
      cmd: string,
      args: string[],
      env: Record<string, string>,
      ready: RegExp | number,
      cwd = ROOT,
    ) => {
      const child = new Deno.Command(cmd, {
        args,
        env,
        cwd,
        stdin: "null",
        stdout: "null",
        stderr: "piped",
      }).spawn();
      const p: Proc = { child, name: `${cmd} ${args.join(" ")}`, stderr: [] };
      procs.push(p);
      let exited = false;
      child.status.then(() => (exited = true));
      const dec = new TextDecoder();
      let seen = false;
      (async () => {
        for await (const c of child.stderr) {
          for (const line of dec.decode(c).split("\n")) {
            p.stderr.push(line);
            if (typeof ready !== "number" && ready.test(line)) seen = true;
          }
        }
      })();
      const deadline = Date.now() + 60_000;
      for (;;) {
        if (typeof ready === "number") {
          try {
            (await Deno.connect({ hostname: "127.0.0.1", port: ready })).close();
            return;
          } catch { /* not yet */ }
        } else if (seen) return;
        assert.ok(!exited, `${p.name} exited:\n${p.stderr.join("\n")}`);
        assert.ok(Date.now() < deadline, `${p.name} not ready:\n${p.stderr.join("\n")}`);
        await new Promise((r) => setTimeout(r, 25));
      }
    };

    const curl = async (words: string[]) => {
      let url = "";
      const headers = new Headers();
      let data: string | undefined;
      for (let i = 1; i < words.length; i++) {
        const w = words[i];
        if (w === "-s") continue;
        if (w === "-H") {
          const h = words[++i];
          const k = h.indexOf(":");
          headers.set(h.slice(0, k).trim(), h.slice(k + 1).trim());
        } else if (w === "-d") data = words[++i];
        else if (w.startsWith("http")) url = w;
        else throw new Error(`curl option the test does not know: ${w}`);
      }
      if (data?.includes("SESSION_ID")) {
        assert.ok(session, "SESSION_ID before any answer named a session");
        data = data.replaceAll("SESSION_ID", session);
      }
      const res = await fetch(url, {
        method: data === undefined ? "GET" : "POST",
        headers,
        body: data,
      });
      const text = await res.text();
      assert.ok(res.ok, `curl ${url} ${data ?? ""}: HTTP ${res.status} ${text.slice(0, 300)}`);
      const body = JSON.parse(text);
      if (typeof body.session === "string") session = body.session;
      return body;
    };

    try {
      for (const b of all) {
        if (b.section !== section) {
          await stopAll();
          section = b.section;
          ports = new Map();
          paths = new Map();
          session = null;
          skip = false;
        }
        if (skip) continue;
        if (b.lang === "ts") {
          const code = remap(b.code).replaceAll('"./src/', `"file://${ROOT}src/`);
          const file = `${tmp}/block${ran}.ts`;
          await Deno.writeTextFile(file, code);
          const out = await new Deno.Command(Deno.execPath(), {
            args: ["run", "-A", "--config", `${ROOT}deno.json`, file],
            cwd: ROOT,
          }).output();
          const stdout = new TextDecoder().decode(out.stdout);
          assert.ok(out.success, `ts block failed:\n${new TextDecoder().decode(out.stderr)}`);
          assert.ok(stdout.trim().length > 0, "the ts block printed its text");
          ran++;
          continue;
        }
        if (b.lang !== "sh") continue;
        const lines = b.code.replace(/\\\n\s*/g, " ").split("\n").map((l) => l.trim())
          .filter((l) => l && !l.startsWith("#"));
        for (const line of lines) {
          const words = shellWords(remap(line));
          const env: Record<string, string> = {};
          while (words.length && /^[A-Z_][A-Z0-9_]*=/.test(words[0])) {
            const w = words.shift()!;
            env[w.slice(0, w.indexOf("="))] = w.slice(w.indexOf("=") + 1);
          }
          const [cmd, ...rest] = words;
          if (cmd === "redis-server") {
            if (!redis) {
              console.warn(`redis-server not installed: section ${section} skipped`);
              skip = true;
              break;
            }
            const args = portArg(rest);
            const port = Number(args[args.indexOf("--port") + 1]);
            // redis-server writes its append-only files in its working directory.
            const dir = await Deno.makeTempDir({ dir: tmp });
            await spawn(cmd, args, env, port, dir);
            // The README's `redis://127.0.0.1:6379` is the same mapped port.
            ports.set("6379", port);
          } else if (cmd === "deno" && rest[0] === "serve") {
            await spawn(Deno.execPath(), portArg(rest), env, /Listening on http/);
          } else if (cmd === "deno" && rest[0] === "task") {
            await spawn(Deno.execPath(), portArg(rest), env, /^listening on http/);
          } else if (cmd === "curl") {
            await curl(words);
          } else {
            throw new Error(`a README command the test does not run: ${line}`);
          }
          ran++;
        }
      }
    } finally {
      await stopAll();
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
    console.error(`${ran} README commands and blocks ran`);
  },
});
