/**
 * The sampling settings a request on a session runs with.
 * @module
 */

import type { Session } from "../engine/session.ts";
import type { SamplingParams } from "../engine/sampler.ts";

/**
 * Sampling for a request on a session: the fields the request gives, over (when continuing a
 * session, `isNew` false) the session's last settings less its seed: a seed restarts the random
 * stream; without one the session's stream goes on.
 */
export function sessionSampling(
  session: Session,
  isNew: boolean,
  given: SamplingParams,
): SamplingParams {
  if (isNew) return given;
  const { seed: _seed, ...inherited } = session.sampling as SamplingParams;
  return { ...inherited, ...given };
}
