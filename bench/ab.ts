/**
 * A/B of source trees on one machine, in one command (a lent GPU machine gives ~10 minutes a call):
 * each tree runs the same benchmark in turn, `--rounds` times, alternating, so clocks, heat and
 * caches treat them alike. Logs and the benchmark's own results go to `--out`, one folder per tree
 * and round; `nvidia-smi`'s clocks and power are sampled into `--out/clocks.csv` meanwhile, where
 * that tool exists.
 *
 * Trees are made here, before the call, from commits (`git archive`, without `bench/results`):
 *
 *   deno run -A bench/ab.ts --prepare main=main,cand=candidate-s8 [--dir _ab]
 *   deno run -A bench/ab.ts --trees _ab/main,_ab/cand --out $OUT [--rounds 2]
 *     [--command "deno task bench:gpu --shapes 385M --weights bf16"]
 *
 * The runs' results stay in their trees' `bench/results/` and are copied to `--out`. The device
 * tool returns at most 8 files from `$OUT`, so write elsewhere and pack it, e.g.
 * `deno run -A bench/ab.ts --trees _ab/main,_ab/cand --out /tmp/ab; tar -czf $OUT/ab.tgz -C /tmp ab`
 * (with `carry: [".device", "_ab"]`).
 * @module
 */

import { parseArgs } from "@std/cli/parse-args";

const args = parseArgs(Deno.args, {
  string: ["prepare", "dir", "trees", "out", "rounds", "command"],
});

/** Paths a tree needs to run the benchmarks. */
const TREE_PATHS = [
  "src",
  "wgsl",
  "bench",
  "routes",
  "tools",
  "mod.ts",
  "main.ts",
  "deno.json",
  "deno.lock",
  "package.json",
];

async function run(cmd: string[], cwd?: string, stdout: "inherit" | "piped" = "inherit") {
  const out = await new Deno.Command(cmd[0], { args: cmd.slice(1), cwd, stdout, stderr: "inherit" })
    .output();
  if (!out.success) throw new Error(`${cmd.join(" ")} failed (${out.code})`);
  return stdout === "piped" ? new TextDecoder().decode(out.stdout) : "";
}

/** `name=rev,...`: each commit's files under `dir/name` (replacing what was there). */
async function prepare(spec: string, dir: string): Promise<void> {
  for (const pair of spec.split(",")) {
    const [name, rev] = pair.split("=");
    if (!name || !rev) throw new Error(`--prepare: expected name=rev, got "${pair}"`);
    const target = `${dir}/${name}`;
    await Deno.remove(target, { recursive: true }).catch(() => {});
    await Deno.mkdir(target, { recursive: true });
    const commit = (await run(["git", "rev-parse", "--short", rev], undefined, "piped")).trim();
    await run([
      "bash",
      "-c",
      `git archive ${commit} ${TREE_PATHS.join(" ")} | tar -x -C ${target}`,
    ]);
    await Deno.remove(`${target}/bench/results`, { recursive: true }).catch(() => {});
    await Deno.mkdir(`${target}/bench/results`, { recursive: true });
    await Deno.writeTextFile(`${target}/COMMIT`, commit + "\n");
    console.error(`${target}: ${rev} (${commit})`);
  }
}

/** Sample nvidia-smi every 500 ms into `file` until the returned stop is called (no-op without it). */
function sampleClocks(file: string): () => void {
  try {
    const child = new Deno.Command("nvidia-smi", {
      args: [
        "--query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,utilization.gpu",
        "--format=csv",
        "-lms",
        "500",
        "-f",
        file,
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    return () => {
      try {
        child.kill();
      } catch { /* already gone */ }
    };
  } catch {
    return () => {};
  }
}

/** A path made absolute against the current directory (the runs' own directory is their tree). */
function abs(p: string): string {
  return p.startsWith("/") ? p : `${Deno.cwd()}/${p}`;
}

async function compare(trees: string[], out: string, rounds: number, command: string) {
  await Deno.mkdir(out, { recursive: true });
  const stop = sampleClocks(`${out}/clocks.csv`);
  try {
    for (let r = 1; r <= rounds; r++) {
      for (const tree of trees) {
        const name = `${tree.split("/").filter(Boolean).at(-1)}_${r}`;
        const t0 = performance.now();
        const logs = `> '${abs(`${out}/${name}.log`)}' 2> '${abs(`${out}/${name}.err`)}'`;
        const child = new Deno.Command("bash", {
          args: ["-c", `(${command}) ${logs}`],
          cwd: tree,
          stdout: "null",
          stderr: "null",
        }).spawn();
        const status = await child.status;
        const s = ((performance.now() - t0) / 1000).toFixed(0);
        console.error(`${name}: exit ${status.code} in ${s} s`);
        await Deno.mkdir(`${out}/${name}`, { recursive: true });
        for await (const f of Deno.readDir(`${tree}/bench/results`)) {
          if (f.isFile) {
            await Deno.copyFile(`${tree}/bench/results/${f.name}`, `${out}/${name}/${f.name}`);
          }
        }
      }
    }
  } finally {
    stop();
  }
}

if (args.prepare) {
  await prepare(String(args.prepare), String(args.dir ?? "_ab"));
} else if (args.trees && args.out) {
  await compare(
    String(args.trees).split(","),
    String(args.out),
    Number(args.rounds ?? 2),
    String(args.command ?? "deno task bench:gpu --shapes 385M --weights bf16"),
  );
} else {
  console.error("usage: bench/ab.ts --prepare name=rev,... | --trees a,b --out DIR [--rounds n]");
  Deno.exit(2);
}
