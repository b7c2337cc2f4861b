/**
 * The engine: one per model per process, owning the backend. Requests wait in a bounded queue;
 * the scheduler admits them into state slots and interleaves work (continuous batching): each
 * iteration runs at most one prefill chunk (so a long prompt never stalls running decodes) and then
 * one batched decode step for every decoding sequence. A sequence joins or leaves at any step.
 *
 * Numerics do not depend on the batch: prefill chunks split at absolute positions that are
 * multiples of `prefillChunk`, and decode kernels compute each sequence alone, so a request gives
 * the same tokens whether it runs alone, batched, or resumed from a saved session.
 * @module
 */

import { InputError, TnlError } from "../errors.ts";
import type { ModelConfig } from "../model/config.ts";
import type { SessionSnapshot } from "../model/snapshot.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import { StreamDecoder } from "../tokenizer/stream.ts";
import type { Backend, BackendState } from "./backend.ts";
import { newRngState, type RngState } from "./rng.ts";
import {
  type ResolvedSamplingParams,
  type SampledToken,
  Sampler,
  type SamplingParams,
  type TokenHistory,
  toPlainSamplingParams,
  validateSamplingParams,
} from "./sampler.ts";
import { Session } from "./session.ts";
import { StopMatcher } from "./stop.ts";

/** Why a generation ended. */
export type FinishReason = "stop" | "length" | "cancelled" | "timeout" | "error";

/** A generation request on a session. */
export interface GenerateRequest {
  /** The session to continue (its pending token, if any, is fed first). */
  session: Session;
  /** Prompt tokens appended before generating. */
  prompt: ArrayLike<number>;
  /** Sampling parameters (validated here). */
  sampling?: SamplingParams;
  /** Most tokens to generate (0 = only consume the prompt). */
  maxTokens: number;
  /** Stop strings (matched on text, not emitted). */
  stop?: string[];
  /** Stop at the model's end-of-sequence token (default true). */
  stopAtEos?: boolean;
  /** Return this many top log-probabilities per token (0 = only the chosen token's; undefined = none). */
  logprobs?: number;
  /** Cancel when aborted (client gone). */
  signal?: AbortSignal;
  /** Give up after this many milliseconds in the engine. */
  timeoutMs?: number;
  /**
   * Keep incomplete characters and a partial stop match in the session when the request ends by
   * length, instead of releasing them (for generations continued over several requests).
   */
  holdPartial?: boolean;
  /**
   * Checkpoints: called at a step boundary each time at least `checkpointEvery` tokens were
   * generated since the last call, with the session as it stands: the state read from the backend
   * slot, the history up to the last generated token (pending), the RNG, and held-back text as with
   * `holdPartial`. Resuming from it generates exactly the tokens this request goes on to generate.
   * The snapshot owns its arrays; the callback is not awaited (it must not block) and what it
   * throws is ignored. Not called for the step that ends the request (save the final session).
   */
  onCheckpoint?: (snapshot: SessionSnapshot) => void;
  /** Generated tokens between checkpoints (0 or absent: none). */
  checkpointEvery?: number;
}

/** Something that happened during a generation. */
export type GenerateEvent =
  | {
    type: "token";
    /** Generated token ids since the last event. */
    tokens: number[];
    /** Text completed by them (may be ""). */
    text: string;
    /** Per token, when log-probabilities were asked for. */
    logprobs?: SampledToken[];
  }
  | {
    type: "done";
    /** Why it ended. */
    finishReason: FinishReason;
    /** Text released at the end (held-back text, when the generation stopped for good). */
    text: string;
    /** Prompt tokens consumed and tokens generated. */
    usage: { promptTokens: number; completionTokens: number };
    /** The error, when finishReason is "error". */
    error?: unknown;
  };

/** Engine options. */
export interface EngineOptions {
  /** Most requests waiting for a slot (beyond: 429). Default 256. */
  maxQueue?: number;
  /** Most sequences decoded together (default: the backend's maxBatch). */
  maxBatch?: number;
  /** Prefill chunk, in tokens; chunks end at multiples of it (default 256). */
  prefillChunk?: number;
  /**
   * Decode steps per device submission when the backend samples on the device (default 16): the
   * host reads results back once per that many tokens (each readback costs ~10 ms in Deno).
   */
  stepsPerSync?: number;
}

