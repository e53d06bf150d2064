// The in-process JobQueue (`reapi serve` without Redis): everything in memory, one priority queue
// per platform, workers registered in the same process. Nothing survives a restart.
//
// Locality: when a worker finishes a job, the job's locality keys (its input root and top-level
// subdirectories) remember that worker for `localityTtlMs` (bounded: LOCALITY_WORKERS_PER_KEY
// workers per key, `localityMaxKeys` keys). A new job sharing keys with a live worker that
// satisfies its platform goes to that worker's personal queue (most shared keys, then most
// recent), unless that worker already has `concurrency` jobs waiting there; a worker takes from
// its personal queue before the shared platform queues. When it stops, its waiting personal jobs
// go back to the shared queues.
import { randomUUID } from 'node:crypto';
import { Status } from '../../common/errors.ts';
import { silentLogger, type Logger } from '../../common/logger.ts';
import type {
  JobContext,
  JobHandler,
  JobQueue,
  JobSpec,
  OperationState,
  PlatformProperties,
  QueueStats,
  SubmitOptions,
  SubmitResult,
  WorkerRegistration,
} from '../../execution/job-queue.ts';
import {
  DEFAULT_LOCALITY_TTL_MS,
  LOCALITY_WORKERS_PER_KEY,
  localityKeysOf,
  platformKey,
  rankLocality,
  satisfies,
  unsatisfiableProperties,
} from '../../execution/platform.ts';
import { Heap, precedes, type HeapEntry } from './priority-heap.ts';
import { afterHandlerFailure, attemptsOf, cancelled, isMergeable, mergeKeyOf, type OperationError } from './rules.ts';

export interface InProcessJobQueueOptions {
  /** Deliveries of one job before a handler that keeps throwing fails the operation (default 3). */
  maxAttempts?: number;
  /** How long a finished operation stays answerable by getOperation (default 1 day). */
  doneRetentionMs?: number;
  /** Route jobs to a worker that recently ran jobs sharing their locality keys (default true). */
  locality?: boolean;
  /** How long a finished job's keys point at its worker (default 10 minutes). */
  localityTtlMs?: number;
  /** Locality keys remembered at most; the least recently used are forgotten first (default 100000). */
  localityMaxKeys?: number;
  logger?: Logger;
}

type Entry = HeapEntry<OpRecord>;

interface OpRecord {
  state: OperationState;
  mergeKey?: string;
  watchers: Set<(s: OperationState) => void>;
  /** Set while queued. */
  entry?: Entry;
  /** Set while a worker holds it. */
  controller?: AbortController;
  /** Deliveries so far. */
  deliveries: number;
  seq: number;
}

interface PlatformQueue {
  platform: PlatformProperties;
  heap: Heap<OpRecord>;
}

interface WorkerRec {
  reg: WorkerRegistration;
  handler: JobHandler;
  running: number;
  stopped: boolean;
  inflight: Set<Promise<void>>;
  /** Jobs routed to this worker for locality; taken before the shared queues. */
  personal: Heap<OpRecord>;
}

export class InProcessJobQueue implements JobQueue {
  private readonly maxAttempts: number;
  private readonly doneRetentionMs: number;
  private readonly locality: boolean;
  private readonly localityTtlMs: number;
  private readonly localityMaxKeys: number;
  /** Locality key -> worker name -> when it last finished a job with that key; LRU by key. */
  private readonly localityIndex = new Map<string, Map<string, number>>();
  private readonly log: Logger;
  private readonly ops = new Map<string, OpRecord>();
  private readonly merge = new Map<string, string>();
  private readonly queues = new Map<string, PlatformQueue>();
  private readonly workers = new Map<string, WorkerRec>();
  private seq = 0;
  private closed = false;
  private lastSweep = Date.now();
  private dispatching = false;
  private dispatchAgain = false;

  constructor(opts: InProcessJobQueueOptions = {}) {
    this.maxAttempts = attemptsOf(opts.maxAttempts);
    this.doneRetentionMs = opts.doneRetentionMs ?? 24 * 3600_000;
    this.locality = opts.locality ?? true;
    this.localityTtlMs = opts.localityTtlMs ?? DEFAULT_LOCALITY_TTL_MS;
    this.localityMaxKeys = Math.max(1, opts.localityMaxKeys ?? 100_000);
    this.log = opts.logger ?? silentLogger;
  }

