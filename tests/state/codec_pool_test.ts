/**
 * The codec pool encodes and hashes in workers exactly as the codec does in the calling thread,
 * keeps error codes, and falls back to the calling thread with no workers.
 */

import assert from "node:assert/strict";
import {
  decodeSession,
  encodeSession,
  sessionDigest,
  STATE_ENCODINGS,
} from "../../src/state/codec.ts";
import { CodecPool } from "../../src/state/codec_pool.ts";
import { TnlError } from "../../src/errors.ts";
import { FP, makeSnapshot, tinyConfig } from "./support.ts";

const config = tinyConfig();

for (const size of [0, 2]) {
  Deno.test(`codec pool (${size} workers): same bytes and digest as the codec, errors keep their code`, async () => {
    const pool = new CodecPool(size, 0);
    try {
      for (const secret of [undefined, "s3cret"]) {
        const snaps = [1, 2, 3].map((seed) => makeSnapshot(config, 5, seed, `sess_${seed}`));
        const opts = { config, ...FP, secret };
        const copies = snaps.map((s) => s.state.layers.map((l) => l.slice()));
        const got = await Promise.all(snaps.map((s) => pool.encode(s, opts)));
        // The layers lent to a worker are back, unchanged.
        snaps.forEach((s, i) => assert.deepEqual(s.state.layers, copies[i]));
        for (let i = 0; i < snaps.length; i++) {
          const want = await encodeSession(snaps[i], opts);
          assert.deepEqual(got[i].bytes, want);
          assert.equal(got[i].digest, await sessionDigest(want));
          assert.equal(await pool.digest(want), got[i].digest);
          assert.deepEqual(await pool.decode(want, opts), await decodeSession(want, opts));
        }
      }
      // Every encoding is one option away, in the workers too (deflate runs there).
      for (const encoding of STATE_ENCODINGS) {
        const snap = makeSnapshot(config, 5, 4, "sess_enc");
        const opts = { config, ...FP, encoding };
        const got = await pool.encode(snap, opts);
        assert.deepEqual(got.bytes, await encodeSession(snap, opts));
        assert.equal((await pool.decode(got.bytes, opts)).encoding, encoding);
      }
      const bad = makeSnapshot(config, 5, 1, "sess_1");
      bad.state.layers[0][0] = NaN;
      await assert.rejects(
        () => pool.encode(bad, { config, ...FP }),
        (e: unknown) =>
          e instanceof TnlError && e.code === "internal" && /non-finite/.test(e.message),
      );
      assert.ok(Number.isNaN(bad.state.layers[0][0]) && bad.state.layers[0].length > 1);
    } finally {
      pool.close();
    }
  });
}
