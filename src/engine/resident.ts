/**
 * Resident states: after a request that keeps its session, the backend slot that holds the
 * session's final state stays allocated, so the session's next request starts from it instead of
 * uploading the host copy again (13 MB at 385M; at 64 streams of kept sessions the uploads, not the
 * model, set the pace). A slot is used again only for the same `Session` object whose state has
 * not been replaced since (`Session.stateVersion`), and only while the backend still holds it.
 * Slots are given back least recently kept first whenever the engine needs one.
 * @module
 */

import type { Backend, BackendState } from "./backend.ts";
import type { Session } from "./session.ts";

interface Entry {
  session: WeakRef<Session>;
  version: number;
  position: number;
}

/** The slots kept for idle sessions, oldest first. */
export class ResidentStates {
  readonly #backend: Backend;
  /** Kept slots in the order they were kept (a Map iterates in insertion order). */
  readonly #slots = new Map<BackendState, Entry>();
  readonly #bySession = new WeakMap<Session, BackendState>();

  /** Resident states of one backend. */
  constructor(backend: Backend) {
    this.#backend = backend;
  }

  /** Slots kept now. */
  get size(): number {
    return this.#slots.size;
  }

  /** Keep `slot`, which holds exactly `session.state`, for the session's next request. */
  keep(session: Session, slot: BackendState): void {
    this.take(session); // an older slot of the same session (should there be one) goes back
    this.#slots.set(slot, {
      session: new WeakRef(session),
      version: session.stateVersion,
      position: session.position,
    });
    this.#bySession.set(session, slot);
  }

  /**
   * The slot kept for `session` if it still holds the session's state (then no longer kept here:
   * the caller owns it), else null (a stale one is given back).
   */
  take(session: Session): BackendState | null {
    const slot = this.#bySession.get(session);
    if (!slot) return null;
    this.#bySession.delete(session);
    const e = this.#slots.get(slot);
    this.#slots.delete(slot);
    if (!e) return null;
    const fresh = e.version === session.stateVersion && e.position === session.position &&
      slot.position === session.position && this.#backend.holds?.(slot) !== false;
    if (fresh) return slot;
    this.#release(slot);
    return null;
  }

  /** Give back the least recently kept slot; false when none is kept. */
  evictOne(): boolean {
    const first = this.#slots.entries().next();
    if (first.done) return false;
    const [slot, e] = first.value;
    this.#slots.delete(slot);
    const s = e.session.deref();
    if (s && this.#bySession.get(s) === slot) this.#bySession.delete(s);
    this.#release(slot);
    return true;
  }

  /** Give back the slots of sessions that no longer exist, then every slot when `all`. */
  prune(all = false): void {
    for (const [slot, e] of [...this.#slots]) {
      if (all || !e.session.deref()) {
        this.#slots.delete(slot);
        this.#release(slot);
      }
    }
  }

  #release(slot: BackendState): void {
    try {
      this.#backend.releaseState(slot);
    } catch {
      // The backend is gone (device lost): its slots with it.
    }
  }
}
