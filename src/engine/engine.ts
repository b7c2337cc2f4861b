/**
 * The engine: one per model per process, owning the backend. Requests wait in a bounded queue;
 * the scheduler admits every waiting request as soon as a state slot is free and runs rounds
 * (continuous batching). A round is: admit; prefill up to a token budget across the sequences
 * still consuming prompts (short remainders first, then the oldest long prompt, in chunks, in one
 * backend call where the backend batches them); one device decode loop of K steps for every
 * sequence whose prompt is consumed; then the final states of the sequences that ended, read back
 * together (or taken from the decode submission itself). K is chosen per round from the measured
 * step time: short while requests wait for their first token, long when the batch is stable.
 *
 * Numerics do not depend on the batch: prefill chunks split at absolute positions that are
 * multiples of the prefill chunk, and decode kernels compute each sequence alone, so a request
 * gives the same tokens whether it runs alone, batched, or resumed from a saved session.
 * @module
 */

import { InputError, TnlError } from "../errors.ts";
import type { ModelConfig } from "../model/config.ts";
import type { SessionSnapshot } from "../model/snapshot.ts";
import { type ModelState, stateIsFinite } from "../model/state.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";
import { StreamDecoder } from "../tokenizer/stream.ts";
import {
  type Backend,
  type BackendState,
  BROKEN_LOGITS_TOKEN,
  type PrefillItem,
  type SampledRow,
} from "./backend.ts";
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
import { logitsBroken } from "./host_sampling.ts";
import { ResidentStates } from "./resident.ts";
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
  /**
   * Read the final state back into the session (default true). False when the caller does not
   * keep the session: its state is then never copied off the backend, and the request leaves the
   * session as it found it (history, pending token, RNG), whatever it generated.
   */
  keepState?: boolean;
  /**
   * Prefix capture: absolute positions (multiples of the prefill chunk) where the state is read
   * back while the prompt is prefilled, and `onPrefixState` called with it (the state after exactly
   * that many tokens; the callback owns it, is not awaited, and what it throws is ignored). The
   * prefill stops at such a position for its round, so the reads of a round go out together
   * (`Backend.readStates`). Positions not reached at the end of a prefill chunk (inside a remainder
   * fed through the decode path, at or before the start) are skipped.
   */
  capturePositions?: readonly number[];
  /** Receives each captured state (see `capturePositions`). */
  onPrefixState?: (state: ModelState) => void;
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
  /**
   * Prefill chunk, in tokens; chunks end at multiples of it (default: the backend's preferred
   * chunk, else 256). Part of the numerics: a session resumes exactly only under the same chunk.
   */
  prefillChunk?: number;
  /**
   * Most prompt tokens prefilled per scheduler round, across sequences (default: one chunk on the
   * CPU, whose prefill runs on the calling thread; 4,096 tokens or one chunk on others). Running
   * sequences get a decode step between rounds, so a long prompt never stalls them.
   */
  prefillBudget?: number;
  /**
   * Prompt remainders of at most this many tokens are fed through the decode path, batched across
   * sequences (`Backend.replayMany`), instead of a prefill call each: for short prompts the decode
   * step of a whole batch costs less than one prefill per sequence. Part of the numerics: the rule
   * depends only on the request (default 32 where the backend has `replayMany`, else 0).
   */
  recurrentPrefill?: number;
  /**
   * Most decode steps per device submission when the backend samples on the device (default 128):
   * the host reads results back once per round (a mapped readback costs ~10 ms in Deno, one
   * through the WebGPU backend's canvas well under 1).
   */
  stepsPerSync?: number;
  /**
   * Target duration of a decode round, in ms: `busy` while admitted requests wait for their first
   * token (or waiting ones for a free slot), `steady` otherwise (defaults 50 and 200). K follows
   * from the measured step time.
   */
  roundMs?: { busy: number; steady: number; continued?: number };
  /**
   * Continue steady decode rounds on the device (default: where the backend can,
   * `Backend.decodesAhead`): when the next round will decode the same batch (no request waiting
   * for a slot or a prefill, no logprobs, no kept state ending in it), it is submitted before
   * this round's tokens are read back, so the device never waits for the host. Rows with stop
   * strings or a checkpoint due get a snapshot on the device first (what a stop rewinds to and
   * the checkpoint reads). Its
   * length is `roundMs.continued` (default 100 ms): a request that arrives waits for it.
   */
  decodeAhead?: boolean;
  /**
   * Fixed cost of a device round, in ms, left out of the measured step time (default 15 on device
   * backends, measured on the H200 with mapped reads: Deno's `mapAsync` polls the device every 10
   * ms, plus the worker round trip; 1 on the CPU, the worker round trip alone). The same constant
   * is taken off when a step is learned and added back when a round's steps are chosen, so rounds
   * still come out near `roundMs` where the real cost is lower (reads through the canvas).
   */
  readbackMs?: number;
  /**
   * Keep the backend slot of a session whose request ended with its state kept, so its next
   * request skips the upload (`src/engine/resident.ts`); slots are given back when needed.
   * Default: on device backends (where an upload crosses to the GPU), not on the CPU.
   */
  keepResident?: boolean;
  /** Called after each scheduler round with what it did (tracing, benchmarks). */
  onRound?: (r: RoundInfo) => void;
}

