/**
 * A generation on a session, as every caller runs it (the routes, the edge handler, the library):
 * a new session starts from the longest cached prefix of its prompt (`PrefixCache`) and captures
 * the boundaries that will pay; the usage counts the whole prompt.
 * @module
 */

import type { Engine, GenerateEvent, GenerateRequest } from "../engine/engine.ts";
import type { Session } from "../engine/session.ts";
import { createState } from "../model/state.ts";
import type { PrefixCache } from "./prefix_cache.ts";
import { isEmptySession } from "./prompt.ts";

/** Options of `generateOnSession`. */
export interface SessionGenerateOptions {
  /** The prefix cache (null or absent: every prompt is prefilled in full). */
  prefixCache?: PrefixCache | null;
  /** Leading prompt tokens other requests are likely to share (a chat's earlier turns). */
  shareAt?: number;
}

/** A running generation: its events, and how many prompt tokens came from the prefix cache. */
export interface SessionGeneration {
  /** The engine's events; the final usage counts every prompt token, cached ones included. */
  events: AsyncIterable<GenerateEvent>;
  /** Prompt tokens whose state came from the cache (OpenAI's `cached_tokens`). */
  cachedTokens: number;
}

/**
 * Run `req` on its session (see `Engine.generate` for what it throws). On a new, empty session the
 * prompt starts from the longest cached prefix: the session gets that prefix as its history and
 * the cached state, and the engine prefills only the rest.
 */
export async function generateOnSession(
  engine: Engine,
  req: GenerateRequest,
  opts: SessionGenerateOptions = {},
): Promise<SessionGeneration> {
  const { session, prompt } = req;
  const cache = opts.prefixCache;
  if (!cache || !isEmptySession(session)) return { events: engine.generate(req), cachedTokens: 0 };
  const ids = Int32Array.from(prompt);
  const plan = await cache.plan(ids, { shareAt: opts.shareAt });
  let rest = ids;
  const hit = plan.hit;
  if (hit) {
    // The state has consumed ids[0, b); ids[b] is the session's pending token, fed next.
    const b = hit.position;
    session.appendPrompt(ids.subarray(0, b + 1));
    session.state = hit.state;
    session.pending = ids[b];
    rest = ids.subarray(b + 1);
  }
  let events: AsyncIterable<GenerateEvent>;
  try {
    events = engine.generate({
      ...req,
      prompt: rest,
      capturePositions: plan.capture,
      onPrefixState: (s) => plan.onState(s),
    });
  } catch (e) {
    plan.done();
    if (hit) reset(session, engine);
    throw e;
  }
  const skipped = ids.length - rest.length;
  return { events: counted(events, skipped, plan.done), cachedTokens: hit?.position ?? 0 };
}

/** Back to an empty session (a warm start whose request was refused). */
function reset(session: Session, engine: Engine): void {
  session.truncate(0);
  session.pending = -1;
  session.state = createState(engine.config);
}

/** The events, with the skipped prompt tokens added back to the final usage. */
async function* counted(
  events: AsyncIterable<GenerateEvent>,
  skipped: number,
  done: () => void,
): AsyncGenerator<GenerateEvent> {
  try {
    for await (const ev of events) {
      if (ev.type === "done" && skipped) {
        yield { ...ev, usage: { ...ev.usage, promptTokens: ev.usage.promptTokens + skipped } };
      } else yield ev;
    }
  } finally {
    done();
  }
}