/** Engine counters for metrics. */
export interface EngineStats {
  /** Requests accepted. */
  requests: number;
  /** Requests rejected because the queue was full. */
  rejected: number;
  /** Prompt tokens consumed. */
  promptTokens: number;
  /** Tokens generated. */
  completionTokens: number;
  /** Requests waiting. */
  queueDepth: number;
  /** Sequences in the running batch. */
  running: number;
  /** Size of the last decode batch. */
  lastBatch: number;
  /** Decode steps run. */
  decodeSteps: number;
  /** Generated tokens per second over the last few seconds. */
  tokensPerSecond: number;
}

/** A request inside the engine. */
interface Seq {
  req: GenerateRequest;
  session: Session;
  params: ResolvedSamplingParams;
  history: TokenHistory;
  rng: RngState;
  stop: StopMatcher | null;
  decoder: StreamDecoder;
  /** Tokens to consume before decoding (pending + prompt), and how many are done. */
  feed: Int32Array;
  fed: number;
  slot: BackendState | null;
  generated: number;
  promptTokens: number;
  push: (e: GenerateEvent) => void;
  finished: boolean;
  deadline: number;
  /** The session's history length and pending token before this request (for rollback). */
  before: { length: number; pending: number };
  /** `generated` at the last checkpoint. */
  checkpointed: number;
}

/** Whether any penalty is active (the device then keeps token counts). */
function hasPenalties(p: ResolvedSamplingParams): boolean {
  return p.repetitionPenalty !== 1 || p.presencePenalty !== 0 || p.frequencyPenalty !== 0;
}

/** An async queue of events that a generator can consume. */
class EventChannel {
  #items: GenerateEvent[] = [];
  #wake: (() => void) | null = null;
  #closed = false;

  push(e: GenerateEvent): void {
    this.#items.push(e);
    if (e.type === "done") this.#closed = true;
    this.#wake?.();
  }

  async *drain(): AsyncGenerator<GenerateEvent> {
    while (true) {
      while (this.#items.length) {
        const e = this.#items.shift()!;
        yield e;
        if (e.type === "done") return;
      }
      if (this.#closed) return;
      await new Promise<void>((r) => (this.#wake = r));
      this.#wake = null;
    }
  }
}

/**
 * Yields a macrotask so I/O (HTTP, SSE writes) runs between scheduler steps. A MessageChannel round
 * trip costs ~0.03 ms; `setTimeout(0)` is clamped to ~4 ms once nested, which would cap a CPU
 * decode loop near 250 steps/s. The channel is closed when the loop idles, so it never keeps the
 * process alive.
 */
class Yielder {
  readonly #ch = new MessageChannel();
  #resolve: (() => void) | null = null;

  constructor() {
    this.#ch.port1.onmessage = () => {
      const r = this.#resolve;
      this.#resolve = null;
      r?.();
    };
  }

  yield(): Promise<void> {
    return new Promise((r) => {
      this.#resolve = r;
      this.#ch.port2.postMessage(0);
    });
  }

  close(): void {
    this.#ch.port1.close();
    this.#ch.port2.close();
  }
}

/** The scheduler over one backend. */
export class Engine {
  /** The backend. */
  readonly backend: Backend;
  /** The tokenizer. */
  readonly tokenizer: Tokenizer;
  /** Model configuration. */
  readonly config: ModelConfig;
  readonly #opts: Required<EngineOptions>;
  readonly #queue: Seq[] = [];
  readonly #running: Seq[] = [];
  readonly #sampler: Sampler;
  #loop: Promise<void> | null = null;
  #closed = false;
  #prefillTurn = 0;
  readonly #stats: EngineStats = {
    requests: 0,
    rejected: 0,
    promptTokens: 0,
    completionTokens: 0,
    queueDepth: 0,
    running: 0,
    lastBatch: 0,
    decodeSteps: 0,
    tokensPerSecond: 0,
  };
  readonly #recent: { t: number; n: number }[] = [];

  /** An engine over a loaded backend and its tokenizer. */
  constructor(backend: Backend, tokenizer: Tokenizer, options: EngineOptions = {}) {
    this.backend = backend;
    this.tokenizer = tokenizer;
    this.config = backend.config;
    this.#opts = {
      maxQueue: options.maxQueue ?? 256,
      maxBatch: Math.min(options.maxBatch ?? backend.maxBatch, backend.maxBatch),
      prefillChunk: options.prefillChunk ?? 256,
      stepsPerSync: Math.max(1, options.stepsPerSync ?? 16),
    };
    this.#sampler = new Sampler(this.config.vocabSize);
  }

