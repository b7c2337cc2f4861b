/**
 * `HostSampling`: gives a backend that samples only on the host (the CPU) the multi-step
 * `decodeSampled` of the device backends, by running its `decode` and the `Sampler` in a loop where
 * the backend lives. In the server's backend worker this turns K round trips between the serving
 * thread and the worker (logits out, a token back, per step) into one per round; the tokens are the
 * ones the engine's own host sampling picks (same sampler, same random stream, same history).
 * @module
 */

import {
  type Backend,
  type BackendState,
  BROKEN_LOGITS_TOKEN,
  type LogitsMode,
  type PrefillItem,
  type SampledRow,
} from "./backend.ts";
import type { ModelState } from "../model/state.ts";
import { Sampler } from "./sampler.ts";
import { TokenHistory } from "./token_history.ts";

/** Whether a row of logits has a NaN or no finite value at all (nothing can be sampled from it). */
export function logitsBroken(row: Float32Array): boolean {
  let finite = false;
  for (let i = 0; i < row.length; i++) {
    const v = row[i];
    if (v !== v) return true;
    if (!finite && v !== Infinity && v !== -Infinity) finite = true;
  }
  return !finite;
}

/**
 * A backend with `decodeSampled`, `setTokenHistory` and `replay` built from another backend's
 * `decode` and the host `Sampler`; every other call goes to the wrapped backend unchanged.
 *
 * @example
 * ```ts ignore
 * const backend = new HostSampling(await CpuBackend.load(weights, config, dir));
 * const tokens = await backend.decodeSampled(rows, 16); // one call for 16 steps of every row
 * ```
 */
export class HostSampling implements Backend {
  /** The wrapped backend. */
  readonly inner: Backend;
  /** Most steps one `decodeSampled` call runs. */
  readonly maxSampledSteps: number;
  readonly #sampler: Sampler;
  /** Penalty history of the states that were given one (`setTokenHistory`). */
  readonly #histories = new Map<BackendState, TokenHistory>();
  /** Word 0 ≠ 0: the round in flight returns after its current step. */
  readonly #interrupt: Int32Array;
  /** Whether `decodeSampled` clears the flag itself (it is not shared with a caller's thread). */
  readonly #ownsFlag: boolean;

  /**
   * Wrap `inner` (which has no `decodeSampled` of its own); `maxSteps` bounds one call.
   * `interrupt`: a flag in shared memory that another thread sets to end the round in flight
   * (`WorkerBackend.interruptRound`) and clears before each call; without it the flag is this
   * object's own, set by `interruptRound` and cleared at each call's start.
   */
  constructor(inner: Backend, maxSteps = 128, interrupt?: Int32Array) {
    this.inner = inner;
    this.maxSampledSteps = maxSteps;
    this.#sampler = new Sampler(inner.config.vocabSize);
    this.#ownsFlag = !interrupt;
    this.#interrupt = interrupt ?? new Int32Array(1);
  }

