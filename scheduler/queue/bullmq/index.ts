// The BullMQ JobQueue: a fleet of schedulers and workers sharing one Redis. This file composes
// the parts and answers the JobQueue calls; each part says what it does at its top:
//
//   keys.ts               every key and channel name, and the key layout
//   scripts/*.lua         the atomic state changes (scripts.ts loads them)
//   context.ts            settings, connections and the BullMQ Queue objects shared by the parts
//   operation-store.ts    operation state (a hash per operation), created, updated and finished
//   operation-watchers.ts watching operations through the events channel
//   pub-sub.ts            the subscription to the channels
//   personal-queues.ts    locality routing and the personal queues of stopped or dead workers
//   worker-sessions.ts    workers taking, running and finishing jobs
//   worker-registry.ts    which workers are live
//
// Worker death: the job is delivered again (BullMQ's stalled-job recovery, or the sweep of
// personal queues), and the delivery count in the operation hash decides when to give up
// (scheduler/queue/rules.ts).
import { randomUUID } from 'node:crypto';
import type {
  JobHandler,
  JobQueue,
  JobSpec,
  OperationState,
  PlatformProperties,
  QueueStats,
  SubmitOptions,
  SubmitResult,
  WorkerRegistration,
} from '../../../execution/job-queue.ts';
import { satisfies, unsatisfiableProperties } from '../../../execution/platform.ts';
import { messageOf, Status } from '../../../common/errors.ts';
import { cancelled, isMergeable, mergeKeyOf, type OperationError } from '../rules.ts';
import { BullmqContext, type BullmqJobQueueOptions } from './context.ts';
import { mergeHash, personalQueueName, queueName, sharedOf } from './keys.ts';
import { OperationStore } from './operation-store.ts';
import { OperationWatchers } from './operation-watchers.ts';
import { jobCounts, PersonalQueues } from './personal-queues.ts';
import { bullPriority } from './priority.ts';
import { PubSub } from './pub-sub.ts';
import { liveWorkers, registeredWorkers, isLive } from './worker-registry.ts';
import { WorkerSessions } from './worker-sessions.ts';

export type { BullmqJobQueueOptions } from './context.ts';
export { bullPriority, BULL_PRIORITY_MAX } from './priority.ts';

/** How old a QUEUED operation without a job must be before it is taken for orphaned. */
const ORPHAN_GRACE_MS = 5_000;

export class BullmqJobQueue implements JobQueue {
  private readonly ctx: BullmqContext;
  private readonly ops: OperationStore;
  private readonly watchers: OperationWatchers;
  private readonly personal: PersonalQueues;
  private readonly sessions: WorkerSessions;
  private readonly pubSub: PubSub;

  constructor(opts: BullmqJobQueueOptions) {
    const ctx = (this.ctx = new BullmqContext(opts));
    this.ops = new OperationStore(ctx);
    this.personal = new PersonalQueues(ctx, this.ops);
    // Someone waits for it: make sure it is not an orphan of a dead scheduler.
    this.watchers = new OperationWatchers(ctx, this.ops, (name) => void this.repairIfOrphaned(name).catch(() => {}));
    this.pubSub = new PubSub(ctx, {
      onMessage: (channel, message) => this.onMessage(channel, message),
      onRestored: () => {
        this.watchers.refreshAll();
        this.sessions.onRestored();
      },
    });
    this.sessions = new WorkerSessions(ctx, this.ops, this.personal, () => this.pubSub.ensure());
  }

  async submit(job: JobSpec, opts: SubmitOptions = {}): Promise<SubmitResult> {
    const { ctx } = this;
    ctx.assertOpen();
    const jobId = randomUUID();
    const name = `operations/${jobId}`;
    const sharedQueue = queueName(job.platform);
    // Routing is decided before the operation exists: once it is mergeable, only the add to
    // BullMQ stands between it and a worker (a scheduler dying in between strands it).
    let routedTo = opts.worker;
    let reserved = false;
    if (routedTo === undefined && ctx.settings.locality && job.localityKeys?.length) {
      try {
        routedTo = await this.personal.route(job, sharedQueue);
        reserved = routedTo !== undefined;
      } catch (err) {
        ctx.log.warn({ err, operation: name }, 'locality lookup failed; using the shared queue');
      }
    }
    const queue = routedTo ? personalQueueName(sharedQueue, routedTo) : sharedQueue;
    try {
      const created = await this.ops.create({ name, job, jobId, mergeHash: isMergeable(job) ? mergeHash(mergeKeyOf(job)) : '', sharedQueue, queue, routedTo });
      if (created.merged) {
        const merged = created.merged;
        await this.repairIfOrphaned(merged).catch((err: unknown) => ctx.log.warn({ err, operation: merged }, 'could not check the merged operation'));
        return { operationName: merged, merged: true };
      }
      if (created.platformIsNew) await ctx.cmd.publish(ctx.keys.platformAdded, sharedQueue);
      try {
        await ctx.addJob(queue, jobId, name, { reapi: job.priority });
      } catch (err) {
        await this.ops.finish(name, { error: { code: Status.UNAVAILABLE, message: `could not enqueue: ${messageOf(err)}` } }).catch(() => {});
        throw err;
      }
    } finally {
      if (reserved) this.personal.release(queue);
    }
    this.personal.startSweeping();
    await ctx.announceJob(queue);
    if (routedTo) {
      // It may have died since we looked, and a sweep may have missed this job: move it ourselves.
      try {
        if (!(await isLive(ctx, routedTo))) await this.personal.moveToShared(queue, jobId, name, bullPriority(job.priority));
      } catch (err) {
        ctx.log.warn({ err, operation: name }, 'could not check the routed worker; the sweep will');
      }
    }
    return { operationName: name, merged: false };
  }

