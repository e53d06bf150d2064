// Locality routing onto personal queues, and getting jobs off the personal queue of a worker that
// stopped or died.
//
// - Routing: when a worker finishes a job, each of the job's locality keys (input root and its
//   top-level subdirectories) records the worker and the time (`<p>:loc:<key>`). On submit, the
//   live worker satisfying the job's platform that shares the most keys (then: the most recent)
//   gets the job on its personal queue, unless it already has `concurrency` jobs waiting there;
//   otherwise the shared queue. `locality: false` neither routes nor records.
// - A dead worker's personal queues: any scheduler or worker sweeps (at most one per heartbeat
//   fleet-wide, `<p>:sweep`) the personal queues whose worker's registration expired, moving
//   their waiting jobs and their active jobs whose lock expired back to the shared queue. A
//   submitter that routed to a worker which turns out dead moves its job itself.
import type { JobSpec } from '../../../execution/job-queue.ts';
import { LOCALITY_WORKERS_PER_KEY, localityKeysOf, rankLocality, satisfies } from '../../../execution/platform.ts';

import type { BullmqContext } from './context.ts';
import { personalQueueName, sharedOf } from './keys.ts';
import type { OperationStore } from './operation-store.ts';
import { parseRegistration } from './worker-registry.ts';

/** Locality candidates looked up per submit (best first); only the best live one is used. */
const LOCALITY_CANDIDATES = 8;

/** Jobs in a BullMQ queue: waiting (BullMQ's waiting, prioritized and delayed) and active. */
export async function jobCounts(ctx: BullmqContext, queue: string): Promise<{ waiting: number; active: number }> {
  const c = await ctx.queue(queue).getJobCounts('waiting', 'prioritized', 'delayed', 'active');
  return { waiting: (c.waiting ?? 0) + (c.prioritized ?? 0) + (c.delayed ?? 0), active: c.active ?? 0 };
}

export class PersonalQueues {
  /** Jobs this instance is routing to a personal queue and has not added yet, by queue. */
  private readonly routing = new Map<string, number>();
  private sweepTimer: NodeJS.Timeout | undefined;
  private sweeping: Promise<void> | undefined;

  constructor(
    private readonly ctx: BullmqContext,
    private readonly ops: OperationStore,
  ) {}

  /**
   * The worker this job should go to: the live one satisfying its platform that ran the most of
   * its locality keys lately (then: the most recent), unless it already has `concurrency` jobs
   * waiting on its personal queue. Undefined: the shared queue. A worker returned is reserved
   * until `release(personalQueueName(sharedQueue, worker))`.
   */
  async route(job: JobSpec, sharedQueue: string): Promise<string | undefined> {
    const { ctx } = this;
    const keys = localityKeysOf(job.localityKeys);
    if (keys.length === 0) return undefined;
    const p = ctx.cmd.pipeline();
    for (const k of keys) p.zrange(ctx.keys.locality(k), 0, -1, 'WITHSCORES');
    const replies = (await p.exec()) ?? [];
    const hits = replies.map(([err, v]) => {
      const flat = !err && Array.isArray(v) ? (v as string[]) : [];
      const pairs: Array<[string, number]> = [];
      for (let i = 0; i + 1 < flat.length; i += 2) pairs.push([flat[i]!, Number(flat[i + 1])]);
      return pairs;
    });
    const ranked = rankLocality(hits, Date.now() - ctx.settings.localityTtlMs).slice(0, LOCALITY_CANDIDATES);
    if (ranked.length === 0) return undefined;
    const regs = await ctx.cmd.mget(ranked.map((c) => ctx.keys.worker(c.worker)));
    for (const [i, c] of ranked.entries()) {
      const reg = parseRegistration(regs[i]);
      if (!reg || reg.draining || !satisfies(reg.platform, job.platform)) continue;
      // Reserve before counting, so a burst of submits does not all see the queue empty; the
      // caller releases the reservation once the job is added (or not).
      const pq = personalQueueName(sharedQueue, c.worker);
      this.routing.set(pq, (this.routing.get(pq) ?? 0) + 1);
      let routed = false;
      try {
        const waiting = (await jobCounts(ctx, pq)).waiting + (this.routing.get(pq) ?? 1) - 1;
        routed = waiting < reg.concurrency;
        return routed ? c.worker : undefined;
      } finally {
        if (!routed) this.release(pq);
      }
    }
    return undefined;
  }

  release(personalQueue: string): void {
    const n = (this.routing.get(personalQueue) ?? 1) - 1;
    if (n > 0) this.routing.set(personalQueue, n);
    else this.routing.delete(personalQueue);
  }

  /** Remember that `worker` just ran a job with these locality keys. */
  async recordLocality(job: JobSpec, worker: string): Promise<void> {
    const { ctx } = this;
    const keys = localityKeysOf(job.localityKeys);
    if (!ctx.settings.locality || keys.length === 0) return;
    const now = Date.now();
    const ttl = ctx.settings.localityTtlMs;
    const p = ctx.cmd.pipeline();
    for (const k of keys) {
      const key = ctx.keys.locality(k);
      p.zadd(key, now, worker)
        .zremrangebyscore(key, '-inf', now - ttl)
        .zremrangebyrank(key, 0, -(LOCALITY_WORKERS_PER_KEY + 1))
        .pexpire(key, ttl);
    }
    await p.exec();
  }

