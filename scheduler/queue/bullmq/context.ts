// What the parts of the BullMQ queue share: its settings, key names, Redis connections, the
// BullMQ Queue objects it has open, and how jobs are added.
//
// Connections (ioredis, BullMQ's supported client; `redis://` and `rediss://` URLs): one for
// commands (our state and the Lua scripts), one for pub/sub (opened by the events part), and one
// shared by the BullMQ queues (`maxRetriesPerRequest: null`, as BullMQ requires); every BullMQ
// Worker duplicates the latter for its own connections.
import { randomUUID } from 'node:crypto';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { connectRedis, type RedisTarget } from '../../../common/redis.ts';
import { silentLogger, type Logger } from '../../../common/logger.ts';
import { DEFAULT_LOCALITY_TTL_MS } from '../../../execution/platform.ts';
import { attemptsOf } from '../rules.ts';
import { isPersonal, RedisKeys } from './keys.ts';
import { bullPriority } from './priority.ts';
import { withScripts, type CommandClient } from './scripts.ts';

export interface BullmqJobQueueOptions {
  /** `redis://[[user]:password@]host[:port][/db]`, or `rediss://...` for TLS (as ioredis reads it). */
  redisUrl: string;
  /** PEM CA bundle that signed a `rediss://` server's certificate. */
  redisCa?: string;
  /** Prefix of every key and channel (default 'reapi'). */
  prefix?: string;
  /** Deliveries of one job (worker deaths and handler throws alike) before it fails (default 3). */
  maxAttempts?: number;
  /** BullMQ job lock; a dead worker's job is re-delivered once it expires (default 10 s). */
  lockDurationMs?: number;
  /** How often workers look for jobs whose lock expired (default 5 s). */
  stalledIntervalMs?: number;
  /** Worker registration refresh and platform rescan period (default 5 s). */
  heartbeatMs?: number;
  /** A worker not heard from for this long no longer counts for `unsatisfiable` (default 15 s). */
  workerTtlMs?: number;
  /** How long a finished operation stays readable (default 1 day). */
  doneTtlMs?: number;
  /** Upper bound on an unfinished operation's life in Redis (default 7 days). */
  inFlightTtlMs?: number;
  /** Watchers re-read their operation this often, in case a pub/sub message was lost (default 10 s). */
  watchPollMs?: number;
  /**
   * Seconds an idle worker waits before looking at its queues again when no job-added message
   * woke it (default 5); also how often each BullMQ worker checks for stalled jobs at most.
   */
  drainDelaySec?: number;
  /**
   * Route a job to a worker that recently ran jobs sharing its locality keys, and record them
   * when a job finishes, default true (config `execution.locality`).
   */
  locality?: boolean;
  /** How long a finished job's locality keys point at its worker (default 10 minutes). */
  localityTtlMs?: number;
  logger?: Logger;
}

export type Settings = Required<Omit<BullmqJobQueueOptions, 'logger' | 'prefix' | 'redisCa'>> & { redis: RedisTarget };

function settingsOf(o: BullmqJobQueueOptions): Settings {
  return {
    redisUrl: o.redisUrl,
    redis: { url: o.redisUrl, ...(o.redisCa !== undefined ? { ca: o.redisCa } : {}) },
    maxAttempts: attemptsOf(o.maxAttempts),
    lockDurationMs: o.lockDurationMs ?? 10_000,
    stalledIntervalMs: o.stalledIntervalMs ?? 5_000,
    heartbeatMs: o.heartbeatMs ?? 5_000,
    workerTtlMs: o.workerTtlMs ?? 15_000,
    doneTtlMs: o.doneTtlMs ?? 24 * 3600_000,
    inFlightTtlMs: o.inFlightTtlMs ?? 7 * 24 * 3600_000,
    watchPollMs: o.watchPollMs ?? 10_000,
    drainDelaySec: o.drainDelaySec ?? 5,
    locality: o.locality ?? true,
    localityTtlMs: o.localityTtlMs ?? DEFAULT_LOCALITY_TTL_MS,
  };
}

/** Personal Queue objects kept open (least recently used closed first). */
const MAX_OPEN_PERSONAL_QUEUES = 256;

