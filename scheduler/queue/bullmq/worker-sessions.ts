// Workers taking jobs: one session per `work()` registration. A session consumes, for each
// platform it satisfies, the shared platform queue and its own personal queue (BullMQ Workers
// without a processor: a job is taken only while a slot is free, personal queues first, then the
// shared ones in turn, so a busy worker never holds jobs another one could start). Idle sessions
// wake on a job-added message (and look every `drainDelaySec`). Each job's lock is renewed while
// it runs; BullMQ's stalled-job checker (run by every session on each queue it consumes)
// re-delivers the job of a worker that died, and we count deliveries in the operation hash.
import { Worker, type Job } from 'bullmq';
import type { JobContext, JobHandler, PlatformProperties, WorkerRegistration } from '../../../execution/job-queue.ts';
import { satisfies } from '../../../execution/platform.ts';
import { afterHandlerFailure, workersDied } from '../rules.ts';
import type { BullmqContext } from './context.ts';
import { personalQueueName } from './keys.ts';
import type { OperationStore } from './operation-store.ts';
import type { PersonalQueues } from './personal-queues.ts';
import { encodeRegistration } from './worker-registry.ts';
import { messageOf } from '../../../common/errors.ts';

/** A queue a session takes jobs from. */
interface Consumer {
  queue: string;
  /** The platform's shared queue (the queue itself when not personal). */
  shared: string;
  personal: boolean;
  /** A BullMQ Worker without a processor: we fetch, renew locks and finish jobs ourselves. */
  worker: Worker;
}

interface Session {
  reg: WorkerRegistration;
  handler: JobHandler;
  /** By queue name. */
  consumers: Map<string, Consumer>;
  running: Map<string, AbortController>;
  /** Jobs taken and not finished. */
  active: number;
  inflight: Set<Promise<void>>;
  stopping: boolean;
  forced: boolean;
  timer?: NodeJS.Timeout;
  scanning?: Promise<void>;
  rescanAgain: boolean;
  /** The fetch loop. */
  loop?: Promise<void>;
  /** Something may have become available (a job added, a slot freed): look before sleeping. */
  dirty: boolean;
  /** Ends the fetch loop's current sleep. */
  wakeUp?: () => void;
  /** Rotates which queue is asked first. */
  turn: number;
  fetchFailing: boolean;
}

/**
 * One delivery's end. 'done': finished with it in BullMQ (completed, cancelled, or given up);
 * 'abandon': this instance is closing mid-job, leave it locked so it is re-delivered elsewhere
 * once the lock expires, as if this worker had died; `retry`: the handler threw and attempts are
 * left.
 */
type Outcome = 'done' | 'abandon' | { retry: Error };

export class WorkerSessions {
  private readonly sessions = new Set<Session>();

  constructor(
    private readonly ctx: BullmqContext,
    private readonly ops: OperationStore,
    private readonly personal: PersonalQueues,
    /** Resolves once this instance hears the queue's channels. */
    private readonly subscribed: () => Promise<void>,
  ) {}

  /** Register and start taking jobs; resolves once registered. */
  async start(worker: WorkerRegistration, handler: JobHandler): Promise<() => Promise<void>> {
    const reg: WorkerRegistration = { ...worker, concurrency: Math.max(1, Math.floor(worker.concurrency)) };
    const s: Session = {
      reg,
      handler,
      consumers: new Map(),
      running: new Map(),
      active: 0,
      inflight: new Set(),
      stopping: false,
      forced: false,
      rescanAgain: false,
      dirty: true,
      turn: 0,
      fetchFailing: false,
    };
    this.sessions.add(s);
    try {
      await this.subscribed();
      await this.heartbeat(s);
      await this.rescan(s);
    } catch (err) {
      await this.stop(s, true);
      throw err;
    }
    s.loop = this.fetchLoop(s);
    s.timer = setInterval(() => {
      this.heartbeat(s).catch((err) => this.ctx.log.warn({ err, worker: reg.name }, 'worker heartbeat failed'));
      this.rescan(s).catch((err) => this.ctx.log.warn({ err, worker: reg.name }, 'platform rescan failed'));
    }, this.ctx.settings.heartbeatMs);
    s.timer.unref();
    this.personal.startSweeping();
    return () => this.stop(s, false);
  }

  /** A cancel message: abort the handler running that operation here. */
  onCancel(operationName: string): void {
    for (const s of this.sessions) s.running.get(operationName)?.abort(new Error(`operation ${operationName} was cancelled`));
  }