  async getOperation(name: string): Promise<OperationState | undefined> {
    this.ctx.assertOpen();
    return this.ops.get(name);
  }

  watch(name: string, onUpdate: (state: OperationState) => void): () => void {
    this.ctx.assertOpen();
    const stop = this.watchers.watch(name, onUpdate, this.pubSub.ensure());
    this.repairIfOrphaned(name).catch((err: unknown) => this.ctx.log.warn({ err, operation: name }, 'could not check the watched operation'));
    return stop;
  }

  cancel(name: string): Promise<boolean> {
    return this.fail(name, cancelled(name));
  }

  async fail(name: string, error: OperationError): Promise<boolean> {
    const { ctx } = this;
    ctx.assertOpen();
    const h = await this.ops.raw(name);
    if (!h.name || h.done !== '0') return false;
    if (h.queue && h.jobId) {
      try {
        await ctx.queue(h.queue).remove(h.jobId); // 0 when a worker holds it (locked)
      } catch (err) {
        ctx.log.debug({ err, operation: name }, 'could not remove job');
      }
    }
    const ok = await this.ops.finish(name, { error });
    // a worker running it aborts it (the channel is named for its first use, cancelling)
    await ctx.cmd.publish(ctx.keys.cancel, name);
    return ok;
  }

  async unsatisfiable(platform: PlatformProperties): Promise<string[]> {
    this.ctx.assertOpen();
    return unsatisfiableProperties((await liveWorkers(this.ctx)).map((w) => w.platform), platform);
  }

  async stats(): Promise<QueueStats> {
    const { ctx } = this;
    ctx.assertOpen();
    const all = await ctx.cmd.hgetall(ctx.keys.platforms);
    const platforms: QueueStats['platforms'] = [];
    const byQueue = new Map<string, QueueStats['platforms'][number]>();
    for (const [queue, json] of Object.entries(all)) {
      let platform: PlatformProperties;
      try {
        platform = JSON.parse(json) as PlatformProperties;
      } catch {
        continue;
      }
      const p = { platform, ...(await jobCounts(ctx, queue)) };
      platforms.push(p);
      byQueue.set(queue, p);
    }
    // jobs routed to one worker count for their platform too
    for (const pq of Object.keys(await ctx.cmd.hgetall(ctx.keys.personal))) {
      const p = byQueue.get(sharedOf(pq));
      if (!p) continue;
      const c = await jobCounts(ctx, pq);
      p.waiting += c.waiting;
      p.active += c.active;
    }
    return { platforms, workers: await liveWorkers(ctx) };
  }

  async freeWorkers(platform: PlatformProperties, exclude: string): Promise<string[]> {
    const { ctx } = this;
    ctx.assertOpen();
    const queue = queueName(platform);
    const free: Array<{ name: string; free: number }> = [];
    for (const { name, reg } of await registeredWorkers(ctx)) {
      if (name === exclude || reg.draining || !satisfies(reg.platform, platform) || reg.active >= reg.concurrency) continue;
      const { waiting } = await jobCounts(ctx, personalQueueName(queue, name));
      if (reg.active + waiting < reg.concurrency) free.push({ name, free: reg.concurrency - reg.active - waiting });
    }
    return free.sort((a, b) => b.free - a.free).map((w) => w.name);
  }

  async work(worker: WorkerRegistration, handler: JobHandler): Promise<() => Promise<void>> {
    this.ctx.assertOpen();
    return this.sessions.start(worker, handler);
  }

  /**
   * Stop this instance: workers stop at once (running handlers see their signal aborted and their
   * jobs are re-delivered elsewhere once the lock expires), every connection quits. Operation
   * state stays in Redis for other instances.
   */
  async close(): Promise<void> {
    const { ctx } = this;
    if (ctx.closed) return;
    ctx.closed = true;
    this.watchers.close();
    await this.sessions.closeAll();
    await this.personal.close();
    await this.pubSub.close();
    await ctx.closeConnections();
  }

  private onMessage(channel: string, message: string): void {
    const { keys } = this.ctx;
    if (channel === keys.events) this.watchers.onEvent(message);
    else if (channel === keys.cancel) this.sessions.onCancel(message);
    else if (channel === keys.platformAdded) this.sessions.onPlatformAdded();
    else if (channel === keys.jobAdded) this.sessions.onJobAdded(message);
  }

  /**
   * A scheduler that dies between creating an operation and adding its job leaves it QUEUED with
   * no job anywhere; clients that merge into it or wait for it would wait forever. An operation
   * found so (and older than a moment, so its own submitter is not racing us) gets its job again.
   * Adding with the same job id in the same queue is a no-op when the job does exist after all.
   */
  private async repairIfOrphaned(name: string): Promise<void> {
    const { ctx } = this;
    const h = await this.ops.raw(name);
    if (!h.name || h.done !== '0' || h.stage !== 'QUEUED' || !h.queue || !h.jobId) return;
    if (Date.now() - Number(h.queuedAt ?? 0) < ORPHAN_GRACE_MS) return;
    if ((await ctx.queue(h.queue).getJobState(h.jobId)) !== 'unknown') return;
    const job = JSON.parse(h.job ?? '{}') as Partial<JobSpec>;
    ctx.log.warn({ operation: name, queue: h.queue }, 'operation was queued but its job was never added (its scheduler died); adding it again');
    if (h.queue !== sharedOf(h.queue)) {
      await this.personal.moveToShared(h.queue, h.jobId, name, bullPriority(job.priority ?? 0));
      return;
    }
    await ctx.addJob(h.queue, h.jobId, name, { reapi: job.priority ?? 0 });
    await ctx.announceJob(h.queue);
  }
}