  async submit(job: JobSpec, opts: SubmitOptions = {}): Promise<SubmitResult> {
    if (this.closed) throw new Error('job queue is closed');
    this.sweep();
    const mergeKey = isMergeable(job) ? mergeKeyOf(job) : undefined;
    if (mergeKey !== undefined) {
      const existing = this.merge.get(mergeKey);
      const rec = existing === undefined ? undefined : this.ops.get(existing);
      if (existing !== undefined && rec && !rec.state.done) return { operationName: existing, merged: true };
    }
    const name = `operations/${randomUUID()}`;
    const now = Date.now();
    const rec: OpRecord = {
      state: { name, job, stage: 'QUEUED', done: false, queuedAt: now, updatedAt: now },
      mergeKey,
      watchers: new Set(),
      deliveries: 0,
      seq: this.seq++,
    };
    this.ops.set(name, rec);
    if (mergeKey !== undefined) this.merge.set(mergeKey, name);
    const chosen = opts.worker === undefined ? undefined : this.workers.get(opts.worker);
    this.enqueue(rec, chosen && !chosen.stopped ? chosen : this.route(job));
    this.dispatch();
    return { operationName: name, merged: false };
  }

  async getOperation(name: string): Promise<OperationState | undefined> {
    const rec = this.ops.get(name);
    return rec ? { ...rec.state } : undefined;
  }

  watch(name: string, onUpdate: (state: OperationState) => void): () => void {
    const rec = this.ops.get(name);
    if (!rec) return () => {};
    this.deliver(onUpdate, rec.state);
    if (rec.state.done) return () => {};
    rec.watchers.add(onUpdate);
    return () => {
      rec.watchers.delete(onUpdate);
    };
  }

  cancel(name: string): Promise<boolean> {
    return this.fail(name, cancelled(name));
  }

  async fail(name: string, error: OperationError): Promise<boolean> {
    const rec = this.ops.get(name);
    if (!rec || rec.state.done) return false;
    if (rec.entry) rec.entry.removed = true;
    rec.entry = undefined;
    const controller = rec.controller;
    this.finish(rec, { error });
    controller?.abort(new Error(error.message));
    return true;
  }

  async stats(): Promise<QueueStats> {
    const active = new Map<string, number>();
    for (const op of this.ops.values()) {
      if (!op.state.done && op.state.stage === 'EXECUTING') {
        const key = platformKey(op.state.job.platform);
        active.set(key, (active.get(key) ?? 0) + 1);
      }
    }
    const platforms = new Map<string, QueueStats['platforms'][number]>();
    for (const [key, q] of this.queues) platforms.set(key, { platform: q.platform, waiting: q.heap.size, active: active.get(key) ?? 0 });
    for (const w of this.workers.values()) {
      for (const e of w.personal.live()) {
        const platform = e.value.state.job.platform;
        const key = platformKey(platform);
        const p = platforms.get(key);
        if (p) p.waiting++;
        else platforms.set(key, { platform, waiting: 1, active: active.get(key) ?? 0 });
      }
    }
    return {
      platforms: [...platforms.values()],
      workers: [...this.workers.values()].filter((w) => !w.stopped).map((w) => ({ name: w.reg.name, platform: w.reg.platform, concurrency: w.reg.concurrency })),
    };
  }

  async freeWorkers(platform: PlatformProperties, exclude: string): Promise<string[]> {
    return [...this.workers.values()]
      .filter((w) => !w.stopped && w.reg.name !== exclude && satisfies(w.reg.platform, platform))
      .map((w) => ({ name: w.reg.name, free: w.reg.concurrency - w.running - w.personal.live().length }))
      .filter((w) => w.free > 0)
      .sort((a, b) => b.free - a.free)
      .map((w) => w.name);
  }

  async unsatisfiable(platform: PlatformProperties): Promise<string[]> {
    return unsatisfiableProperties(
      [...this.workers.values()].map((w) => w.reg.platform),
      platform,
    );
  }