/** What one scheduler round did, with its phases' wall times in ms. */
export interface RoundInfo {
  /** Requests admitted. */
  admitted: number;
  /** Sequences prefilled, and their tokens. */
  prefillSeqs: number;
  /** Prompt tokens prefilled. */
  prefillTokens: number;
  /** Decode batch size (0: no decode). */
  batch: number;
  /** Decode steps. */
  steps: number;
  /** Sequences settled (ended). */
  settled: number;
  /** Phase times. */
  ms: { admit: number; prefill: number; decode: number; settle: number };
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
  /** Sequences holding a slot (prefilling or decoding). */
  running: number;
  /** Of those, sequences still consuming their prompt. */
  prefilling: number;
  /** Steps of the last device decode round. */
  lastSteps: number;
  /** Size of the last decode batch. */
  lastBatch: number;
  /** Decode steps run. */
  decodeSteps: number;
  /** Decode rounds the device continued before the host had read the round before back. */
  continuedRounds: number;
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
  /** Set when the sequence left the batch (its end is settled at the end of the round). */
  finished: boolean;
  deadline: number;
  /** The session's history length, pending token and RNG before this request (for rollback). */
  before: { length: number; pending: number; rng: RngState };
  /** `generated` at the last checkpoint. */
  checkpointed: number;
  /** How it ended, once `finished`. */
  end: { reason: FinishReason; error?: unknown } | null;
  /** Its final state, when the decode submission captured it. */
  captured: ModelState | null;
  /** It ended in a device round by itself (end-of-sequence, budget, broken logits). */
  endedOnDevice?: boolean;
  /** It ended at a stop string while its round was continued: its state was restored, the
   * continued round's tokens are not its own. */
  rewound?: boolean;
  /** Tokens and text of this round, gathered into one event (device rounds), or null. */
  out: { tokens: number[]; text: string } | null;
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

/** The default prefill chunk when neither the options nor the backend name one. */
const DEFAULT_PREFILL_CHUNK = 256;
/** Prompt tokens per round on a device backend: about 0.25 s of prefill at 385M on the H200. */
const GPU_PREFILL_BUDGET = 4096;

/** A non-finite value in a state or in logits, as an error of that request alone. */
function nonFinite(where: string): TnlError {
  return new TnlError(
    "non_finite",
    `the model produced a non-finite value (${where}); the session keeps its last good state`,
  );
}

/**
 * Whether a read-back state holds only finite values; a backend worker marks the states it read
 * (`ModelState.finite`), so the serving thread scans only unmarked ones.
 */
function finiteState(state: ModelState): boolean {
  return state.finite ?? stateIsFinite(state);
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
  /** Sequences holding a slot, in admission order. */
  readonly #running: Seq[] = [];
  /** Sequences that ended this round, settled (state read, slot freed, "done" sent) at its end. */
  readonly #ending: Seq[] = [];
  readonly #sampler: Sampler;
  #loop: Promise<void> | null = null;
  #closed = false;
  /** Whether a `decodeSampled` round is in flight. */
  #decoding = false;
  /**
   * The decode round continued on the device (`decodeAhead`), not taken yet, with the snapshots
   * of its rows that have stop strings or a checkpoint due (their states before it, taken on the
   * device).
   */
  #ahead: { batch: Seq[]; steps: number; snaps: Map<Seq, BackendState> } | null = null;
  /** Measured ms per device decode step (readback included), by batch-size bucket. */
  readonly #stepMs = new Map<number, number>();
  readonly #resident: ResidentStates;
  readonly #stats: EngineStats = {
    requests: 0,
    rejected: 0,
    promptTokens: 0,
    completionTokens: 0,
    queueDepth: 0,
    running: 0,
    prefilling: 0,
    lastBatch: 0,
    lastSteps: 0,
    decodeSteps: 0,
    continuedRounds: 0,
    tokensPerSecond: 0,
  };
  readonly #recent: { t: number; n: number }[] = [];