  /** A new platform queue exists: sessions that satisfy it start consuming it. */
  onPlatformAdded(): void {
    for (const s of this.sessions) this.rescan(s).catch((err) => this.ctx.log.warn({ err }, 'platform rescan failed'));
  }

  /** A queue got a job: wake the sessions consuming it. */
  onJobAdded(queue: string): void {
    for (const s of this.sessions) if (s.consumers.has(queue)) this.poke(s);
  }

  /** After a pub/sub outage: look again at everything. */
  onRestored(): void {
    for (const s of this.sessions) {
      this.rescan(s).catch(() => {});
      this.poke(s);
    }
  }

  /** Stop every session at once (running handlers see their signal aborted; their jobs are re-delivered). */
  async closeAll(): Promise<void> {
    await Promise.allSettled([...this.sessions].map((s) => this.stop(s, true)));
  }

  private async heartbeat(s: Session): Promise<void> {
    if (s.stopping) return;
    const { ctx } = this;
    const m = ctx.cmd
      .multi()
      .zadd(ctx.keys.workers, Date.now(), s.reg.name)
      .set(ctx.keys.worker(s.reg.name), this.registration(s), 'PX', ctx.settings.workerTtlMs);
    // the sweep's list of personal queues (a sweep may have dropped them while we were away)
    for (const c of s.consumers.values()) if (c.personal) m.hset(ctx.keys.personal, c.queue, s.reg.name);
    await m.exec();
  }

  /** A worker's registration record: what it offers, and how busy it is (for freeWorkers). */
  private registration(s: Session, draining = false): string {
    return encodeRegistration({ platform: s.reg.platform, concurrency: s.reg.concurrency, active: s.active, draining });
  }

  /** Publish a worker's load when a job starts or ends, between heartbeats (best effort). */
  private publishLoad(s: Session): void {
    if (s.stopping) return;
    this.ctx.cmd
      .set(this.ctx.keys.worker(s.reg.name), this.registration(s), 'PX', this.ctx.settings.workerTtlMs, 'XX')
      .catch((err: unknown) => this.ctx.log.debug({ err, worker: s.reg.name }, 'could not publish worker load'));
  }

  /** Consume every known platform queue this worker satisfies (and its personal queue there). */
  private rescan(s: Session): Promise<void> {
    if (s.scanning) {
      s.rescanAgain = true;
      return s.scanning;
    }
    s.scanning = (async () => {
      do {
        s.rescanAgain = false;
        if (s.stopping) return;
        const all = await this.ctx.cmd.hgetall(this.ctx.keys.platforms);
        for (const [queue, json] of Object.entries(all)) {
          if (s.stopping || s.consumers.has(queue)) continue;
          let platform: PlatformProperties;
          try {
            platform = JSON.parse(json) as PlatformProperties;
          } catch {
            continue;
          }
          if (!satisfies(s.reg.platform, platform)) continue;
          const personal = personalQueueName(queue, s.reg.name);
          await this.ctx.cmd.hset(this.ctx.keys.personal, personal, s.reg.name);
          if (s.stopping) return;
          this.startConsumer(s, personal, queue, true);
          this.startConsumer(s, queue, queue, false);
          this.poke(s);
        }
      } while (s.rescanAgain);
    })().finally(() => {
      s.scanning = undefined;
    });
    return s.scanning;
  }

  private startConsumer(s: Session, queue: string, shared: string, personal: boolean): void {
    const { ctx } = this;
    const w = new Worker(queue, null, {
      connection: ctx.bullClient(),
      prefix: ctx.keys.bullPrefix,
      autorun: false,
      lockDuration: ctx.settings.lockDurationMs,
      stalledInterval: ctx.settings.stalledIntervalMs,
      // our own delivery count decides; BullMQ must never give up first
      maxStalledCount: ctx.settings.maxAttempts + 1,
      drainDelay: ctx.settings.drainDelaySec,
      removeOnComplete: { count: 0 },
      removeOnFail: { count: 0 },
    });
    w.on('error', (err) => {
      if (!s.stopping) ctx.log.warn({ err, worker: s.reg.name, queue }, 'BullMQ worker error');
    });
    // a dead worker's job is back in the queue: wake whoever can take it
    w.on('stalled', () => {
      ctx.announceJob(queue).catch(() => {});
    });
    w.startStalledCheckTimer().catch((err) => ctx.log.warn({ err, queue }, 'could not start the stalled-job check'));
    s.consumers.set(queue, { queue, shared, personal, worker: w });
    ctx.log.debug({ worker: s.reg.name, queue, personal }, 'worker consumes queue');
  }