  /** Current counters. */
  stats(): EngineStats {
    const now = performance.now();
    while (this.#recent.length && now - this.#recent[0].t > 5000) this.#recent.shift();
    const n = this.#recent.reduce((a, r) => a + r.n, 0);
    const span = this.#recent.length ? Math.max(1000, now - this.#recent[0].t) : 1000;
    return {
      ...this.#stats,
      queueDepth: this.#queue.length,
      running: this.#running.length,
      tokensPerSecond: (n * 1000) / span,
    };
  }

  /** A new empty session. */
  newSession(id?: string): Session {
    return new Session(this.config, id);
  }

  /**
   * Generate for a session; events stream as tokens are produced. Throws (synchronously, before
   * any event) `InputError` for bad requests, `TnlError("conflict")` when the session is already
   * generating, `TnlError("overloaded")` when the queue is full.
   */
  generate(req: GenerateRequest): AsyncIterable<GenerateEvent> {
    if (this.#closed) throw new TnlError("backend_unavailable", "the engine is shut down");
    const s = req.session;
    if (s.busy) throw new TnlError("conflict", `session ${s.id} is already generating`);
    if (!Number.isSafeInteger(req.maxTokens) || req.maxTokens < 0) {
      throw new InputError("max_tokens", `must be a non-negative integer, got ${req.maxTokens}`);
    }
    const V = this.config.vocabSize;
    for (let i = 0; i < req.prompt.length; i++) {
      const t = req.prompt[i];
      if (!Number.isInteger(t) || t < 0 || t >= V) {
        throw new InputError(
          "prompt",
          `token ${t} at index ${i} is outside the vocabulary [0, ${V})`,
        );
      }
    }
    const feedLen = (s.pending >= 0 ? 1 : 0) + req.prompt.length;
    if (feedLen === 0) {
      throw new InputError("prompt", "is empty and the session has nothing to continue from");
    }
    const params = validateSamplingParams(req.sampling ?? {}, V);
    if (this.#queue.length >= this.#opts.maxQueue) {
      this.#stats.rejected++;
      throw new TnlError("overloaded", `the queue is full (${this.#opts.maxQueue} waiting)`);
    }
    const stop = req.stop?.length ? new StopMatcher(req.stop) : null;
    const feed = new Int32Array(feedLen);
    if (s.pending >= 0) feed[0] = s.pending;
    feed.set(Array.from(req.prompt), feedLen - req.prompt.length);
    const channel = new EventChannel();
    const seq: Seq = {
      req,
      session: s,
      params,
      history: s.history(),
      // A seed in the request restarts the random stream; otherwise the session's stream goes on.
      rng: params.seed !== undefined ? newRngState(params.seed) : { ...s.rng },
      stop,
      decoder: new StreamDecoder(this.tokenizer, { atStart: false }),
      feed,
      fed: 0,
      slot: null,
      generated: 0,
      promptTokens: req.prompt.length,
      push: (e) => channel.push(e),
      finished: false,
      deadline: req.timeoutMs ? performance.now() + req.timeoutMs : Infinity,
      before: { length: s.length, pending: s.pending },
      checkpointed: 0,
    };
    if (stop && s.text.heldStop) {
      // Text held at the end of the previous request continues matching here.
      const r = stop.push(s.text.heldStop);
      if (r.emit) seq.push({ type: "token", tokens: [], text: r.emit });
    }
    s.busy = true;
    s.sampling = toPlainSamplingParams(params) as Record<string, unknown>;
    seq.history.addPrompt(req.prompt);
    s.appendPrompt(req.prompt);
    this.#restoreDecoder(seq);
    this.#stats.requests++;
    this.#queue.push(seq);
    this.#kick();
    return channel.drain();
  }

  /** Re-feed held UTF-8 bytes of the previous request so characters complete across requests. */
  #restoreDecoder(seq: Seq): void {
    const held = seq.session.text.pendingBytes;
    if (!held.length) return;
    // The last generated tokens produced these bytes; replaying them restores the decoder.
    const toks = seq.session.tokens;
    const gen = seq.session.generatedFlags;
    const replay: number[] = [];
    for (let i = toks.length - 1 - seq.promptTokens; i >= 0 && replay.length < 4; i--) {
      if (!gen[i]) break;
      replay.unshift(toks[i]);
    }
    // Push the shortest suffix that leaves exactly the held bytes pending.
    for (let k = 1; k <= replay.length; k++) {
      const d = new StreamDecoder(this.tokenizer, { atStart: false });
      for (const t of replay.slice(replay.length - k)) d.push(t);
      const got = d.heldBytes();
      if (got.length === held.length && got.every((b, i) => b === held[i])) {
        seq.decoder = d;
        return;
      }
    }
  }

  #kick(): void {
    if (!this.#loop) {
      this.#loop = this.#run().finally(() => {
        this.#loop = null;
        if (this.#queue.length || this.#running.length) this.#kick();
      });
    }
  }

  /** The scheduler loop; runs while there is work. */
  async #run(): Promise<void> {
    const yielder = new Yielder();
    try {
      await this.#loopUntilIdle(yielder);
    } finally {
      yielder.close();
    }
  }

  async #loopUntilIdle(yielder: Yielder): Promise<void> {
    while (this.#queue.length || this.#running.length) {
      try {
        await this.#admit();
        this.#reap();
        await this.#prefillOne();
        this.#reap();
        await this.#decodeStep();
        this.#reap();
      } catch (e) {
        // A backend failure (device lost, ...) fails every running request, never hangs them.
        for (const s of [...this.#running, ...this.#queue]) await this.#finish(s, "error", e);
        this.#running.length = 0;
        this.#queue.length = 0;
      }
      await yielder.yield();
    }
  }

  async #admit(): Promise<void> {
    while (this.#queue.length && this.#running.length < this.#opts.maxBatch) {
      const seq = this.#queue[0];
      if (seq.req.signal?.aborted) {
        this.#queue.shift();
        await this.#finish(seq, "cancelled");
        continue;
      }
      let slot: BackendState;
      try {
        slot = this.backend.allocState();
      } catch (e) {
        if (e instanceof TnlError && e.code === "overloaded") return; // wait for a free slot
        throw e;
      }
      this.#queue.shift();
      seq.slot = slot;
      this.#running.push(seq);
      if (seq.session.state.position > 0) await this.backend.writeState(slot, seq.session.state);
      if (this.backend.setTokenHistory && hasPenalties(seq.params)) {
        const h = seq.history;
        await this.backend.setTokenHistory(
          slot,
          h.seenIds,
          h.generatedIds.map((t, i): [number, number] => [t, h.generatedCounts[i]]),
        );
      }
      this.#stats.promptTokens += seq.promptTokens;
    }
  }

  /** Cancel what was aborted or timed out (at a step boundary, so states stay consistent). */
  #reap(): void {
    const now = performance.now();
    for (const seq of this.#running) {
      if (seq.finished) continue;
      if (seq.req.signal?.aborted) void this.#finish(seq, "cancelled");
      else if (now > seq.deadline) void this.#finish(seq, "timeout");
    }
  }

  /** One prefill chunk of one sequence (round-robin), ending at a multiple of the chunk size. */
  async #prefillOne(): Promise<void> {
    const pre = this.#running.filter((s) => !s.finished && s.fed < s.feed.length - 1);
    if (!pre.length) return;
    const seq = pre[this.#prefillTurn++ % pre.length];
    const C = this.#opts.prefillChunk;
    const pos = seq.slot!.position;
    const end = Math.min(seq.feed.length - 1, seq.fed + (C - (pos % C)));
    await this.backend.prefill(seq.slot!, seq.feed.subarray(seq.fed, end), "none");
    seq.fed = end;
  }

  /**
   * Decode for every sequence whose prompt is consumed: K steps sampled on the device when the
   * backend can (one readback per K tokens), else one step with host sampling (logprobs need it).
   */
  async #decodeStep(): Promise<void> {
    // Sequences with max_tokens 0 finish once their prompt is consumed.
    for (const s of this.#running) {
      if (!s.finished && s.fed === s.feed.length - 1 && s.req.maxTokens === 0) {
        await this.#finish(s, "length");
      }
    }
    const batch = this.#running.filter((s) =>
      !s.finished && s.fed === s.feed.length - 1 && s.req.maxTokens > s.generated
    );
    if (!batch.length) return;
    const b = this.backend;
    const steps = Math.min(
      this.#opts.stepsPerSync,
      b.maxSampledSteps ?? 1,
      Math.max(...batch.map((s) => s.req.maxTokens - s.generated)),
    );
    if (b.decodeSampled && steps > 1 && batch.every((s) => s.req.logprobs === undefined)) {
      await this.#decodeOnDevice(batch, steps);
    } else {
      await this.#decodeOnHost(batch);
    }
    for (const seq of batch) await this.#checkpoint(seq);
  }

  /** One decode step; logits come back and are sampled here. */
  async #decodeOnHost(batch: Seq[]): Promise<void> {
    const tokens = new Int32Array(batch.length);
    batch.forEach((s, i) => (tokens[i] = s.feed[s.fed]));
    const logits = await this.backend.decode(batch.map((s) => s.slot!), tokens);
    this.#count(batch.length, batch.length);
    const V = this.config.vocabSize;
    for (let i = 0; i < batch.length; i++) {
      const seq = batch[i];
      const row = logits.subarray(i * V, (i + 1) * V);
      let token: number;
      let lp: SampledToken | undefined;
      if (seq.req.logprobs !== undefined) {
        lp = this.#sampler.sampleWithLogprobs(
          row,
          seq.params,
          seq.history,
          seq.rng,
          seq.req.logprobs,
        );
        token = lp.token;
      } else {
        token = this.#sampler.sample(row, seq.params, seq.history, seq.rng);
      }
      const stop = this.#accept(seq, token, lp);
      if (stop) await this.#finish(seq, stop === "length" ? "length" : "stop");
    }
  }

  /**
   * K decode steps with sampling on the device. End-of-sequence and max_tokens stop a row on the
   * device, so its state ends exactly at its last kept token. A stop string is only seen here, in
   * text: such a row's state is snapshotted first and, when it stops early, restored and replayed
   * through the same kernels up to the kept token (bit-identical to a run that never overshot).
   */
  async #decodeOnDevice(batch: Seq[], steps: number): Promise<void> {
    const b = this.backend;
    const snaps = new Map<Seq, BackendState>();
    for (const seq of batch) {
      if (!seq.stop) continue;
      try {
        const snap = b.allocState();
        await b.copyState(snap, seq.slot!);
        snaps.set(seq, snap);
      } catch (e) {
        if (!(e instanceof TnlError && e.code === "overloaded")) throw e;
        // No spare slot for a snapshot: decode this batch one step at a time instead.
        for (const s of snaps.values()) b.releaseState(s);
        return await this.#decodeOnHost(batch);
      }
    }
    try {
      const rngBefore = batch.map((s) => s.rng.counter);
      const pending = batch.map((s) => s.feed[s.fed]);
      const out = await b.decodeSampled!(
        batch.map((seq) => ({
          state: seq.slot!,
          token: seq.feed[seq.fed],
          budget: seq.req.maxTokens - seq.generated,
          sampling: seq.params,
          rng: seq.rng,
          stopAtEos: seq.req.stopAtEos !== false,
          penalties: hasPenalties(seq.params),
        })),
        steps,
      );
      this.#count(out.reduce((a, t) => a + t.length, 0), batch.length, steps);
      for (let i = 0; i < batch.length; i++) {
        const seq = batch[i];
        const toks = out[i];
        for (let j = 0; j < toks.length; j++) {
          const stop = this.#accept(seq, toks[j]);
          if (!stop) continue;
          if (stop === "text" && j < toks.length - 1) {
            // Rewind: the state consumed pending, t_1..t_{n-1}; keep pending, t_1..t_{j}.
            await b.copyState(seq.slot!, snaps.get(seq)!);
            await b.replay!(seq.slot!, Int32Array.of(pending[i], ...toks.subarray(0, j)));
            seq.rng.counter = rngBefore[i] + (seq.params.temperature > 0 ? j + 1 : 0);
          }
          await this.#finish(seq, stop === "length" ? "length" : "stop");
          break;
        }
      }
    } finally {
      for (const s of snaps.values()) b.releaseState(s);
    }
  }

  #count(tokens: number, batch: number, steps = 1): void {
    this.#stats.decodeSteps += steps;
    this.#stats.lastBatch = batch;
    this.#stats.completionTokens += tokens;
    this.#recent.push({ t: performance.now(), n: tokens });
  }

  /**
   * Take a sampled token: history, text, stop checks, the event. Returns how the sequence stopped
   * ("eos", "text" for a stop string, "length") or null when it goes on; the caller finishes it.
   */
  #accept(seq: Seq, token: number, lp?: SampledToken): "eos" | "text" | "length" | null {
    seq.history.addGenerated(token);
    seq.session.appendGenerated(token);
    seq.generated++;
    // The new token becomes the pending one: feed = [token], nothing consumed yet.
    seq.feed = Int32Array.of(token);
    seq.fed = 0;
    const eos = token === this.config.eosTokenId && seq.req.stopAtEos !== false;
    let text = eos ? "" : seq.decoder.push(token);
    let stopped = false;
    if (seq.stop && text) {
      const r = seq.stop.push(text);
      text = r.emit;
      stopped = r.stopped;
    }
    seq.push({ type: "token", tokens: [token], text, logprobs: lp ? [lp] : undefined });
    if (eos || stopped) return eos ? "eos" : "text";
    return seq.generated >= seq.req.maxTokens ? "length" : null;
  }

  /**
   * Call the request's `onCheckpoint` when at least `checkpointEvery` tokens were generated since
   * the last call. Only at a step boundary of a running sequence: the slot has consumed every history
   * token but the last generated one, which becomes the snapshot's pending token.
   */
  async #checkpoint(seq: Seq): Promise<void> {
    const every = seq.req.checkpointEvery ?? 0;
    const cb = seq.req.onCheckpoint;
    if (!cb || !(every > 0) || seq.finished || !seq.slot) return;
    if (seq.generated - seq.checkpointed < every || seq.fed !== 0 || seq.feed.length !== 1) return;
    seq.checkpointed = seq.generated;
    const state = await this.backend.readState(seq.slot);
    const snap: SessionSnapshot = {
      ...seq.session.toSnapshot(),
      state,
      pending: seq.feed[0],
      rng: { ...seq.rng },
      text: {
        pendingBytes: seq.decoder.heldBytes(),
        heldStop: seq.stop && !seq.stop.stopped ? seq.stop.state.held : "",
      },
      updatedAt: Date.now(),
    };
    try {
      cb(snap);
    } catch {
      // A checkpoint is best effort; the request goes on.
    }
  }

  /**
   * Leave the batch: save the state back into the session (everything consumed stays consumed, the
   * first unconsumed token becomes pending), free the slot, send "done". On error, or when never
   * admitted, the session is rolled back to what it was before the request.
   */
  async #finish(seq: Seq, reason: FinishReason, error?: unknown): Promise<void> {
    if (seq.finished) return;
    seq.finished = true;
    const s = seq.session;
    let rollback = !seq.slot;
    try {
      if (seq.slot) {
        if (reason !== "error") {
          s.state = await this.backend.readState(seq.slot);
          s.pending = seq.feed[seq.fed];
          s.truncate(s.state.position + 1);
        } else {
          rollback = true;
        }
        this.backend.releaseState(seq.slot);
        seq.slot = null;
      }
    } catch (e) {
      reason = "error";
      error = e;
      rollback = true;
    }
    if (rollback) {
      s.truncate(seq.before.length);
      s.pending = seq.before.pending;
    }
    const idx = this.#running.indexOf(seq);
    if (idx >= 0) this.#running.splice(idx, 1);
    let tail = "";
    if (reason === "length" && seq.req.holdPartial) {
      // Keep incomplete characters and a partial stop match for the next request.
      s.text = {
        pendingBytes: seq.decoder.heldBytes(),
        heldStop: seq.stop && !seq.stop.stopped ? seq.stop.state.held : "",
      };
    } else {
      const rest = seq.decoder.flush();
      if (seq.stop && !seq.stop.stopped) {
        const r = seq.stop.push(rest);
        tail = r.emit + (r.stopped ? "" : seq.stop.flush());
      } else if (!seq.stop) {
        tail = rest;
      }
      s.text = { pendingBytes: new Uint8Array(0), heldStop: "" };
    }
    if (!rollback) s.rng = seq.rng;
    s.updatedAt = Date.now();
    s.busy = false;
    seq.push({
      type: "done",
      finishReason: reason,
      text: tail,
      usage: { promptTokens: seq.promptTokens, completionTokens: seq.generated },
      error,
    });
  }

  /** Stop accepting work; running requests finish (or are cancelled if `cancel`). */
  async close(cancel = false): Promise<void> {
    this.#closed = true;
    if (cancel) {
      for (const s of [...this.#queue]) await this.#finish(s, "cancelled");
      this.#queue.length = 0;
      for (const s of [...this.#running]) await this.#finish(s, "cancelled");
    }
    while (this.#loop) await this.#loop;
  }
}