  /** An engine over a loaded backend and its tokenizer. */
  constructor(backend: Backend, tokenizer: Tokenizer, options: EngineOptions = {}) {
    this.backend = backend;
    this.tokenizer = tokenizer;
    this.config = backend.config;
    const chunk = options.prefillChunk ?? backend.preferredPrefillChunk ?? DEFAULT_PREFILL_CHUNK;
    this.#opts = {
      maxQueue: options.maxQueue ?? 256,
      maxBatch: Math.min(options.maxBatch ?? backend.maxBatch, backend.maxBatch),
      prefillChunk: chunk,
      prefillBudget: Math.max(
        1,
        options.prefillBudget ??
          (backend.kind === "cpu" ? chunk : Math.max(chunk, GPU_PREFILL_BUDGET)),
      ),
      stepsPerSync: Math.max(1, options.stepsPerSync ?? 128),
      recurrentPrefill: backend.replayMany ? Math.max(0, options.recurrentPrefill ?? 32) : 0,
      roundMs: { continued: 100, ...(options.roundMs ?? { busy: 50, steady: 200 }) },
      decodeAhead: (options.decodeAhead ?? true) && backend.decodesAhead === true,
      readbackMs: options.readbackMs ?? (backend.kind === "cpu" ? 1 : 15),
      keepResident: options.keepResident ?? backend.kind !== "cpu",
      onRound: options.onRound ?? (() => {}),
    };
    this.#resident = new ResidentStates(backend);
    this.#sampler = new Sampler(this.config.vocabSize);
  }

  /** The prefill chunk: prompts are prefilled in chunks ending at its multiples. */
  get prefillChunk(): number {
    return this.#opts.prefillChunk;
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
      prefilling: this.#running.filter((s) => this.#prefilling(s)).length,
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
      before: { length: s.length, pending: s.pending, rng: { ...s.rng } },
      checkpointed: 0,
      end: null,
      captured: null,
      out: null,
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
    // A round that can end at any step (host sampling in a worker) ends now: the request gets
    // its slot after one step instead of after the round.
    if (this.#decoding && this.#running.length < this.#opts.maxBatch) {
      this.backend.interruptRound?.();
    }
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
        if (this.#queue.length || this.#running.length || this.#ending.length) this.#kick();
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
    while (this.#queue.length || this.#running.length || this.#ending.length) {
      const r: RoundInfo = {
        admitted: 0,
        prefillSeqs: 0,
        prefillTokens: 0,
        batch: 0,
        steps: 0,
        settled: this.#ending.length,
        ms: { admit: 0, prefill: 0, decode: 0, settle: 0 },
      };
      let t = performance.now();
      const lap = (phase: keyof RoundInfo["ms"]) => {
        const now = performance.now();
        r.ms[phase] = now - t;
        t = now;
      };
      try {
        r.admitted = await this.#admit();
        lap("admit");
        this.#reap();
        [r.prefillSeqs, r.prefillTokens] = await this.#prefillRound();
        lap("prefill");
        this.#reap();
        [r.batch, r.steps] = await this.#decodeRound(r.prefillTokens === 0);
        lap("decode");
        this.#reap();
      } catch (e) {
        // A backend failure (device lost, ...) fails every running request, never hangs them.
        this.#dropAhead();
        this.#resident.prune(true);
        for (const s of [...this.#running, ...this.#queue]) this.#end(s, "error", e);
        this.#queue.length = 0;
      }
      t = performance.now();
      r.settled = this.#ending.length;
      await this.#settle();
      lap("settle");
      this.#opts.onRound(r);
      // After a long round on this thread (CPU prefill), a timer turn: the event loop then polls
      // I/O (new connections, health checks, aborts) before the next round.
      const spent = r.ms.admit + r.ms.prefill + r.ms.decode + r.ms.settle;
      if (spent > 20) await new Promise((res) => setTimeout(res, 0));
      else await yielder.yield();
    }
  }

  /** Whether a running sequence still has prompt tokens to prefill (all but its last). */
  #prefilling(s: Seq): boolean {
    return !s.finished && s.fed < s.feed.length - 1;
  }

  /** Admit every waiting request while slots are free (uploads only; nothing is read back). */
  async #admit(): Promise<number> {
    const waiting = this.#queue.length ? this.backend.whenReady?.() : null;
    if (waiting) await waiting;
    let admitted = 0;
    while (this.#queue.length && this.#running.length < this.#opts.maxBatch) {
      const seq = this.#queue[0];
      if (seq.req.signal?.aborted) {
        this.#queue.shift();
        this.#end(seq, "cancelled");
        continue;
      }
      let slot = this.#resident.take(seq.session);
      const resident = slot !== null;
      if (!slot) {
        try {
          slot = this.#allocSlot();
        } catch (e) {
          if (e instanceof TnlError && e.code === "overloaded") break; // wait for a free slot
          throw e;
        }
      }
      this.#queue.shift();
      admitted++;
      seq.slot = slot;
      this.#running.push(seq);
      try {
        if (!resident && seq.session.position > 0) {
          await this.backend.writeState(slot, seq.session.state);
        }
        if (this.backend.setTokenHistory && hasPenalties(seq.params)) {
          const h = seq.history;
          await this.backend.setTokenHistory(
            slot,
            h.seenIds,
            h.generatedIds.map((t, i): [number, number] => [t, h.generatedCounts[i]]),
          );
        }
      } catch (e) {
        // A state the backend refuses fails this request alone.
        if (!(e instanceof InputError)) throw e;
        this.#end(seq, "error", e);
        continue;
      }
      this.#stats.promptTokens += seq.promptTokens;
    }
    return admitted;
  }

  /** A free backend slot, giving back resident ones (oldest first) while none is free. */
  #allocSlot(): BackendState {
    this.#resident.prune();
    for (;;) {
      try {
        return this.backend.allocState();
      } catch (e) {
        if (!(e instanceof TnlError && e.code === "overloaded") || !this.#resident.evictOne()) {
          throw e;
        }
      }
    }
  }

  /**
   * Cancel what was aborted or timed out (at a step boundary, so states stay consistent; rows of
   * a round continued on the device wait until it is taken, see `#aheadSteps`).
   */
  #reap(): void {
    const now = performance.now();
    for (const seq of [...this.#running]) {
      if (seq.finished || this.#ahead?.batch.includes(seq)) continue;
      if (seq.req.signal?.aborted) this.#end(seq, "cancelled");
      else if (now > seq.deadline) this.#end(seq, "timeout");
    }
  }

  /**
   * Prefill up to the round's token budget, in chunks that end at multiples of the prefill chunk:
   * first every sequence whose remaining prompt fits in one chunk (short prompts start decoding
   * this round), then the oldest long prompts, chunk by chunk. One backend call when it batches.
   */
  async #prefillRound(): Promise<[number, number]> {
    let pre = this.#running.filter((s) => this.#prefilling(s));
    if (!pre.length) return [0, 0];
    // Short remainders: the decode path, all sequences together.
    const R = this.#opts.recurrentPrefill;
    const short = pre.filter((s) => s.feed.length - 1 - s.fed <= R);
    let shortTokens = 0;
    if (short.length) {
      shortTokens = await this.#replayRemainders(short);
      pre = pre.filter((s) => !short.includes(s));
    }
    if (!pre.length) return [short.length, shortTokens];
    const C = this.#opts.prefillChunk;
    let budget = this.#opts.prefillBudget;
    const items: { seq: Seq; end: number }[] = [];
    const planned = new Map<Seq, number>();
    const take = (seq: Seq, force: boolean): boolean => {
      const from = planned.get(seq) ?? seq.fed;
      const pos = seq.slot!.position + (from - seq.fed);
      // A remainder the decode path takes goes there, after the chunks (below): which path a token
      // takes depends on the request alone, never on what else shares the round.
      if (from !== seq.fed && R > 0 && seq.feed.length - 1 - from <= R) return false;
      // A capture position ends the round's chunks of this sequence: its state is read after them.
      if (from !== seq.fed && seq.req.capturePositions?.includes(pos)) return false;
      const end = Math.min(seq.feed.length - 1, from + (C - (pos % C)));
      if (end <= from || (!force && end - from > budget)) return false;
      items.push({ seq, end });
      planned.set(seq, end);
      budget -= end - from;
      return true;
    };
    for (const s of pre) {
      if (s.feed.length - 1 - s.fed <= C && budget > 0) take(s, false);
    }
    for (const s of pre) {
      while (budget > 0 && (planned.get(s) ?? s.fed) < s.feed.length - 1) {
        // The first chunk of a round always goes, so a prompt longer than the budget progresses.
        if (!take(s, items.length === 0)) break;
      }
      if (budget <= 0) break;
    }
    const calls: PrefillItem[] = [];
    const starts = new Map<Seq, number>();
    for (const { seq, end } of items) {
      const from = starts.get(seq) ?? seq.fed;
      calls.push({ state: seq.slot!, tokens: seq.feed.subarray(from, end) });
      starts.set(seq, end);
    }
    if (this.backend.prefillMany) await this.backend.prefillMany(calls);
    else for (const c of calls) await this.backend.prefill(c.state, c.tokens, "none");
    for (const { seq, end } of items) seq.fed = end;
    await this.#capture([...starts.keys()]);
    // Remainders of at most R tokens left after the chunks: the decode path, as at a round start.
    const tails = [...starts.keys()].filter((s) => {
      const left = s.feed.length - 1 - s.fed;
      return left > 0 && left <= R;
    });
    const tailTokens = tails.length ? await this.#replayRemainders(tails) : 0;
    return [
      short.length + starts.size,
      shortTokens + tailTokens + calls.reduce((a, c) => a + c.tokens.length, 0),
    ];
  }

  /**
   * Feed the rest of each sequence's prompt (all but its last token) through the batched decode
   * path, all sequences together; returns the tokens fed.
   */
  async #replayRemainders(seqs: readonly Seq[]): Promise<number> {
    const items = seqs.map((s) => ({
      state: s.slot!,
      tokens: s.feed.subarray(s.fed, s.feed.length - 1),
    }));
    await this.backend.replayMany!(items);
    for (const s of seqs) s.fed = s.feed.length - 1;
    return items.reduce((a, it) => a + it.tokens.length, 0);
  }

  /**
   * Read back, in one call, the states of the sequences that stand at one of their capture
   * positions, and hand each to its request's `onPrefixState`.
   */
  async #capture(seqs: readonly Seq[]): Promise<void> {
    const at = seqs.filter((s) =>
      s.req.onPrefixState && s.req.capturePositions?.includes(s.slot!.position)
    );
    if (!at.length) return;
    const slots = at.map((s) => s.slot!);
    const states = this.backend.readStates
      ? await this.backend.readStates(slots)
      : await Promise.all(slots.map((st) => this.backend.readState(st)));
    at.forEach((s, i) => {
      if (!finiteState(states[i])) return; // a broken state is never shared; the end reports it
      try {
        s.req.onPrefixState!(states[i]);
      } catch {
        // Best effort: the request goes on.
      }
    });
  }

  /**
   * Decode for every sequence whose prompt is consumed: K steps sampled on the device when the
   * backend can (one readback per round), else one step with host sampling (logprobs need it).
   * `learn`: no prefill went to the device this round, so the round's time is decode time alone.
   */
  async #decodeRound(learn: boolean): Promise<[number, number]> {
    if (this.#ahead) {
      // The round continued on the device: its rows, less those the device stopped.
      const { batch, steps, snaps } = this.#ahead;
      this.#ahead = null;
      // Rows the device stopped, or rewound to a stop string (left out: their tokens discarded).
      const rows = batch.filter((s) => !s.endedOnDevice && !s.rewound);
      if (rows.length) {
        // A batch that lost rows is not continued again: the next round runs without them.
        const next = rows.length === batch.length ? this.#aheadSteps(rows, steps) : 0;
        await this.#decodeOnDevice(rows, steps, next, snaps);
        for (const seq of rows) await this.#checkpoint(seq);
        return [rows.length, steps];
      }
      for (const snap of snaps.values()) this.backend.releaseState(snap);
    }
    // Sequences with max_tokens 0 finish once their prompt is consumed.
    for (const s of [...this.#running]) {
      if (!s.finished && s.fed === s.feed.length - 1 && s.req.maxTokens === 0) {
        this.#end(s, "length");
      }
    }
    const batch = this.#running.filter((s) => this.#readyToDecode(s));
    if (!batch.length) return [0, 0];
    const b = this.backend;
    const steps = Math.min(
      this.#chooseSteps(batch),
      Math.max(...batch.map((s) => s.req.maxTokens - s.generated)),
    );
    if (b.decodeSampled && steps > 1 && batch.every((s) => s.req.logprobs === undefined)) {
      const t0 = performance.now();
      const [captured, done] = await this.#decodeOnDevice(
        batch,
        steps,
        this.#aheadSteps(batch, steps),
      );
      // The readback also waits for prefill work submitted this round, and states read back with
      // the tokens cost their copies: learn only from rounds without either, or the estimate (and
      // so K) would swing with arrivals and endings (64 states read back in one round once made
      // the next rounds' K collapse to 2).
      const ms = performance.now() - t0 - this.#opts.readbackMs;
      if ((learn && !captured) || !this.#stepMs.has(this.#bucket(batch.length))) {
        this.#learnStep(batch.length, Math.max(0.02, ms / done));
      }
      for (const seq of batch) await this.#checkpoint(seq);
      return [batch.length, done];
    }
    await this.#decodeOnHost(batch);
    for (const seq of batch) await this.#checkpoint(seq);
    return [batch.length, 1];
  }

  /** Whether a running sequence decodes this round (prompt consumed, tokens left to generate). */
  #readyToDecode(s: Seq): boolean {
    return !s.finished && s.fed === s.feed.length - 1 && s.req.maxTokens > s.generated;
  }

  /**
   * Steps to continue this round by on the device (0: none): only when the next round would
   * decode the same batch, so nothing waits behind the continuation: no request waiting for a
   * slot or a prefill, every ready sequence in the batch, none new, aborted or past its deadline;
   * a free slot for the snapshot of each row with stop strings (see `#decodeOnDevice`); no
   * logprobs; no kept
   * state whose budget ends in the continuation (it is read back with its round's tokens). A row
   * with a checkpoint due after this round gets a snapshot, which the checkpoint reads.
   */
  #aheadSteps(batch: Seq[], steps: number): number {
    if (!this.#opts.decodeAhead) return 0;
    if (this.#queue.length > 0 && this.#running.length < this.#opts.maxBatch) return 0;
    if (this.#running.some((s) => this.#prefilling(s))) return 0;
    const ready = this.#running.filter((s) => this.#readyToDecode(s));
    if (ready.length !== batch.length || ready.some((s, i) => s !== batch[i])) return 0;
    const now = performance.now();
    if (
      batch.some((s) =>
        s.generated === 0 || s.req.logprobs !== undefined || s.req.signal?.aborted ||
        now > s.deadline
      )
    ) {
      return 0;
    }
    const ms = this.#stepMs.get(this.#bucket(batch.length));
    if (ms === undefined) return 0;
    const max = Math.min(this.#opts.stepsPerSync, this.backend.maxSampledSteps ?? 1);
    const k = Math.max(2, Math.min(max, Math.round((this.#opts.roundMs.continued ?? 100) / ms)));
    const left = batch.map((s) => s.req.maxTokens - s.generated - steps);
    if (left.every((n) => n <= 0)) return 0;
    if (batch.some((s, i) => s.req.keepState !== false && left[i] > 0 && left[i] <= k)) return 0;
    return k;
  }

  /** Batch-size bucket of the step-time estimate (powers of two). */
  #bucket(batch: number): number {
    return 2 ** Math.ceil(Math.log2(batch));
  }

  #learnStep(batch: number, ms: number): void {
    const k = this.#bucket(batch);
    const old = this.#stepMs.get(k);
    this.#stepMs.set(k, old === undefined ? ms : 0.7 * old + 0.3 * ms);
  }

  /**
   * Steps of this round: about `roundMs.busy` of decoding while any request waits for a slot, a
   * prefill or its first token (so it gets one soon), `roundMs.steady` otherwise (few readbacks).
   */
  #chooseSteps(batch: Seq[]): number {
    const max = Math.min(this.#opts.stepsPerSync, this.backend.maxSampledSteps ?? 1);
    if (max <= 1) return 1;
    const admittable = this.#queue.length > 0 && this.#running.length < this.#opts.maxBatch;
    const busy = admittable || this.#running.some((s) => this.#prefilling(s)) ||
      batch.some((s) => s.generated === 0);
    // Mostly new sequences: nothing to amortize a long round over, their first tokens come first.
    if (batch.filter((s) => s.generated === 0).length * 2 >= batch.length) return 2;
    const target = busy ? this.#opts.roundMs.busy : this.#opts.roundMs.steady;
    const ms = this.#stepMs.get(this.#bucket(batch.length));
    if (ms === undefined) return busy ? Math.min(max, 8) : max;
    const k = Math.round(Math.max(1, target - this.#opts.readbackMs) / ms);
    return Math.max(2, Math.min(max, k));
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
      if (logitsBroken(row)) {
        this.#end(seq, "error", nonFinite(`logits at position ${seq.slot!.position}`));
        continue;
      }
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
      if (stop) this.#end(seq, stop === "length" ? "length" : "stop");
    }
  }

  /**
   * K decode steps with sampling on the device. End-of-sequence and max_tokens stop a row on the
   * device, so its state ends exactly at its last kept token; a row whose budget ends in this round
   * has that state copied back in the same submission. A stop string is only seen here, in text:
   * such a row's state is snapshotted first and, when it stops early, restored and replayed
   * through the same kernels up to the kept token (bit-identical to a run that never overshot).
   * Returns whether any state came back with the tokens, and the steps run (fewer than `steps`
   * when a backend that can end a round early did: `Backend.interruptRound`, a row's end).
   * `ahead` > 0: the device continues this batch by that many steps (see `#aheadSteps`), having
   * copied the states of rows with stop strings or a checkpoint due into snapshots first; a row
   * that stops at a string here is then rewound at once (the continuation ran on it), and left
   * out of it.
   * `taken`: this round was continued on the device, and these are its snapshots.
   */
  async #decodeOnDevice(
    batch: Seq[],
    steps: number,
    ahead = 0,
    taken?: Map<Seq, BackendState>,
  ): Promise<[boolean, number]> {
    const b = this.backend;
    const snaps = taken ?? new Map<Seq, BackendState>();
    for (const seq of taken ? [] : batch) {
      if (!seq.stop) continue;
      try {
        const snap = this.#allocSlot();
        await b.copyState(snap, seq.slot!);
        snaps.set(seq, snap);
      } catch (e) {
        if (!(e instanceof TnlError && e.code === "overloaded")) throw e;
        // No spare slot for a snapshot: decode this batch one step at a time instead.
        for (const s of snaps.values()) b.releaseState(s);
        await this.#decodeOnHost(batch);
        return [false, 1];
      }
    }
    const aheadSnaps = new Map<Seq, BackendState>();
    try {
      for (const seq of ahead > 0 ? batch : []) {
        if (seq.stop || this.#checkpointDue(seq, steps)) aheadSnaps.set(seq, this.#allocSlot());
      }
    } catch (e) {
      if (!(e instanceof TnlError && e.code === "overloaded")) throw e;
      // No spare slot for the continuation's snapshots: this round is not continued.
      for (const s of aheadSnaps.values()) b.releaseState(s);
      aheadSnaps.clear();
      ahead = 0;
    }
    try {
      const rngBefore = batch.map((s) => s.rng.counter);
      const pending = batch.map((s) => s.feed[s.fed]);
      const rows: SampledRow[] = batch.map((seq) => ({
        state: seq.slot!,
        token: seq.feed[seq.fed],
        budget: seq.req.maxTokens - seq.generated,
        sampling: seq.params,
        rng: seq.rng,
        stopAtEos: seq.req.stopAtEos !== false,
        penalties: hasPenalties(seq.params),
        capture: seq.req.keepState !== false && seq.req.maxTokens - seq.generated <= steps,
        aheadSnapshot: aheadSnaps.get(seq),
      }));
      let out: Int32Array[];
      this.#decoding = true;
      try {
        out = await b.decodeSampled!(rows, steps, ahead);
        if (ahead > 0) {
          this.#ahead = { batch, steps: ahead, snaps: new Map(aheadSnaps) };
          aheadSnaps.clear();
          this.#stats.continuedRounds++;
        }
      } finally {
        this.#decoding = false;
      }
      // Steps run: a device submission runs all `steps` (rows that stop just idle); a round that
      // can end early (host sampling) ran as many as its longest row.
      const done = b.interruptRound ? Math.max(1, ...out.map((t) => t.length)) : steps;
      this.#stats.lastSteps = done;
      this.#count(out.reduce((a, t) => a + t.length, 0), batch.length, done);
      for (let i = 0; i < batch.length; i++) {
        const seq = batch[i];
        const toks = out[i];
        seq.out = { tokens: [], text: "" };
        for (let j = 0; j < toks.length; j++) {
          if (toks[j] === BROKEN_LOGITS_TOKEN) {
            seq.endedOnDevice = true;
            this.#end(seq, "error", nonFinite(`logits at position ${seq.slot!.position - 1}`));
            break;
          }
          const stop = this.#accept(seq, toks[j]);
          if (!stop) continue;
          if (stop !== "text") seq.endedOnDevice = true;
          const continued = stop === "text" && this.#ahead?.batch.includes(seq);
          if (stop === "text" && j < toks.length - 1) {
            // Rewind: the state consumed pending, t_1..t_{n-1}; keep pending, t_1..t_{j}.
            await b.copyState(seq.slot!, snaps.get(seq)!);
            await b.replay!(seq.slot!, Int32Array.of(pending[i], ...toks.subarray(0, j)));
            seq.rng.counter = rngBefore[i] + (seq.params.temperature > 0 ? j + 1 : 0);
            seq.rewound = continued === true;
          } else if (continued) {
            // Stopped at this round's last token, but the device went on: back to the state
            // before the continuation.
            await b.copyState(seq.slot!, this.#ahead!.snaps.get(seq)!);
            seq.rewound = true;
          } else if (rows[i].captured) {
            seq.captured = rows[i].captured!;
          }
          this.#end(seq, stop === "length" ? "length" : "stop");
          break;
        }
        const gathered = seq.out;
        seq.out = null;
        if (gathered.tokens.length) seq.push({ type: "token", ...gathered });
      }
      return [rows.some((r) => r.captured), done];
    } finally {
      for (const s of [...snaps.values(), ...aheadSnaps.values()]) b.releaseState(s);
    }
  }

  /** Whether `seq` takes a checkpoint after a round of up to `steps` tokens (see `#checkpoint`). */
  #checkpointDue(seq: Seq, steps: number): boolean {
    const every = seq.req.checkpointEvery ?? 0;
    return !!seq.req.onCheckpoint && every > 0 && seq.generated + steps - seq.checkpointed >= every;
  }

  /** Forget the continued round (the backend failed): give its snapshots back. */
  #dropAhead(): void {
    for (const s of this.#ahead?.snaps.values() ?? []) {
      try {
        this.backend.releaseState(s);
      } catch {
        // The backend is gone (device lost); its slots with it.
      }
    }
    this.#ahead = null;
  }

  #count(tokens: number, batch: number, steps = 1): void {
    this.#stats.decodeSteps += steps;
    this.#stats.lastBatch = batch;
    this.#stats.completionTokens += tokens;
    this.#recent.push({ t: performance.now(), n: tokens });
  }

  /**
   * Take a sampled token: history, text, stop checks, the event. Returns how the sequence stopped
   * ("eos", "text" for a stop string, "length") or null when it goes on; the caller ends it.
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
    if (seq.out) {
      // Device rounds: one event per sequence per round (fewer writes on the serving thread).
      seq.out.tokens.push(token);
      seq.out.text += text;
    } else {
      seq.push({ type: "token", tokens: [token], text, logprobs: lp ? [lp] : undefined });
    }
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
    // With the round continued on the device, its snapshot holds the state after this round.
    const state = await this.backend.readState(this.#ahead?.snaps.get(seq) ?? seq.slot);
    if (!finiteState(state)) return; // never checkpoint a broken state; the end reports it
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

  /** Leave the batch now (no more steps); the end is settled at the end of the round. */
  #end(seq: Seq, reason: FinishReason, error?: unknown): void {
    if (seq.finished) return;
    seq.finished = true;
    seq.end = { reason, error };
    const idx = this.#running.indexOf(seq);
    if (idx >= 0) this.#running.splice(idx, 1);
    this.#ending.push(seq);
  }

  /**
   * Settle the sequences that ended: read back the final states that are kept (all in one call,
   * unless the decode submission captured them), check them, free the slots, send "done".
   */
  async #settle(): Promise<void> {
    if (!this.#ending.length) return;
    // A sequence ended by the host (closing) whose round the device continued: take that round
    // first, so its state and its session hold the same tokens.
    const cut = this.#ahead?.batch.filter((s) => s.finished && !s.endedOnDevice && !s.rewound) ??
      [];
    if (cut.length) {
      try {
        await this.#decodeRound(false);
      } catch (e) {
        // Its states are not what their sessions say: not kept.
        this.#dropAhead();
        for (const s of cut) s.end = { reason: "error", error: e };
      }
    }
    const ending = this.#ending.splice(0);
    const toRead = ending.filter((s) =>
      s.slot && s.end!.reason !== "error" && s.req.keepState !== false && !s.captured
    );
    const read = new Map<Seq, ModelState>();
    let readError: unknown = null;
    if (toRead.length) {
      try {
        const slots = toRead.map((s) => s.slot!);
        const states = this.backend.readStates
          ? await this.backend.readStates(slots)
          : await Promise.all(slots.map((st) => this.backend.readState(st)));
        toRead.forEach((s, i) => read.set(s, states[i]));
      } catch (e) {
        readError = e;
      }
    }
    for (const seq of ending) {
      const state = seq.captured ?? read.get(seq) ?? null;
      this.#complete(seq, state, readError);
    }
  }

  /**
   * Complete an ended sequence: save the state back into the session (everything consumed stays
   * consumed, the first unconsumed token becomes pending), free the slot, send "done". On error,
   * when never admitted, or when the state is not kept, the session is rolled back to what it was
   * before the request.
   */
  #complete(seq: Seq, state: ModelState | null, readError: unknown): void {
    const s = seq.session;
    let { reason, error } = seq.end!;
    let rollback = !seq.slot || reason === "error" || seq.req.keepState === false;
    if (!rollback) {
      if (!state) {
        reason = "error";
        error = readError ?? new TnlError("internal", "the final state was not read back");
        rollback = true;
      } else if (!finiteState(state)) {
        reason = "error";
        error = nonFinite(`state at position ${state.position}`);
        rollback = true;
      } else {
        s.state = state;
        s.pending = seq.feed[seq.fed];
        s.truncate(s.state.position + 1);
      }
    }
    if (seq.slot && !rollback && this.#opts.keepResident && !this.#closed) {
      // The slot holds exactly the state just kept: the session's next request starts from it.
      this.#resident.keep(s, seq.slot);
      seq.slot = null;
    } else if (seq.slot) {
      try {
        this.backend.releaseState(seq.slot);
      } catch {
        // The backend is gone (device lost); its slots with it.
      }
      seq.slot = null;
    }
    if (rollback) {
      s.truncate(seq.before.length);
      s.pending = seq.before.pending;
    }
    let tail = "";
    if (reason === "length" && seq.req.holdPartial && !rollback) {
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
      if (!rollback) s.text = { pendingBytes: new Uint8Array(0), heldStop: "" };
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
      for (const s of [...this.#queue]) this.#end(s, "cancelled");
      this.#queue.length = 0;
      for (const s of [...this.#running]) this.#end(s, "cancelled");
      if (!this.#loop) await this.#settle();
    }
    while (this.#loop) await this.#loop;
    this.#resident.prune(true);
  }
}