  /** Wake the fetch loop: something may be there to take. */
  private poke(s: Session): void {
    s.dirty = true;
    const wake = s.wakeUp;
    s.wakeUp = undefined;
    wake?.();
  }

  /** Until poked (or `ms` passed). */
  private sleep(s: Session, ms?: number): Promise<void> {
    return new Promise((resolve) => {
      let t: NodeJS.Timeout | undefined;
      const done = () => {
        if (t) clearTimeout(t);
        if (s.wakeUp === done) s.wakeUp = undefined;
        resolve();
      };
      s.wakeUp = done;
      if (ms !== undefined) t = setTimeout(done, ms);
    });
  }

  /**
   * Take jobs while a slot is free: personal queues first, then the shared ones, each time
   * starting with the next queue in turn. Sleeps when full (until a job ends) or when nothing
   * was there (until a job-added message, or drainDelaySec).
   */
  private async fetchLoop(s: Session): Promise<void> {
    while (!s.stopping) {
      if (s.active >= s.reg.concurrency) {
        await this.sleep(s);
        continue;
      }
      s.dirty = false;
      let got: { c: Consumer; job: Job; token: string } | undefined;
      try {
        got = await this.fetchOne(s);
        if (s.fetchFailing) this.ctx.log.info({ worker: s.reg.name }, 'taking jobs again');
        s.fetchFailing = false;
      } catch (err) {
        if (s.stopping) break;
        if (!s.fetchFailing) this.ctx.log.warn({ err, worker: s.reg.name }, 'could not take a job; retrying');
        s.fetchFailing = true;
        await this.sleep(s, 1000);
        continue;
      }
      if (got) this.startJob(s, got.c, got.job, got.token);
      else if (!s.dirty && !s.stopping) await this.sleep(s, this.ctx.settings.drainDelaySec * 1000);
    }
  }

  private async fetchOne(s: Session): Promise<{ c: Consumer; job: Job; token: string } | undefined> {
    const all = [...s.consumers.values()];
    const turn = s.turn++;
    const rotate = (cs: Consumer[]) => (cs.length ? cs.map((_, i) => cs[(i + turn) % cs.length]!) : cs);
    for (const c of [...rotate(all.filter((c) => c.personal)), ...rotate(all.filter((c) => !c.personal))]) {
      if (s.stopping) return undefined;
      const token = this.ctx.token();
      const job = (await c.worker.getNextJob(token, { block: false })) as Job | undefined;
      if (job) return { c, job, token };
    }
    return undefined;
  }

  /** Run a taken job in the background, renewing its lock until it is finished. */
  private startJob(s: Session, c: Consumer, job: Job, token: string): void {
    const { ctx } = this;
    s.active++;
    this.publishLoad(s);
    const renew = setInterval(
      () => {
        if (s.forced) return;
        job.extendLock(token, ctx.settings.lockDurationMs).catch((err: unknown) => ctx.log.debug({ err, queue: c.queue }, 'could not renew a job lock'));
      },
      Math.max(50, Math.floor(ctx.settings.lockDurationMs / 3)),
    );
    const p: Promise<void> = this.runJob(s, c, job, token)
      .catch((err: unknown) => {
        if (!s.forced && !ctx.closed) ctx.log.warn({ err, worker: s.reg.name, queue: c.queue }, 'could not finish a job in its queue');
      })
      .finally(() => {
        clearInterval(renew);
        s.active--;
        this.publishLoad(s);
        s.inflight.delete(p);
        this.poke(s);
      });
    s.inflight.add(p);
  }

  /** One delivery, then the job's fate in BullMQ: finished, back in a queue, or abandoned (locked until its lock expires). */
  private async runJob(s: Session, c: Consumer, job: Job, token: string): Promise<void> {
    const outcome = await this.process(s, job);
    if (outcome === 'abandon' || s.forced) return;
    if (outcome === 'done') {
      await job.moveToCompleted(undefined, token, false);
      return;
    }
    // the handler threw: run it again, on the shared queue (maybe this worker is the problem)
    const name = (job.data as { operationName: string }).operationName;
    if (c.personal) {
      if (await this.ops.requeue(name, c.queue, c.shared)) await this.ctx.addJob(c.shared, job.id!, name, { bull: job.opts.priority ?? 0 });
      await job.moveToCompleted(undefined, token, false);
      await this.ctx.announceJob(c.shared);
    } else {
      await job.moveToFailed(outcome.retry, token, false); // BullMQ puts it back in the queue
      await this.ctx.announceJob(c.queue);
    }
  }