export class BullmqContext {
  readonly settings: Settings;
  readonly keys: RedisKeys;
  readonly log: Logger;
  readonly cmd: CommandClient;
  /** Tells this instance's lock tokens apart from other instances'. */
  readonly instanceId = randomUUID();
  closed = false;
  private tokens = 0;
  private bull: Redis | undefined;
  private readonly queues = new Map<string, Queue>();

  constructor(opts: BullmqJobQueueOptions) {
    this.settings = settingsOf(opts);
    this.keys = new RedisKeys(opts.prefix ?? 'reapi');
    this.log = opts.logger ?? silentLogger;
    // lazyConnect: connections open on first use
    this.cmd = withScripts(connectRedis(this.settings.redis, { lazyConnect: true }));
    this.cmd.on('error', (err: unknown) => this.log.warn({ err }, 'redis connection error'));
  }

  assertOpen(): void {
    if (this.closed) throw new Error('job queue is closed');
  }

  /** A fresh lock token for a job this instance takes. */
  token(): string {
    return `${this.instanceId}:${++this.tokens}`;
  }

  /** The connection BullMQ queues share; workers duplicate it (so it must not retry-limit commands). */
  bullClient(): Redis {
    if (!this.bull) {
      this.bull = connectRedis(this.settings.redis, { maxRetriesPerRequest: null, lazyConnect: true });
      this.bull.on('error', (err: unknown) => this.log.warn({ err }, 'redis connection error'));
    }
    return this.bull;
  }

  /** The BullMQ Queue object of a queue name, opened on first use. */
  queue(name: string): Queue {
    let q = this.queues.get(name);
    const personal = isPersonal(name);
    if (q && personal) {
      // most recently used last
      this.queues.delete(name);
      this.queues.set(name, q);
    }
    if (!q) {
      q = new Queue(name, { connection: this.bullClient(), prefix: this.keys.bullPrefix });
      q.on('error', (err) => this.log.warn({ err, queue: name }, 'queue error'));
      this.queues.set(name, q);
      if (personal) {
        const open = [...this.queues.keys()].filter(isPersonal);
        for (const old of open.slice(0, Math.max(0, open.length - MAX_OPEN_PERSONAL_QUEUES))) this.dropQueue(old);
      }
    }
    return q;
  }

  /** Close and forget a Queue object (its jobs stay in Redis). */
  dropQueue(name: string): void {
    const q = this.queues.get(name);
    if (!q) return;
    this.queues.delete(name);
    q.close().catch(() => {});
  }

  /** Add an operation's job to a queue, at its BullMQ priority (`bullPrio`, or from the REAPI one). */
  async addJob(queue: string, jobId: string, operationName: string, prio: { reapi: number } | { bull: number }): Promise<void> {
    await this.queue(queue).add(
      'action',
      { operationName },
      {
        jobId,
        priority: 'bull' in prio ? prio.bull : bullPriority(prio.reapi),
        // our own delivery count decides; BullMQ must never give up first
        attempts: this.settings.maxAttempts + 1,
        removeOnComplete: true,
        removeOnFail: true,
      },
    );
  }

  /** Tell idle workers that `queue` has a job to take. */
  async announceJob(queue: string): Promise<void> {
    await this.cmd.publish(this.keys.jobAdded, queue);
  }

  /** Close the Queue objects and the command and queue connections. */
  async closeConnections(): Promise<void> {
    await Promise.allSettled([...this.queues.values()].map((q) => q.close()));
    this.queues.clear();
    // the queues leave the connection they share open: it is ours
    await Promise.allSettled([this.bull, this.cmd].map((c) => c && quit(c)));
    this.bull = undefined;
  }
}

/** Quit a connection (pending replies first); drop it when that takes over a second. */
export async function quit(c: Redis): Promise<void> {
  if (c.status === 'end') return;
  if (c.status === 'wait' || c.status === 'reconnecting') {
    c.disconnect(); // never connected (lazyConnect), or Redis is unreachable: nothing to wait for
    return;
  }
  const t = setTimeout(() => c.disconnect(), 1000);
  t.unref();
  try {
    await c.quit();
  } catch {
    c.disconnect();
  } finally {
    clearTimeout(t);
  }
}
