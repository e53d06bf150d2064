// A pool of expansion threads. A fresh worker_thread costs ~36 ms, so threads are kept and each
// runs one expansion at a time (a fresh wasm instance every time). The wall-clock limit is
// enforced by terminating the thread: V8 has no fuel, and a guest in an endless loop never
// yields. A terminated or crashed thread is replaced; the pool keeps serving.
import { Worker } from 'node:worker_threads';
import type { ExpansionJob, ExpansionResult, JobMessage, ResultMessage } from './protocol.ts';

// From sources the thread registers tsx first (expand-thread.mjs); compiled, it is plain JavaScript.
const THREAD_SCRIPT = new URL(import.meta.url.endsWith('.ts') ? './expand-thread.mjs' : './expand-thread.js', import.meta.url);

export interface WasmPoolOptions {
  /** Threads (parallel expansions). */
  size: number;
  /** V8 stack of each thread, fixed so that a guest's recursion depth limit is the same everywhere. */
  stackSizeMb?: number;
  /** JS heap of each thread (watt token tables live there). */
  maxHeapMb?: number;
}

interface Pending {
  id: number;
  job: ExpansionJob;
  resolve: (r: ExpansionResult) => void;
  timer?: NodeJS.Timeout;
  onAbort?: () => void;
  signal?: AbortSignal;
}

interface Slot {
  worker: Worker;
  /** Module keys this thread was sent (it may have evicted some: it then asks again). */
  known: Set<string>;
  ready: Promise<void>;
  busy?: Pending;
}

interface Queued {
  job: ExpansionJob;
  timeoutMs: number;
  signal?: AbortSignal;
  resolve: (r: ExpansionResult) => void;
}

export class WasmPool {
  private readonly slots: Slot[] = [];
  private readonly queue: Queued[] = [];
  private nextId = 1;
  private closed = false;
  /** Threads started so far (replacements included), for tests and metrics. */
  threadsStarted = 0;

  constructor(private readonly opts: WasmPoolOptions) {
    if (opts.size < 1) throw new Error('WasmPool: size must be at least 1');
  }

  private spawn(): Slot {
    const worker = new Worker(THREAD_SCRIPT, {
      execArgv: [],
      resourceLimits: { stackSizeMb: this.opts.stackSizeMb ?? 8, maxOldGenerationSizeMb: this.opts.maxHeapMb ?? 512 },
      stdout: true,
      stderr: true,
    });
    this.threadsStarted++;
    const slot: Slot = {
      worker,
      known: new Set(),
      ready: new Promise<void>((resolve, reject) => {
        const onMessage = (m: unknown) => {
          if (m === 'ready') {
            worker.off('message', onMessage);
            resolve();
          }
        };
        worker.on('message', onMessage);
        worker.once('error', reject);
        worker.once('exit', (code) => reject(new Error(`expansion thread exited with ${code} while starting`)));
      }),
    };
    // Referenced while starting or busy, so that a caller awaiting it keeps the process alive.
    slot.ready.then(
      () => {
        if (!slot.busy) worker.unref();
      },
      () => {},
    );
    worker.on('message', (m: ResultMessage | 'ready') => {
      if (m === 'ready') return;
      const p = slot.busy;
      if (!p || p.id !== m.id) return;
      if ('needModule' in m) {
        slot.known.delete(p.job.moduleKey);
        this.send(slot, p);
        return;
      }
      this.finish(slot, p, m.result);
    });
    worker.on('error', (err) => this.lost(slot, `the expansion thread failed: ${err.message}`));
    worker.on('exit', (code) => this.lost(slot, `the expansion thread exited with code ${code}`));
    return slot;
  }

  /** The slot's thread is gone: fail its expansion (not the macro's fault) and replace it. */
  private lost(slot: Slot, message: string): void {
    const i = this.slots.indexOf(slot);
    if (i < 0) return;
    this.slots.splice(i, 1);
    const p = slot.busy;
    slot.busy = undefined;
    if (p) this.settle(p, { ok: false, kind: 'crashed', message });
    this.pump();
  }

