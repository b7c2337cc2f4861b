/**
 * Where a V8 CPU profile's time went: self time per function, largest first, for each
 * `.cpuprofile` given (as `deno run --cpu-prof` writes them, one per thread).
 *
 *   deno run -A tools/profile_top.ts [--top 30] [--callers NAME]... FILE_OR_DIR...
 *
 * `--callers NAME`: also the call paths (four frames up) into functions named NAME, by time.
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";

interface ProfileNode {
  id: number;
  children?: number[];
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Self time (µs) per "function file:line", from a parsed profile. */
export function selfTimes(p: Profile): Map<string, number> {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const out = new Map<string, number>();
  p.samples.forEach((id, i) => {
    const f = byId.get(id)!.callFrame;
    const key = `${f.functionName || "(anonymous)"} ${f.url.split("/").pop()}:${f.lineNumber + 1}`;
    out.set(key, (out.get(key) ?? 0) + (p.timeDeltas[i] ?? 0));
  });
  return out;
}

/** Self time (µs) of functions named `name`, per call path of `depth` frames above them. */
export function callerTimes(p: Profile, name: string, depth = 4): Map<string, number> {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const label = (n: ProfileNode) =>
    `${n.callFrame.functionName || "(anonymous)"} ${n.callFrame.url.split("/").pop()}:${
      n.callFrame.lineNumber + 1
    }`;
  const out = new Map<string, number>();
  p.samples.forEach((id, i) => {
    const n = byId.get(id)!;
    if (n.callFrame.functionName !== name) return;
    const path: string[] = [];
    for (let at = parent.get(id); at !== undefined && path.length < depth; at = parent.get(at)) {
      path.push(label(byId.get(at)!));
    }
    const key = path.join(" < ");
    out.set(key, (out.get(key) ?? 0) + (p.timeDeltas[i] ?? 0));
  });
  return out;
}

if (import.meta.main) {
  const args = parseArgs(Deno.args, { string: ["top", "callers"], collect: ["callers"] });
  const callers = (args.callers as string[] | undefined) ?? [];
  const top = Number(args.top ?? 30);
  const files: string[] = [];
  for (const a of args._.map(String)) {
    if ((await Deno.stat(a)).isDirectory) {
      for await (const e of Deno.readDir(a)) {
        if (e.name.endsWith(".cpuprofile")) files.push(`${a}/${e.name}`);
      }
    } else files.push(a);
  }
  for (const f of files.sort()) {
    const profile = JSON.parse(await Deno.readTextFile(f));
    const times = selfTimes(profile);
    const total = [...times.values()].reduce((a, b) => a + b, 0);
    console.log(`\n${f}: ${(total / 1000).toFixed(0)} ms sampled`);
    for (const [k, v] of [...times].sort((a, b) => b[1] - a[1]).slice(0, top)) {
      console.log(
        `${(v / 1000).toFixed(1).padStart(9)} ms ${
          (100 * v / total).toFixed(1).padStart(5)
        }%  ${k}`,
      );
    }
    for (const name of callers) {
      const paths = [...callerTimes(profile, name)].sort((a, b) => b[1] - a[1]).slice(0, 6);
      if (!paths.length) continue;
      console.log(`  callers of ${name}:`);
      for (const [k, v] of paths) console.log(`${(v / 1000).toFixed(1).padStart(11)} ms  ${k}`);
    }
  }
}
