/**
 * Benchmark report rendering: a Markdown table and small SVG line charts from the JSON results.
 * @module
 */

/** One line of a chart. */
export interface Series {
  /** Legend label. */
  label: string;
  /** Points (x, y). */
  points: [number, number][];
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

function niceMax(v: number): number {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function fmt(v: number): string {
  if (v >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
  if (v >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
  return `${+v.toFixed(1)}`;
}

/** An SVG line chart; x on a log2 axis when `logX`. */
export function lineChart(
  title: string,
  xLabel: string,
  yLabel: string,
  series: Series[],
  logX = true,
): string {
  const W = 640, H = 360, L = 70, R = 170, T = 40, B = 50;
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const fx = (x: number) => (logX ? Math.log2(x) : x);
  const x0 = Math.min(...xs.map(fx)), x1 = Math.max(...xs.map(fx));
  const yMax = niceMax(Math.max(...ys, 0));
  const px = (x: number) => L + ((fx(x) - x0) / Math.max(1e-9, x1 - x0)) * (W - L - R);
  const py = (y: number) => T + (1 - y / yMax) * (H - T - B);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2 - R / 2}" y="22" text-anchor="middle" font-size="14">${escape(title)}</text>`,
  ];
  for (let i = 0; i <= 5; i++) {
    const y = (yMax * i) / 5;
    out.push(
      `<line x1="${L}" x2="${W - R}" y1="${py(y)}" y2="${py(y)}" stroke="#ddd"/>`,
      `<text x="${L - 6}" y="${py(y) + 4}" text-anchor="end">${fmt(y)}</text>`,
    );
  }
  for (const x of [...new Set(xs)].sort((a, b) => a - b)) {
    out.push(`<text x="${px(x)}" y="${H - B + 16}" text-anchor="middle">${fmt(x)}</text>`);
  }
  out.push(
    `<text x="${(L + W - R) / 2}" y="${H - 12}" text-anchor="middle">${escape(xLabel)}</text>`,
    `<text transform="translate(16 ${(T + H - B) / 2}) rotate(-90)" text-anchor="middle">${
      escape(yLabel)
    }</text>`,
    `<line x1="${L}" x2="${L}" y1="${T}" y2="${H - B}" stroke="#333"/>`,
    `<line x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}" stroke="#333"/>`,
  );
  series.forEach((s, i) => {
    const c = COLORS[i % COLORS.length];
    const pts = [...s.points].sort((a, b) => a[0] - b[0]);
    out.push(
      `<polyline fill="none" stroke="${c}" stroke-width="2" points="${
        pts.map(([x, y]) => `${px(x)},${py(y)}`).join(" ")
      }"/>`,
    );
    for (const [x, y] of pts) out.push(`<circle cx="${px(x)}" cy="${py(y)}" r="3" fill="${c}"/>`);
    out.push(
      `<rect x="${W - R + 12}" y="${T + i * 20}" width="12" height="3" fill="${c}"/>`,
      `<text x="${W - R + 30}" y="${T + i * 20 + 5}">${escape(s.label)}</text>`,
    );
  });
  out.push("</svg>");
  return out.join("\n");
}

function escape(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** A Markdown table from rows of cells. */
export function markdownTable(header: string[], rows: (string | number)[][]): string {
  const cell = (v: string | number) => (typeof v === "number" ? fmtNum(v) : v);
  return [
    `| ${header.join(" | ")} |`,
    `| ${header.map(() => "---").join(" | ")} |`,
    ...rows.map((r) => `| ${r.map(cell).join(" | ")} |`),
  ].join("\n");
}

/** Thousands separators and a sensible number of decimals. */
export function fmtNum(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const d = Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2;
  return v.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: 0 });
}

/**
 * Write a probe's results as `bench/results/<name>_<adapter slug>[_<label>].json` and `.md`; the
 * Markdown from the path of the command that produced it.
 */
export async function writeProbeResults(
  name: string,
  adapter: string,
  label: string | undefined,
  json: Record<string, unknown>,
  markdown: (command: string) => string[],
): Promise<string> {
  const slug = adapter.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "") +
    (label ? `_${label}` : "");
  const command = `deno run -A bench/${name}.ts ${Deno.args.join(" ")}`.trim();
  const results = new URL("./results/", import.meta.url);
  await Deno.mkdir(results, { recursive: true });
  const base = `${name}_${slug}`;
  await Deno.writeTextFile(
    new URL(`${base}.json`, results),
    JSON.stringify({ ...json, command }, null, 1),
  );
  await Deno.writeTextFile(new URL(`${base}.md`, results), markdown(command).join("\n"));
  return `bench/results/${base}.{json,md}`;
}