  private settle(p: Pending, r: ExpansionResult): void {
    if (p.timer) clearTimeout(p.timer);
    if (p.onAbort) p.signal?.removeEventListener('abort', p.onAbort);
    p.resolve(r);
  }

  private finish(slot: Slot, p: Pending, r: ExpansionResult): void {
    slot.busy = undefined;
    slot.worker.unref();
    this.settle(p, r);
    this.pump();
  }

  /** Kill the slot's thread (timeout, cancel) and answer its expansion with `r`. */
  private kill(slot: Slot, p: Pending, r: ExpansionResult): void {
    const i = this.slots.indexOf(slot);
    if (i >= 0) this.slots.splice(i, 1);
    slot.busy = undefined;
    void slot.worker.terminate();
    this.settle(p, r);
    this.pump();
  }

  /** Run one expansion; never rejects: failures come back as results. */
  expand(job: ExpansionJob, timeoutMs: number, signal?: AbortSignal): Promise<ExpansionResult> {
    if (this.closed) return Promise.resolve({ ok: false, kind: 'crashed', message: 'the wasm pool is closed' });
    if (signal?.aborted) return Promise.resolve({ ok: false, kind: 'cancelled', message: 'cancelled before it started' });
    return new Promise((resolve) => {
      this.queue.push({ job, timeoutMs, signal, resolve });
      this.pump();
    });
  }

  private pump(): void {
    while (this.queue.length > 0 && !this.closed) {
      let slot = this.slots.find((s) => !s.busy);
      if (!slot) {
        if (this.slots.length >= this.opts.size) return;
        slot = this.spawn();
        this.slots.push(slot);
      }
      const q = this.queue.shift()!;
      if (q.signal?.aborted) {
        q.resolve({ ok: false, kind: 'cancelled', message: 'cancelled before it started' });
        continue;
      }
      this.start(slot, q);
    }
  }

  private start(slot: Slot, q: Queued): void {
    const p: Pending = { id: this.nextId++, job: q.job, resolve: q.resolve, signal: q.signal };
    slot.busy = p;
    slot.worker.ref();
    const seconds = (q.timeoutMs / 1000).toFixed(q.timeoutMs % 1000 === 0 ? 0 : 1);
    // The clock starts once the thread is up: a thread's start-up is not the macro's time.
    void slot.ready.then(
      () => {
        if (slot.busy !== p) return;
        p.timer = setTimeout(
          () => this.kill(slot, p, { ok: false, kind: 'timeout', message: `the expansion did not finish within ${seconds} s; the thread running it was terminated` }),
          q.timeoutMs,
        );
        this.send(slot, p);
      },
      (err: Error) => {
        if (slot.busy === p) this.lost(slot, `could not start an expansion thread: ${err.message}`);
      },
    );
    if (q.signal) {
      p.onAbort = () => {
        if (slot.busy === p) this.kill(slot, p, { ok: false, kind: 'cancelled', message: 'the expansion was cancelled' });
      };
      q.signal.addEventListener('abort', p.onAbort, { once: true });
    }
  }

  private send(slot: Slot, p: Pending): void {
    const { module, ...rest } = p.job;
    const msg: JobMessage = slot.known.has(p.job.moduleKey) ? { id: p.id, job: rest } : { id: p.id, job: { ...rest, module } };
    slot.known.add(p.job.moduleKey);
    slot.worker.postMessage(msg);
  }

  /** Start the threads now instead of on first use. */
  async warm(): Promise<void> {
    while (this.slots.length < this.opts.size) this.slots.push(this.spawn());
    await Promise.all(this.slots.map((s) => s.ready));
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const q of this.queue.splice(0)) q.resolve({ ok: false, kind: 'cancelled', message: 'the wasm pool is closing' });
    const slots = this.slots.splice(0);
    for (const s of slots) if (s.busy) this.settle(s.busy, { ok: false, kind: 'cancelled', message: 'the wasm pool is closing' });
    await Promise.all(slots.map((s) => s.worker.terminate()));
  }
}