  /**
   * Move a job from a personal queue to its shared queue, unless it is locked (its worker runs
   * it). True when it is no longer in the personal queue (moved, finished, or gone); the
   * operation hash decides who re-enqueues it, so two movers never both do.
   */
  async moveToShared(personalQueue: string, jobId: string, operationName: string | undefined, bullPrio: number | undefined): Promise<boolean> {
    const { ctx } = this;
    const pq = ctx.queue(personalQueue);
    const state = await pq.getJobState(jobId);
    if (state !== 'unknown' && (await pq.remove(jobId)) !== 1) return false;
    if (!operationName) return true;
    const shared = sharedOf(personalQueue);
    if (!(await this.ops.requeue(operationName, personalQueue, shared))) return true;
    await ctx.addJob(shared, jobId, operationName, bullPrio === undefined ? { reapi: 0 } : { bull: bullPrio });
    await ctx.announceJob(shared);
    ctx.log.debug({ operation: operationName, from: personalQueue, to: shared }, 'moved a job to the shared queue');
    return true;
  }

  /** Move every job of a personal queue that is not locked to the shared queue; true when none is left. */
  async drain(personalQueue: string): Promise<boolean> {
    const jobs = await this.ctx.queue(personalQueue).getJobs(['waiting', 'prioritized', 'delayed', 'active']);
    let left = 0;
    for (const job of jobs) {
      if (!job?.id) continue;
      const name = (job.data as { operationName?: unknown } | undefined)?.operationName;
      if (!(await this.moveToShared(personalQueue, job.id, typeof name === 'string' ? name : undefined, job.opts.priority))) left++;
    }
    return left === 0;
  }

  /** Sweep every heartbeat period from now on. */
  startSweeping(): void {
    if (this.sweepTimer || this.ctx.closed) return;
    this.sweepTimer = setInterval(() => void this.sweep(), this.ctx.settings.heartbeatMs);
    this.sweepTimer.unref();
  }

  async close(): Promise<void> {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
    await this.sweeping?.catch(() => {});
  }

  /**
   * Move the jobs of dead workers' personal queues to the shared queues. At most one instance
   * sweeps per heartbeat period (the first to take `<p>:sweep`); moves are safe to repeat.
   */
  private sweep(): Promise<void> {
    const { ctx } = this;
    if (this.sweeping || ctx.closed) return this.sweeping ?? Promise.resolve();
    this.sweeping = (async () => {
      try {
        const entries = await ctx.cmd.hgetall(ctx.keys.personal);
        const names = [...new Set(Object.values(entries))];
        if (names.length === 0) return;
        const regs = await ctx.cmd.mget(names.map((n) => ctx.keys.worker(n)));
        const dead = new Set(names.filter((_, i) => !regs[i]));
        if (dead.size === 0) return;
        if ((await ctx.cmd.set(ctx.keys.sweep, ctx.instanceId, 'PX', ctx.settings.heartbeatMs, 'NX')) !== 'OK') return;
        for (const [pq, worker] of Object.entries(entries)) {
          if (ctx.closed) return;
          if (dead.has(worker)) await this.retire(pq, worker);
        }
      } catch (err) {
        if (!ctx.closed) ctx.log.warn({ err }, 'sweeping dead workers failed');
      }
    })().finally(() => {
      this.sweeping = undefined;
    });
    return this.sweeping;
  }

  /** Empty a dead worker's personal queue and forget it (unless a job is still locked there). */
  private async retire(pq: string, worker: string): Promise<void> {
    const { ctx } = this;
    if (!(await this.drain(pq))) return; // a job still locked: next time
    await ctx.cmd.hdel(ctx.keys.personal, pq);
    // A job added since (its submitter saw the worker live) keeps the entry; the submitter also
    // moves it itself once it sees the worker dead.
    const q = ctx.queue(pq);
    const c = await q.getJobCounts('waiting', 'prioritized', 'delayed', 'active');
    if (Object.values(c).some((n) => n > 0)) {
      await ctx.cmd.hset(ctx.keys.personal, pq, worker);
      return;
    }
    if (await ctx.cmd.exists(ctx.keys.worker(worker))) return; // it came back
    // BullMQ's bookkeeping of the empty queue (events stream, counters); never a job
    const k = q.keys as Record<string, string>;
    const bookkeeping = ['events', 'meta', 'id', 'pc', 'marker', 'stalled-check', 'stalled', 'limiter']
      .map((t) => k[t])
      .filter((x): x is string => !!x);
    if (bookkeeping.length) await ctx.cmd.del(...bookkeeping);
    ctx.dropQueue(pq);
    ctx.log.info({ worker, queue: pq }, 'retired the personal queue of a dead worker');
  }
}
