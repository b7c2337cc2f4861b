/**
 * Tokenizer speed on about 100 KB of Shakespeare-like text with the demo model's tokenizer:
 * encode (SentencePiece in WebAssembly), decode (TypeScript), streaming decode, and loading.
 * Run: `deno bench -A bench/tokenizer_bench.ts` (add `--json` for a machine-readable result).
 * @module
 */

import { StreamDecoder, Tokenizer } from "../src/tokenizer/mod.ts";

const MODEL = new URL("../models/tnl-shakespeare-6m/tokenizer.model", import.meta.url).pathname;

// Public-domain lines (Romeo and Juliet, Hamlet, Macbeth), shuffled into ~100 KB of text.
const LINES = [
  "ROMEO:",
  "But, soft! what light through yonder window breaks?",
  "It is the east, and Juliet is the sun.",
  "Arise, fair sun, and kill the envious moon,",
  "Who is already sick and pale with grief,",
  "JULIET:",
  "O Romeo, Romeo! wherefore art thou Romeo?",
  "Deny thy father and refuse thy name;",
  "What's in a name? that which we call a rose",
  "By any other name would smell as sweet;",
  "HAMLET:",
  "To be, or not to be: that is the question:",
  "Whether 'tis nobler in the mind to suffer",
  "The slings and arrows of outrageous fortune,",
  "Or to take arms against a sea of troubles,",
  "MACBETH:",
  "To-morrow, and to-morrow, and to-morrow,",
  "Creeps in this petty pace from day to day",
  "To the last syllable of recorded time;",
  "",
];

function shakespeare(bytes: number): string {
  let s = 0x9e3779b9;
  const next = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
  const out: string[] = [];
  let n = 0;
  while (n < bytes) {
    const line = LINES[Math.floor(next() * LINES.length)];
    out.push(line);
    n += line.length + 1;
  }
  return out.join("\n");
}

const text = shakespeare(100_000);
const bytes = Deno.readFileSync(MODEL);
const tok = await Tokenizer.load(MODEL);
const ids = tok.encode(text);
const mb = new TextEncoder().encode(text).length / 1e6;
console.log(
  `text: ${mb.toFixed(3)} MB, ${ids.length} tokens (${
    (text.length / ids.length).toFixed(2)
  } chars/token)`,
);

Deno.bench("tokenizer: encode ~100 KB", { group: "tokenizer", baseline: true }, () => {
  tok.encode(text);
});

Deno.bench("tokenizer: decode ~100 KB of ids", { group: "tokenizer" }, () => {
  tok.decode(ids);
});

Deno.bench(
  "tokenizer: stream-decode ~100 KB of ids, one push per id",
  { group: "tokenizer" },
  () => {
    const d = new StreamDecoder(tok);
    let out = "";
    for (let i = 0; i < ids.length; i++) out += d.push(ids[i]);
    out += d.flush();
  },
);

Deno.bench("tokenizer: encode one short prompt", { group: "short" }, () => {
  tok.encode("ROMEO:\nWhat light through yonder window breaks?");
});

Deno.bench("tokenizer: load (parse, SHA-256, new wasm instance)", { group: "load" }, async () => {
  await Tokenizer.load(bytes);
});