  /** End the `decodeSampled` call in flight after its current step. */
  interruptRound(): void {
    Atomics.store(this.#interrupt, 0, 1);
  }

  /** The wrapped backend's kind. */
  get kind(): Backend["kind"] {
    return this.inner.kind;
  }
  /** The wrapped backend's model configuration. */
  get config(): Backend["config"] {
    return this.inner.config;
  }
  /** The wrapped backend's device. */
  get device(): string {
    return this.inner.device;
  }
  /** Most sequences one decode step takes. */
  get maxBatch(): number {
    return this.inner.maxBatch;
  }
  /** The wrapped backend's preferred prefill chunk. */
  get preferredPrefillChunk(): number | undefined {
    return this.inner.preferredPrefillChunk;
  }

  /** See `Backend.forward`. */
  forward(state: ModelState, tokens: Int32Array, logits: LogitsMode): Promise<Float32Array> {
    return this.inner.forward(state, tokens, logits);
  }
  /** See `Backend.allocState`. */
  allocState(): BackendState {
    return this.inner.allocState();
  }
  /** See `Backend.releaseState`; its penalty history goes too. */
  releaseState(state: BackendState): void {
    this.#histories.delete(state);
    this.inner.releaseState(state);
  }
  /** See `Backend.writeState`. */
  writeState(state: BackendState, host: ModelState): Promise<void> {
    return this.inner.writeState(state, host);
  }
  /** See `Backend.readState`. */
  readState(state: BackendState): Promise<ModelState> {
    return this.inner.readState(state);
  }
  /** See `Backend.copyState`. */
  copyState(dst: BackendState, src: BackendState): Promise<void> {
    return this.inner.copyState(dst, src);
  }
  /** See `Backend.prefill`. */
  prefill(state: BackendState, tokens: Int32Array, logits: LogitsMode): Promise<Float32Array> {
    return this.inner.prefill(state, tokens, logits);
  }
  /** See `Backend.decode`. */
  decode(states: readonly BackendState[], tokens: Int32Array): Promise<Float32Array> {
    return this.inner.decode(states, tokens);
  }
  /** See `Backend.prefillMany`: the wrapped one's, or one `prefill` per item. */
  async prefillMany(items: readonly PrefillItem[]): Promise<void> {
    if (this.inner.prefillMany) return await this.inner.prefillMany(items);
    for (const it of items) await this.inner.prefill(it.state, it.tokens, "none");
  }
  /** See `Backend.dispose`. */
  dispose(): Promise<void> {
    this.#histories.clear();
    return this.inner.dispose();
  }

  /** Give a state the tokens it has seen, for the penalties of the rows that use them. */
  setTokenHistory(
    state: BackendState,
    seen: Iterable<number>,
    generated: Iterable<[number, number]>,
  ): Promise<void> {
    try {
      const h = TokenHistory.fromState({ seen: [...seen], generated: [...generated] });
      this.#histories.set(state, h);
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Feed tokens one decode step at a time (the path `decodeSampled` takes), no logits kept. */
  async replay(state: BackendState, tokens: Int32Array): Promise<void> {
    for (let i = 0; i < tokens.length; i++) {
      await this.inner.decode([state], tokens.subarray(i, i + 1));
    }
  }

  /**
   * Up to `steps` decode steps of every row: each step decodes the rows still going in one batch,
   * samples each row's next token from its logits, and feeds it at the next step. A row stops at
   * its budget, at end-of-sequence when asked, or at broken logits (`BROKEN_LOGITS_TOKEN`). The
   * round ends at the step where a row stops (its reply need not wait for the others' steps, and
   * its slot frees) or after the step during which `interruptRound` was called; the rows that go
   * on continue in the next call with the same numbers, since each row's step is computed alone.
   */
  async decodeSampled(rows: readonly SampledRow[], steps: number): Promise<Int32Array[]> {
    const V = this.config.vocabSize;
    const eos = this.config.eosTokenId;
    const out = rows.map(() => [] as number[]);
    const pending = rows.map((r) => r.token);
    const ended = new Set<number>();
    let live = rows.map((_, i) => i).filter((i) => rows[i].budget > 0);
    if (this.#ownsFlag) Atomics.store(this.#interrupt, 0, 0);
    for (let step = 0; step < steps && live.length; step++) {
      if (step > 0 && (ended.size || Atomics.load(this.#interrupt, 0) !== 0)) break;
      const logits = await this.inner.decode(
        live.map((i) => rows[i].state),
        Int32Array.from(live, (i) => pending[i]),
      );
      const next: number[] = [];
      live.forEach((i, b) => {
        const row = rows[i];
        const z = logits.subarray(b * V, (b + 1) * V);
        if (logitsBroken(z)) {
          out[i].push(BROKEN_LOGITS_TOKEN);
          return void ended.add(i);
        }
        const history = row.penalties ? this.#histories.get(row.state) ?? null : null;
        const token = this.#sampler.sample(z, row.sampling, history, row.rng);
        history?.addGenerated(token);
        out[i].push(token);
        pending[i] = token;
        if (out[i].length >= row.budget || (row.stopAtEos && token === eos)) ended.add(i);
        else next.push(i);
      });
      live = next;
    }
    // States of the rows that ended (the caller asks for those whose budget may end here).
    for (const i of ended) {
      if (rows[i].capture && out[i].at(-1) !== BROKEN_LOGITS_TOKEN) {
        rows[i].captured = await this.inner.readState(rows[i].state);
      }
    }
    return out.map((t) => Int32Array.from(t));
  }
}
