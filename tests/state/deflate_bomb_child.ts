/**
 * Run by `encodings_test.ts` in a process of its own (so other test modules running in parallel
 * in the test process do not move its resident memory): a state whose layer 0 is a deflate bomb
 * (64 MiB of zeros, about 64 KB deflated) goes to the decoder; prints one JSON line with the
 * decoder's error message and how much the resident set grew meanwhile, in MiB.
 * @module
 */

import { decodeSession, encodeSession } from "../../src/state/codec.ts";
import { envelope, FP, makeSnapshot, pack, payloadObject, tinyConfig } from "./support.ts";

const config = tinyConfig();
const enc = { config, ...FP };
const body = new Blob([new Uint8Array(64 * 2 ** 20)]).stream().pipeThrough(
  new CompressionStream("deflate"),
);
const bomb = new Uint8Array(await new Response(body).arrayBuffer());
const p = payloadObject(
  await encodeSession(makeSnapshot(config), { ...enc, encoding: "f32+deflate" }),
);
(p.layers as { data: Uint8Array }[])[0].data = bomb;
const bytes = await envelope(pack(p));
const rss0 = Deno.memoryUsage().rss;
let message = "decoded without an error";
try {
  await decodeSession(bytes, enc);
} catch (e) {
  message = `${(e as Error).name}: ${(e as { code?: string }).code} ${(e as Error).message}`;
}
console.log(JSON.stringify({ message, grewMiB: (Deno.memoryUsage().rss - rss0) / 2 ** 20 }));