  /** One delivery of one job. */
  private async process(s: Session, job: Job): Promise<Outcome> {
    const { ctx, ops } = this;
    const name = (job.data as { operationName?: unknown } | undefined)?.operationName;
    if (typeof name !== 'string') return 'done';
    if (s.forced) return 'abandon';
    const d = await ops.deliver(name, s.reg.name);
    if (!d) return 'done'; // cancelled, or expired
    if (d.deliveries > ctx.settings.maxAttempts) {
      await ops.finish(name, { error: workersDied(d.job, d.deliveries - 1, d.previousWorker) });
      return 'done';
    }
    const controller = new AbortController();
    s.running.set(name, controller);
    try {
      if (s.forced) return 'abandon';
      // a cancel published before we were listening for it
      if (await ops.isDone(name)) return 'done';
      const jobCtx: JobContext = {
        operationName: name,
        job: d.job,
        attempt: d.deliveries - 1,
        queuedAt: d.queuedAt,
        signal: controller.signal,
        markExecuting: async (worker: string) => {
          if (controller.signal.aborted || s.forced) return;
          await ops.update(name, 'EXECUTING', worker);
        },
      };
      let response: Buffer;
      try {
        response = await s.handler(jobCtx);
      } catch (err) {
        if (s.forced) return 'abandon';
        if (controller.signal.aborted) return 'done';
        if (await ops.isDone(name)) return 'done';
        ctx.log.warn({ operation: name, worker: s.reg.name, attempt: d.deliveries - 1, err }, 'job handler failed');
        const next = afterHandlerFailure(err, { job: d.job, deliveries: d.deliveries, maxAttempts: ctx.settings.maxAttempts, worker: s.reg.name });
        if (!next.retry) {
          await ops.finish(name, { error: next.error });
          return 'done';
        }
        await ops.update(name, 'QUEUED', '');
        return { retry: err instanceof Error ? err : new Error(messageOf(err)) };
      }
      if (s.forced) return 'abandon';
      if (controller.signal.aborted) return 'done';
      // before the result is out, so a follow-up job already finds this worker
      await this.personal.recordLocality(d.job, s.reg.name).catch((err: unknown) => ctx.log.warn({ err, operation: name }, 'could not record locality'));
      await ops.finish(name, { response });
      return 'done';
    } finally {
      s.running.delete(name);
    }
  }

  private async stop(s: Session, force: boolean): Promise<void> {
    const { ctx } = this;
    if (force) {
      s.forced = true;
      for (const ac of s.running.values()) ac.abort(new Error('the worker is shutting down'));
    }
    s.stopping = true;
    this.poke(s);
    if (s.timer) clearInterval(s.timer);
    s.timer = undefined;
    await s.scanning?.catch(() => {});
    await s.loop?.catch(() => {});
    const consumers = [...s.consumers.values()];
    const handOver = async () => {
      for (const c of consumers) {
        if (!c.personal) continue;
        try {
          await this.personal.drain(c.queue);
        } catch (err) {
          if (!ctx.closed) ctx.log.warn({ err, queue: c.queue }, 'could not move waiting jobs to the shared queue; a sweep will');
        }
      }
    };
    // While Redis is unreachable, do not wait out ioredis' reconnect attempts: the registration
    // expires after workerTtlMs anyway, and then a sweep moves the jobs routed to us.
    if (ctx.cmd.status === 'ready') {
      // Still registered (platforms stay satisfiable) but no longer routed to; the jobs waiting
      // for us go to the others now.
      await ctx.cmd.set(ctx.keys.worker(s.reg.name), this.registration(s, true), 'PX', ctx.settings.workerTtlMs).catch(() => {});
      await handOver();
    }
    // graceful: let running jobs finish; forced: they are abandoned (locks expire, re-delivered)
    if (!force) await Promise.allSettled([...s.inflight]);
    await Promise.allSettled(consumers.map((c) => c.worker.close(force)));
    s.consumers.clear();
    this.sessions.delete(s);
    const cleanup = Promise.allSettled([ctx.cmd.zrem(ctx.keys.workers, s.reg.name), ctx.cmd.del(ctx.keys.worker(s.reg.name))]);
    if (ctx.cmd.status === 'ready') {
      await cleanup;
      await handOver(); // anything routed to us meanwhile
    }
  }
}
