// Watching operations: each change arrives on the events channel; a watcher re-reads the hash for
// the first state, the final one (response, error) and when an event may have been missed (every
// `watchPollMs`, and after a pub/sub reconnect).
import type { OperationState, Stage } from '../../../execution/job-queue.ts';

import type { BullmqContext } from './context.ts';
import type { OperationStore } from './operation-store.ts';

/** One change, as published on the events channel. */
export interface OpEvent {
  name: string;
  ver: number;
  stage: Stage;
  worker: string;
  updatedAt: number;
  done: boolean;
}

interface Watcher {
  name: string;
  onUpdate: (s: OperationState) => void;
  /** Last state delivered and its version (-1: none yet). */
  state?: OperationState;
  ver: number;
  stopped: boolean;
  chain: Promise<void>;
}

export class OperationWatchers {
  private readonly watchers = new Map<string, Set<Watcher>>();
  private pollTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly ctx: BullmqContext,
    private readonly ops: OperationStore,
    /** Called for each watched operation on every poll (e.g. to repair an orphaned one). */
    private readonly onPoll: (name: string) => void,
  ) {}

  /** Start watching; `subscribed` resolves once events reach us. Returns the stop function. */
  watch(name: string, onUpdate: (state: OperationState) => void, subscribed: Promise<void>): () => void {
    const w: Watcher = { name, onUpdate, ver: -1, stopped: false, chain: Promise.resolve() };
    let set = this.watchers.get(name);
    if (!set) this.watchers.set(name, (set = new Set()));
    set.add(w);
    this.ensurePoll();
    subscribed.then(
      () => this.refresh(w),
      (err) => this.ctx.log.warn({ err, operation: name }, 'could not subscribe to operation events'),
    );
    return () => this.remove(w);
  }

  /** An event from the events channel. */
  onEvent(message: string): void {
    let ev: OpEvent;
    try {
      ev = JSON.parse(message) as OpEvent;
    } catch {
      return;
    }
    const set = this.watchers.get(ev.name);
    if (set) for (const w of set) this.refresh(w, ev);
  }

  /** Re-read every watched operation (events may have been lost). */
  refreshAll(): void {
    for (const set of this.watchers.values()) for (const w of set) this.refresh(w);
  }

  close(): void {
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.pollTimer = undefined;
    this.watchers.clear();
  }

  private remove(w: Watcher): void {
    w.stopped = true;
    const set = this.watchers.get(w.name);
    set?.delete(w);
    if (set && set.size === 0) this.watchers.delete(w.name);
  }

  /**
   * Report a change to a watcher, in order and once per version: from the event itself while the
   * operation runs, re-reading the hash for the first state, for the final one (response, error)
   * and when there is no event (poll, resubscribe). Stops the watcher after done.
   */
  private refresh(w: Watcher, ev?: OpEvent): void {
    w.chain = w.chain.then(async () => {
      if (w.stopped || this.ctx.closed) return;
      if (ev && ev.ver <= w.ver) return;
      let next: { state: OperationState; ver: number } | undefined;
      if (ev && !ev.done && w.state) {
        const state: OperationState = { ...w.state, stage: ev.stage, updatedAt: ev.updatedAt };
        if (ev.worker) state.worker = ev.worker;
        else delete state.worker;
        next = { state, ver: ev.ver };
      } else {
        try {
          next = await this.ops.getVersioned(w.name);
        } catch (err) {
          if (!this.ctx.closed) this.ctx.log.warn({ err, operation: w.name }, 'could not read operation');
          return;
        }
      }
      if (!next || w.stopped || next.ver <= w.ver) return;
      w.state = next.state;
      w.ver = next.ver;
      if (next.state.done) this.remove(w);
      try {
        w.onUpdate({ ...next.state });
      } catch (err) {
        this.ctx.log.warn({ err, operation: w.name }, 'operation watcher threw');
      }
    });
  }

  private ensurePoll(): void {
    if (this.pollTimer) return;
    this.pollTimer = setInterval(() => {
      if (this.watchers.size === 0) {
        clearInterval(this.pollTimer);
        this.pollTimer = undefined;
        return;
      }
      for (const [name, set] of this.watchers) {
        for (const w of set) this.refresh(w);
        this.onPoll(name);
      }
    }, this.ctx.settings.watchPollMs);
    this.pollTimer.unref();
  }
}
