/**
 * Reading the official implementation's golden outputs (`golden.safetensors`) per prompt.
 * @module
 */

import { openSafetensors } from "../../src/model/weights/safetensors.ts";

/** One prompt's stored outputs. */
export interface GoldenPrompt {
  /** Prompt name (`p_short`, `q_ragged`, ...). */
  name: string;
  /** Prompt token ids. */
  promptIds: Int32Array;
  /** Positions whose full logits are stored. */
  logitsPositions: Int32Array;
  /** [k, V] logits at those positions. */
  logitsAtPositions: Float32Array;
  /** Arg-max at every position. */
  argmaxAll: Int32Array;
  /** Log-sum-exp at every position. */
  logsumexpAll: Float32Array;
  /** Per layer state after the prompt (only some prompts). */
  stateAfterPrompt: (Float32Array | null)[];
  /** Greedy continuation ids. */
  greedyIds: Int32Array;
  /** [s, V] logits of the first s decode steps (after feeding greedy_ids[i]). */
  greedyStepLogits: Float32Array;
  /** Per layer sum and sum of squares of the state after feeding every greedy id. */
  stateAfterGreedy: { sum: number; sumsq: number }[];
}

/** Load every prompt of a golden file. */
export async function loadGolden(path: string, numLayers: number): Promise<GoldenPrompt[]> {
  const g = await openSafetensors(path);
  try {
    const f32 = async (n: string) => new Float32Array((await g.read(n)).slice().buffer);
    const i32 = async (n: string) => new Int32Array((await g.read(n)).slice().buffer);
    const names = [...new Set([...g.tensors.keys()].map((k) => k.split(".")[0]))].sort();
    const out: GoldenPrompt[] = [];
    for (const p of names) {
      const stateAfterPrompt: (Float32Array | null)[] = [];
      const stateAfterGreedy: { sum: number; sumsq: number }[] = [];
      for (let l = 0; l < numLayers; l++) {
        const n = `${p}.state_after_prompt.layer${l}`;
        stateAfterPrompt.push(g.tensors.has(n) ? await f32(n) : null);
        stateAfterGreedy.push({
          sum: (await f32(`${p}.state_after_greedy.layer${l}.sum`))[0],
          sumsq: (await f32(`${p}.state_after_greedy.layer${l}.sumsq`))[0],
        });
      }
      out.push({
        name: p,
        promptIds: await i32(`${p}.prompt_ids`),
        logitsPositions: await i32(`${p}.logits_positions`),
        logitsAtPositions: await f32(`${p}.logits_at_positions`),
        argmaxAll: await i32(`${p}.argmax_all`),
        logsumexpAll: await f32(`${p}.logsumexp_all`),
        stateAfterPrompt,
        greedyIds: await i32(`${p}.greedy_ids`),
        greedyStepLogits: await f32(`${p}.greedy_step_logits`),
        stateAfterGreedy,
      });
    }
    return out;
  } finally {
    g.close();
  }
}