  async work(worker: WorkerRegistration, handler: JobHandler): Promise<() => Promise<void>> {
    if (this.closed) throw new Error('job queue is closed');
    if (this.workers.has(worker.name)) throw new Error(`worker ${worker.name} is already registered`);
    const rec: WorkerRec = {
      reg: { ...worker, concurrency: Math.max(1, Math.floor(worker.concurrency)) },
      handler,
      running: 0,
      stopped: false,
      inflight: new Set(),
      personal: new Heap(),
    };
    this.workers.set(worker.name, rec);
    this.dispatch();
    return async () => {
      if (!rec.stopped) {
        rec.stopped = true;
        if (this.workers.get(worker.name) === rec) this.workers.delete(worker.name);
        // its waiting personal jobs go back to the shared queues, for the other workers
        for (const e of rec.personal.live()) {
          e.removed = true;
          if (e.value.entry === e) this.enqueue(e.value);
        }
        rec.personal = new Heap();
        if (!this.closed) this.dispatch();
      }
      await Promise.allSettled([...rec.inflight]);
    };
  }

  /**
   * Stop every worker and fail the operations still in flight with UNAVAILABLE (their state lives
   * only here); running handlers see their signal aborted and are not waited for.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.workers.values()) w.stopped = true;
    this.workers.clear();
    for (const rec of this.ops.values()) {
      if (rec.state.done) continue;
      if (rec.entry) rec.entry.removed = true;
      rec.entry = undefined;
      const controller = rec.controller;
      this.finish(rec, { error: { code: Status.UNAVAILABLE, message: 'the scheduler shut down' } });
      controller?.abort(new Error('the scheduler shut down'));
    }
    this.queues.clear();
  }

  // --- internals ---

  /** Queue a job: on `owner`'s personal queue, or (no owner) on its platform's shared queue. */
  private enqueue(rec: OpRecord, owner?: WorkerRec): void {
    const entry: Entry = { value: rec, priority: rec.state.job.priority, seq: rec.seq, removed: false };
    rec.entry = entry;
    if (owner) {
      owner.personal.push(entry);
      return;
    }
    const key = platformKey(rec.state.job.platform);
    let q = this.queues.get(key);
    if (!q) {
      q = { platform: rec.state.job.platform, heap: new Heap() };
      this.queues.set(key, q);
    }
    q.heap.push(entry);
  }

  /**
   * The worker a new job should go to for locality: the live worker satisfying its platform that
   * shares the most of its keys (then the most recent), unless that one already has
   * `concurrency` jobs waiting for it. Undefined: the shared queue.
   */
  private route(job: JobSpec): WorkerRec | undefined {
    if (!this.locality) return undefined;
    const keys = localityKeysOf(job.localityKeys);
    if (keys.length === 0) return undefined;
    const hits: Array<Iterable<[string, number]>> = [];
    for (const k of keys) {
      const m = this.localityIndex.get(k);
      if (m) hits.push(m.entries());
    }
    for (const c of rankLocality(hits, Date.now() - this.localityTtlMs)) {
      const w = this.workers.get(c.worker);
      if (!w || w.stopped || !satisfies(w.reg.platform, job.platform)) continue;
      return w.personal.live().length >= w.reg.concurrency ? undefined : w;
    }
    return undefined;
  }

  /** Remember that `worker` just ran a job with these locality keys. */
  private recordLocality(job: JobSpec, worker: string): void {
    if (!this.locality) return;
    const now = Date.now();
    for (const k of localityKeysOf(job.localityKeys)) {
      let m = this.localityIndex.get(k);
      if (m) this.localityIndex.delete(k); // re-inserted below: most recently used last
      else m = new Map();
      m.delete(worker);
      m.set(worker, now);
      while (m.size > LOCALITY_WORKERS_PER_KEY) m.delete(m.keys().next().value!);
      this.localityIndex.set(k, m);
    }
    while (this.localityIndex.size > this.localityMaxKeys) this.localityIndex.delete(this.localityIndex.keys().next().value!);
  }

  /** Hand queued jobs to workers with free slots until nothing more can start. */
  private dispatch(): void {
    if (this.dispatching) {
      this.dispatchAgain = true;
      return;
    }
    this.dispatching = true;
    try {
      do {
        this.dispatchAgain = false;
        for (const w of this.workers.values()) {
          while (!w.stopped && w.running < w.reg.concurrency) {
            const entry = this.take(w);
            if (!entry) break;
            this.start(w, entry.value);
          }
        }
      } while (this.dispatchAgain);
    } finally {
      this.dispatching = false;
    }
  }

