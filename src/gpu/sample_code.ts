/**
 * Generated loop bodies of the sampling kernel (`wgsl/sample.wgsl`): the threshold searches read
 * `SAMPLE_UNROLL` logits per thread per iteration into named scalars (a private array indexed in
 * a loop can end up in slow local memory), then count or sum them in order.
 * @module
 */

import type { Defines } from "./shaders.ts";

/** Logits per thread per iteration of the threshold searches (the kernel's UNROLL). */
export const SAMPLE_UNROLL = 8;

/** Defines of `wgsl/sample.wgsl`: LOADS, COUNT (n += [w ≥ t]) and MASS (m += w·[w ≥ t]). */
export function sampleDefines(): Defines {
  const us = [...Array(SAMPLE_UNROLL).keys()];
  const live = (u: number) => `w${u} >= t && i0 + ${u}u * WG < V`;
  return {
    UNROLL: SAMPLE_UNROLL,
    LOADS: us.map((u) => `          let w${u} = logits[base + min(i0 + ${u}u * WG, V - 1u)];`)
      .join("\n"),
    COUNT: us.map((u) => `          n += select(0u, 1u, ${live(u)});`).join("\n"),
    MASS: us.map((u) => `          m += select(0.0, w${u}, ${live(u)});`).join("\n"),
  };
}
