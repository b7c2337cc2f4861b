/**
 * Running engine requests in tests: one request to its end, with its tokens, its text (including
 * what the final event flushes) and its final event.
 * @module
 */

import type { Engine, GenerateEvent, GenerateRequest } from "../../src/engine/engine.ts";

/** What one request produced. */
export interface RunResult {
  /** Generated token ids, in order. */
  tokens: number[];
  /** Generated text, in order, with what the final event flushes. */
  text: string;
  /** The final ("done") event. */
  done: Extract<GenerateEvent, { type: "done" }>;
}

/** Run one request to the end. */
export async function runRequest(engine: Engine, req: GenerateRequest): Promise<RunResult> {
  const tokens: number[] = [];
  let text = "";
  let done: RunResult["done"] | null = null;
  for await (const e of engine.generate(req)) {
    if (e.type === "token") tokens.push(...e.tokens);
    else done = e;
    text += e.text;
  }
  return { tokens, text, done: done! };
}