  /** Pop the worker's best personal job, else the best job across the platforms it satisfies. */
  private take(w: WorkerRec): Entry | undefined {
    const mine = w.personal.peek();
    if (mine) {
      w.personal.pop();
      mine.value.entry = undefined;
      return mine;
    }
    let best: PlatformQueue | undefined;
    let bestEntry: Entry | undefined;
    for (const [key, q] of this.queues) {
      const head = q.heap.peek();
      if (!head) {
        this.queues.delete(key);
        continue;
      }
      if (!satisfies(w.reg.platform, q.platform)) continue;
      if (!bestEntry || precedes(head, bestEntry)) {
        best = q;
        bestEntry = head;
      }
    }
    if (!best || !bestEntry) return undefined;
    best.heap.pop();
    bestEntry.value.entry = undefined;
    return bestEntry;
  }

  private start(w: WorkerRec, rec: OpRecord): void {
    w.running++;
    const p = this.run(w, rec).finally(() => {
      w.running--;
      w.inflight.delete(p);
      if (!this.closed) this.dispatch();
    });
    w.inflight.add(p);
  }

  private async run(w: WorkerRec, rec: OpRecord): Promise<void> {
    const controller = new AbortController();
    rec.controller = controller;
    const attempt = rec.deliveries++;
    const name = rec.state.name;
    const ctx: JobContext = {
      operationName: name,
      job: rec.state.job,
      attempt,
      queuedAt: rec.state.queuedAt,
      signal: controller.signal,
      markExecuting: async (worker: string) => {
        if (rec.state.done || rec.controller !== controller) return;
        this.update(rec, { stage: 'EXECUTING', worker });
      },
    };
    await Promise.resolve(); // never run a handler inside submit()/work()
    try {
      const response = await w.handler(ctx);
      this.recordLocality(rec.state.job, w.reg.name);
      if (rec.controller === controller && !rec.state.done) this.finish(rec, { response });
    } catch (err) {
      if (rec.state.done || controller.signal.aborted || rec.controller !== controller) return;
      this.log.warn({ operation: name, worker: w.reg.name, attempt, err }, 'job handler failed');
      const next = afterHandlerFailure(err, { job: rec.state.job, deliveries: rec.deliveries, maxAttempts: this.maxAttempts, worker: w.reg.name });
      if (!next.retry) {
        this.finish(rec, { error: next.error });
      } else {
        rec.controller = undefined;
        this.update(rec, { stage: 'QUEUED', worker: undefined });
        this.enqueue(rec);
      }
    } finally {
      if (rec.controller === controller) rec.controller = undefined;
    }
  }

  private update(rec: OpRecord, patch: Partial<OperationState>): void {
    rec.state = { ...rec.state, ...patch, updatedAt: Date.now() };
    if (patch.worker === undefined && 'worker' in patch) delete rec.state.worker;
    this.notify(rec);
  }

  private finish(rec: OpRecord, result: Pick<OperationState, 'response' | 'error'>): void {
    if (rec.state.done) return;
    this.update(rec, { ...result, stage: 'COMPLETED', done: true });
    if (rec.mergeKey !== undefined && this.merge.get(rec.mergeKey) === rec.state.name) this.merge.delete(rec.mergeKey);
    rec.watchers.clear();
  }

  private notify(rec: OpRecord): void {
    for (const cb of [...rec.watchers]) this.deliver(cb, rec.state);
  }

  private deliver(cb: (s: OperationState) => void, state: OperationState): void {
    try {
      cb({ ...state });
    } catch (err) {
      this.log.warn({ operation: state.name, err }, 'operation watcher threw');
    }
  }

  /** Forget operations finished longer than doneRetentionMs ago (at most once a minute). */
  private sweep(): void {
    const now = Date.now();
    if (now - this.lastSweep < 60_000) return;
    this.lastSweep = now;
    for (const [name, rec] of this.ops) {
      if (rec.state.done && now - rec.state.updatedAt > this.doneRetentionMs) this.ops.delete(name);
    }
  }
}
