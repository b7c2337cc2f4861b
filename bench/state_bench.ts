/**
 * Session state codec: encode and decode (unsigned and HMAC-signed) of the demo model's state
 * (6 layers, 0.9 MB) and of the 385M shape (24 layers, 8 heads of 128, LRPE in layer 0, 13 MB),
 * each with 2,048 tokens of history. Sizes go to stderr and into the bench names.
 * Run: `deno bench -A bench/state_bench.ts` (add `--json` for a machine-readable result).
 * @module
 */

import { loadConfig, type ModelConfig } from "../src/model/config.ts";
import { shapeConfig } from "../src/model/random_weights.ts";
import type { SessionSnapshot } from "../src/model/snapshot.ts";
import { createState } from "../src/model/state.ts";
import { decodeSession, encodeSession, stateByteSize } from "../src/state/codec.ts";

const SECRET = "bench secret";
const FP = { modelFingerprint: "a".repeat(64), tokenizerFingerprint: "b".repeat(64) };

function snapshot(config: ModelConfig): SessionSnapshot {
  const state = createState(config);
  let x = 1;
  for (const l of state.layers) {
    for (let i = 0; i < l.length; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      l[i] = (x / 2 ** 32 - 0.5) * 4;
    }
  }
  const n = 2048;
  const tokens = Int32Array.from({ length: n }, (_, i) => (i * 7919) % config.vocabSize);
  state.position = n - 1;
  return {
    id: "s_bench",
    generation: 12,
    state,
    tokens,
    generated: Uint8Array.from({ length: n }, (_, i) => (i > n / 2 ? 1 : 0)),
    pending: tokens[n - 1],
    sampling: { temperature: 0.8, topK: 40, topP: 0.95 },
    rng: { seed: 42, counter: 1024 },
    text: { pendingBytes: new Uint8Array(0), heldStop: "" },
    createdAt: Date.now(),
    updatedAt: Date.now(),
  };
}

const models: [string, ModelConfig][] = [
  [
    "6m",
    await loadConfig(new URL("../models/tnl-shakespeare-6m/config.json", import.meta.url).pathname),
  ],
  ["385M", shapeConfig("385M")],
];

for (const [name, config] of models) {
  const snap = snapshot(config);
  const unsigned = await encodeSession(snap, { config, ...FP });
  const signed = await encodeSession(snap, { config, ...FP, secret: SECRET });
  const sizes = {
    model: name,
    stateBytes: stateByteSize(config),
    encodedBytes: unsigned.length,
    signedBytes: signed.length,
  };
  console.error(JSON.stringify(sizes));
  const label = `${name} (${(unsigned.length / 2 ** 20).toFixed(2)} MiB)`;
  const dec = { config, ...FP };

  Deno.bench(`encode ${label}`, { group: `encode ${name}`, baseline: true }, async () => {
    await encodeSession(snap, { config, ...FP });
  });
  Deno.bench(`encode ${label}, signed`, { group: `encode ${name}` }, async () => {
    await encodeSession(snap, { config, ...FP, secret: SECRET });
  });
  Deno.bench(`decode ${label}`, { group: `decode ${name}`, baseline: true }, async () => {
    await decodeSession(unsigned, dec);
  });
  Deno.bench(`decode ${label}, signed`, { group: `decode ${name}` }, async () => {
    await decodeSession(signed, { ...dec, secret: SECRET });
  });
}
