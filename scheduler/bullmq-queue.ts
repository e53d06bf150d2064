// The BullMQ JobQueue: a fleet of schedulers and workers sharing one Redis.
//
// - One shared BullMQ queue per platform (`q-<sha256(platformKey)>`), discovered by workers
//   through a Redis hash and pub/sub, and one personal queue per worker and platform
//   (`<shared queue>-w-<sha256(worker name)>`) for jobs routed to that worker for locality.
// - Workers fetch jobs themselves (BullMQ Workers without a processor): a job is taken only when
//   a slot is free, from the worker's personal queues first, then the shared ones (in turn), so a
//   busy worker never holds jobs another one could start. Idle workers wake on a pub/sub message
//   for each job added (and poll every `drainDelaySec`). Each job's lock is renewed while it runs;
//   BullMQ's stalled-job checker (run by every worker on each queue it consumes) re-delivers the
//   job of a worker that died.
// - Locality: when a worker finishes a job, each of the job's locality keys (input root and its
//   top-level subdirectories) records the worker and the time (`<p>:loc:<key>`). On submit, the
//   live worker satisfying the job's platform that shares the most keys (then: the most recent)
//   gets the job on its personal queue, unless it already has `concurrency` jobs waiting there;
//   otherwise the shared queue. `locality: false` neither routes nor records.
// - A dead worker's personal queues: any scheduler or worker sweeps (at most one per heartbeat
//   fleet-wide, `<p>:sweep`) the personal queues whose worker's registration expired, moving
//   their waiting jobs and their active jobs whose lock expired back to the shared queue. A
//   submitter that routed to a worker which turns out dead moves its job itself.
// - Operation state lives in a Redis hash per operation (kept `doneTtlMs` after done), so any
//   scheduler (a restarted one too) can answer getOperation / watch; every change is announced
//   on a pub/sub channel.
// - Worker death: the job is delivered again (stalled-job recovery, or the sweep); we count
//   deliveries in the operation hash and give up with UNAVAILABLE after `maxAttempts`.
//
// Key layout (prefix `reapi` by default):
//   <p>:op:<operation name>   hash   name, job (JSON JobSpec), stage, done 0|1, queuedAt, updatedAt,
//                                    worker, response (base64), error (JSON), queue (the BullMQ
//                                    queue holding the job), jobId, mergeKey, deliveries,
//                                    lastWorker, ver (bumped on each change)
//   <p>:merge:<sha256>        string operation name of the in-flight mergeable action
//   <p>:platforms             hash   shared BullMQ queue name -> platform (JSON)
//   <p>:personal              hash   personal BullMQ queue name -> worker name (for the sweep)
//   <p>:loc:<locality key>    zset   worker name -> when it last finished a job with that key (ms);
//                                    the LOCALITY_WORKERS_PER_KEY most recent, PX localityTtlMs
//   <p>:sweep                 string held (PX heartbeatMs) by the instance sweeping dead workers
//   <p>:workers               zset   worker name -> last heartbeat (ms); an index, pruned lazily
//   <p>:worker:<name>         string registration (JSON {platform, concurrency, active, draining?}), PX
//                                    workerTtlMs: a worker counts as live while this key exists;
//                                    `draining` (stopping): never routed to
//   <p>:bull:<queue>:...      BullMQ's own keys
// Channels: <p>:events (JSON {name, ver, stage, worker, updatedAt, done} of each change),
//           <p>:cancel (operation name to abort),
//           <p>:platform-added (name of a new platform queue),
//           <p>:job-added (name of a queue that just got a job to take).
//
// Redis client: ioredis (BullMQ's supported client), `redis://` and `rediss://` URLs. Each
// instance holds three connections of its own: commands (our state; the Lua scripts below are
// ioredis custom commands, EVALSHA with an EVAL fallback), pub/sub (resubscribes by itself after a
// reconnect) and one shared by the BullMQ queues (`maxRetriesPerRequest: null`, as BullMQ
// requires); every BullMQ Worker duplicates the latter for its own connections.
import { createHash, randomUUID } from 'node:crypto';
import { Queue, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { digestKey } from '../common/digest.ts';
import { Status } from '../common/errors.ts';
import { silentLogger, type Logger } from '../common/logger.ts';
import type {
  JobContext,
  JobHandler,
  JobQueue,
  JobSpec,
  OperationState,
  PlatformProperties,
  QueueStats,
  Stage,
  SubmitOptions,
  SubmitResult,
  WorkerRegistration,
} from '../execution/job-queue.ts';
import {
  DEFAULT_LOCALITY_TTL_MS,
  LOCALITY_WORKERS_PER_KEY,
  localityKeysOf,
  platformKey,
  rankLocality,
  satisfies,
  unsatisfiableProperties,
} from '../execution/platform.ts';

// ---------------------------------------------------------------------------------------------
// Lua scripts, defined on the command connection as ioredis custom commands
// ---------------------------------------------------------------------------------------------

type ScriptArg = string | number;

/** The scripts below, as methods of the command connection: keys first, then ARGV. */
interface ScriptCommands {
  submitOp(...keysAndArgs: ScriptArg[]): Promise<[string, number]>;
  deliverJob(...keysAndArgs: ScriptArg[]): Promise<(string | number)[]>;
  updateOp(...keysAndArgs: ScriptArg[]): Promise<number>;
  finishOp(...keysAndArgs: ScriptArg[]): Promise<number>;
  requeueOp(...keysAndArgs: ScriptArg[]): Promise<number>;
}

type CommandClient = Redis & ScriptCommands;

// KEYS: op key, merge key (op key again when not mergeable), platforms hash, personal queues hash.
// ARGV: op name, '1' when mergeable, op key prefix, ttl ms, shared queue name, platform JSON,
//       personal queue the job goes to ('' when the shared one), its worker, fields...
const SUBMIT_LUA = `
if ARGV[2] == '1' then
  local existing = redis.call('GET', KEYS[2])
  if existing and redis.call('HGET', ARGV[3] .. existing, 'done') == '0' then
    return {existing, 0}
  end
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[4])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 9))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local added = redis.call('HSETNX', KEYS[3], ARGV[5], ARGV[6])
if ARGV[7] ~= '' then redis.call('HSET', KEYS[4], ARGV[7], ARGV[8]) end
return {'', added}
`;

// Every change of an operation bumps its `ver` and publishes the change itself on the events
// channel, as JSON {name, ver, stage, worker, updatedAt, done}, so watchers see every stage even
// when they come faster than a watcher could re-read the hash.

// KEYS: op key. ARGV: worker, now, events channel, op name.
// Counts a delivery; a job delivered again (its worker died) goes back to QUEUED.
const DELIVER_LUA = `
local f = redis.call('HMGET', KEYS[1], 'done', 'job', 'lastWorker', 'stage', 'queuedAt')
if not f[1] then return {'gone'} end
if f[1] == '1' then return {'done'} end
local n = redis.call('HINCRBY', KEYS[1], 'deliveries', 1)
redis.call('HSET', KEYS[1], 'lastWorker', ARGV[1])
if f[4] ~= 'QUEUED' then
  local v = redis.call('HINCRBY', KEYS[1], 'ver', 1)
  redis.call('HSET', KEYS[1], 'stage', 'QUEUED', 'worker', '', 'updatedAt', ARGV[2])
  redis.call('PUBLISH', ARGV[3], cjson.encode({name = ARGV[4], ver = v, stage = 'QUEUED', worker = '', updatedAt = tonumber(ARGV[2]), done = false}))
end
return {'ok', n, f[2], f[3] or '', f[5] or '0'}
`;

// KEYS: op key. ARGV: events channel, op name, stage, worker, now. Only while not done.
const UPDATE_LUA = `
if redis.call('HGET', KEYS[1], 'done') ~= '0' then return 0 end
local v = redis.call('HINCRBY', KEYS[1], 'ver', 1)
redis.call('HSET', KEYS[1], 'stage', ARGV[3], 'worker', ARGV[4], 'updatedAt', ARGV[5])
redis.call('PUBLISH', ARGV[1], cjson.encode({name = ARGV[2], ver = v, stage = ARGV[3], worker = ARGV[4], updatedAt = tonumber(ARGV[5]), done = false}))
return 1
`;

// KEYS: op key. ARGV: events channel, op name, ttl ms, merge key prefix, now, fields...
// The first finisher wins; frees the merge key when it still names this operation.
const FINISH_LUA = `
local f = redis.call('HMGET', KEYS[1], 'done', 'mergeKey', 'worker')
if f[1] ~= '0' then return 0 end
local v = redis.call('HINCRBY', KEYS[1], 'ver', 1)
redis.call('HSET', KEYS[1], 'done', '1', 'stage', 'COMPLETED', 'updatedAt', ARGV[5], unpack(ARGV, 6))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if f[2] and f[2] ~= '' then
  local mk = ARGV[4] .. f[2]
  if redis.call('GET', mk) == ARGV[2] then redis.call('DEL', mk) end
end
redis.call('PUBLISH', ARGV[1], cjson.encode({name = ARGV[2], ver = v, stage = 'COMPLETED', worker = f[3] or '', updatedAt = tonumber(ARGV[5]), done = true}))
return 1
`;

// KEYS: op key. ARGV: from queue, to queue.
// Points an unfinished operation at the queue its job moves to; 1 when this caller moves it (so
// two movers of one job never both enqueue it), 0 when done, gone or already moved.
const REQUEUE_LUA = `
local f = redis.call('HMGET', KEYS[1], 'done', 'queue')
if f[1] ~= '0' or f[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'queue', ARGV[2])
return 1
`;

const SCRIPTS: Record<keyof ScriptCommands, { numberOfKeys: number; lua: string }> = {
  submitOp: { numberOfKeys: 4, lua: SUBMIT_LUA },
  deliverJob: { numberOfKeys: 1, lua: DELIVER_LUA },
  updateOp: { numberOfKeys: 1, lua: UPDATE_LUA },
  finishOp: { numberOfKeys: 1, lua: FINISH_LUA },
  requeueOp: { numberOfKeys: 1, lua: REQUEUE_LUA },
};

// ---------------------------------------------------------------------------------------------
// The queue
// ---------------------------------------------------------------------------------------------

/** BullMQ's highest priority is 1 and its lowest 2^21-1; 0 would mean "before every prioritized job". */
export const BULL_PRIORITY_MAX = 2 ** 21 - 1;
const BULL_PRIORITY_ZERO = 2 ** 20;

/**
 * REAPI priority (lower runs first, 0 default, any int32) -> BullMQ priority (1 runs first):
 * `p + 2^20`, clamped to [1, 2^21-1], so REAPI priorities in [-1048575, 1048575] keep their order
 * and anything beyond is treated as the extreme. Never 0 (BullMQ's "no priority" jumps the queue).
 */
export function bullPriority(reapiPriority: number): number {
  const p = Math.trunc(Number.isFinite(reapiPriority) ? reapiPriority : 0) + BULL_PRIORITY_ZERO;
  return Math.min(BULL_PRIORITY_MAX, Math.max(1, p));
}

export interface BullmqJobQueueOptions {
  /** `redis://[[user]:password@]host[:port][/db]`, or `rediss://...` for TLS (as ioredis reads it). */
  redisUrl: string;
  /** Prefix of every key and channel (default 'reapi'). */
  prefix?: string;
  /** Deliveries of one job (worker deaths and handler throws alike) before UNAVAILABLE (default 3). */
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

interface Watcher {
  name: string;
  onUpdate: (s: OperationState) => void;
  /** Last state delivered and its version (-1: none yet). */
  state?: OperationState;
  ver: number;
  stopped: boolean;
  chain: Promise<void>;
}

/** One change, as published on the events channel. */
interface OpEvent {
  name: string;
  ver: number;
  stage: Stage;
  worker: string;
  updatedAt: number;
  done: boolean;
}

/** A queue a worker session takes jobs from. */
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

function decodeOp(h: Record<string, string>): OperationState | undefined {
  if (!h.name || !h.job) return undefined;
  const st: OperationState = {
    name: h.name,
    job: JSON.parse(h.job) as JobSpec,
    stage: (h.stage ?? 'QUEUED') as Stage,
    done: h.done === '1',
    queuedAt: Number(h.queuedAt),
    updatedAt: Number(h.updatedAt),
  };
  if (h.worker) st.worker = h.worker;
  if (h.response !== undefined) st.response = Buffer.from(h.response, 'base64');
  if (h.error) st.error = JSON.parse(h.error) as { code: number; message: string };
  return st;
}

/** The shared queue a personal queue belongs to. */
function sharedOf(personalQueue: string): string {
  const i = personalQueue.lastIndexOf(PERSONAL_INFIX);
  return i < 0 ? personalQueue : personalQueue.slice(0, i);
}

const PERSONAL_INFIX = '-w-';

/** How old a QUEUED operation without a job must be before it is taken for orphaned. */
const ORPHAN_GRACE_MS = 5_000;

/** Personal Queue objects a scheduler keeps open (least recently used closed first). */
const MAX_OPEN_PERSONAL_QUEUES = 256;

/** Locality candidates looked up per submit (best first); only the best live one is used. */
const LOCALITY_CANDIDATES = 8;

function parseRegistration(r: string | null | undefined): { platform: PlatformProperties; concurrency: number; active: number; draining: boolean } | undefined {
  if (!r) return undefined;
  try {
    const reg = JSON.parse(r) as { platform: PlatformProperties; concurrency?: number; active?: number; draining?: boolean };
    return { platform: reg.platform, concurrency: reg.concurrency ?? 1, active: reg.active ?? 0, draining: reg.draining === true };
  } catch {
    return undefined;
  }
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Quit a connection (pending replies first); drop it when that takes over a second. */
async function quit(c: Redis): Promise<void> {
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

/**
 * JobQueue on BullMQ + Redis. A `work()` registration consumes, for each platform it satisfies,
 * the shared platform queue and its own personal queue; it takes a job only while fewer than
 * `concurrency` of its jobs run, personal queues first.
 */
export class BullmqJobQueue implements JobQueue {
  private readonly url: string;
  private readonly prefix: string;
  private readonly maxAttempts: number;
  private readonly lockDurationMs: number;
  private readonly stalledIntervalMs: number;
  private readonly heartbeatMs: number;
  private readonly workerTtlMs: number;
  private readonly doneTtlMs: number;
  private readonly inFlightTtlMs: number;
  private readonly watchPollMs: number;
  private readonly drainDelaySec: number;
  private readonly locality: boolean;
  private readonly localityTtlMs: number;
  private readonly log: Logger;
  /** Tells this instance's lock tokens apart from other instances'. */
  private readonly instanceId = randomUUID();
  private tokens = 0;

  private readonly cmd: CommandClient;
  private sub: Redis | undefined;
  private subReady: Promise<void> | undefined;
  private bull: Redis | undefined;
  private readonly queues = new Map<string, Queue>();
  private readonly watchers = new Map<string, Set<Watcher>>();
  private readonly sessions = new Set<Session>();
  private pollTimer: NodeJS.Timeout | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;
  /** Jobs this instance is routing to a personal queue and has not added yet, by queue. */
  private readonly routing = new Map<string, number>();
  private sweeping: Promise<void> | undefined;
  private closed = false;

  private readonly chEvents: string;
  private readonly chCancel: string;
  private readonly chPlatforms: string;
  private readonly chJobAdded: string;

  constructor(opts: BullmqJobQueueOptions) {
    this.url = opts.redisUrl;
    this.prefix = opts.prefix ?? 'reapi';
    this.maxAttempts = Math.max(1, Math.floor(opts.maxAttempts ?? 3));
    this.lockDurationMs = opts.lockDurationMs ?? 10_000;
    this.stalledIntervalMs = opts.stalledIntervalMs ?? 5_000;
    this.heartbeatMs = opts.heartbeatMs ?? 5_000;
    this.workerTtlMs = opts.workerTtlMs ?? 15_000;
    this.doneTtlMs = opts.doneTtlMs ?? 24 * 3600_000;
    this.inFlightTtlMs = opts.inFlightTtlMs ?? 7 * 24 * 3600_000;
    this.watchPollMs = opts.watchPollMs ?? 10_000;
    this.drainDelaySec = opts.drainDelaySec ?? 5;
    this.locality = opts.locality ?? true;
    this.localityTtlMs = opts.localityTtlMs ?? DEFAULT_LOCALITY_TTL_MS;
    this.log = opts.logger ?? silentLogger;
    // lazyConnect: connections open on first use, as before
    this.cmd = new Redis(this.url, { lazyConnect: true }) as CommandClient;
    for (const [name, def] of Object.entries(SCRIPTS)) this.cmd.defineCommand(name, def);
    this.cmd.on('error', (err: unknown) => this.log.warn({ err: errorMessage(err) }, 'redis connection error'));
    this.chEvents = `${this.prefix}:events`;
    this.chCancel = `${this.prefix}:cancel`;
    this.chPlatforms = `${this.prefix}:platform-added`;
    this.chJobAdded = `${this.prefix}:job-added`;
  }

  // --- keys ---

  private opKey(name: string): string {
    return `${this.prefix}:op:${name}`;
  }
  private get mergePrefix(): string {
    return `${this.prefix}:merge:`;
  }
  private get platformsKey(): string {
    return `${this.prefix}:platforms`;
  }
  private get workersKey(): string {
    return `${this.prefix}:workers`;
  }
  private workerKey(name: string): string {
    return `${this.prefix}:worker:${name}`;
  }
  private get bullPrefix(): string {
    return `${this.prefix}:bull`;
  }
  private get personalKey(): string {
    return `${this.prefix}:personal`;
  }
  private get sweepKey(): string {
    return `${this.prefix}:sweep`;
  }
  private localityKey(key: string): string {
    return `${this.prefix}:loc:${key}`;
  }
  /** A worker's personal queue on a platform (BullMQ queue names may not contain ':'). */
  personalQueueName(sharedQueue: string, worker: string): string {
    return `${sharedQueue}${PERSONAL_INFIX}${createHash('sha256').update(worker).digest('hex').slice(0, 16)}`;
  }
  /** BullMQ queue of a platform (queue names may not contain ':'). */
  queueName(platform: PlatformProperties): string {
    return `q-${createHash('sha256').update(platformKey(platform)).digest('hex').slice(0, 24)}`;
  }

  // --- JobQueue ---

  async submit(job: JobSpec, opts: SubmitOptions = {}): Promise<SubmitResult> {
    this.assertOpen();
    const uuid = randomUUID();
    const name = `operations/${uuid}`;
    const queue = this.queueName(job.platform);
    const mergeHash = job.doNotCache
      ? ''
      : createHash('sha256')
          .update(`${job.instanceName}\n${digestKey(job.actionDigest)}\n${platformKey(job.platform)}`)
          .digest('hex');
    // Routing is decided before the operation exists: once it is mergeable, only the add to
    // BullMQ stands between it and a worker (a scheduler dying in between strands it).
    let routedTo = opts.worker;
    let reserved = false;
    if (routedTo === undefined && this.locality && job.localityKeys?.length) {
      try {
        routedTo = await this.route(job, queue);
        reserved = routedTo !== undefined;
      } catch (err) {
        this.log.warn({ err: errorMessage(err), operation: name }, 'locality lookup failed; using the shared queue');
      }
    }
    const target = routedTo ? this.personalQueueName(queue, routedTo) : queue;
    try {
      const now = String(Date.now());
      const fields: ScriptArg[] = [
        'name', name,
        'job', JSON.stringify(job),
        'stage', 'QUEUED',
        'done', '0',
        'queuedAt', now,
        'updatedAt', now,
        'queue', target,
        'jobId', uuid,
        'mergeKey', mergeHash,
        'deliveries', '0',
        'ver', '0',
      ];
      const opKey = this.opKey(name);
      const r = await this.cmd.submitOp(
        opKey,
        mergeHash ? this.mergePrefix + mergeHash : opKey,
        this.platformsKey,
        this.personalKey,
        name,
        mergeHash ? '1' : '0',
        `${this.prefix}:op:`,
        this.inFlightTtlMs,
        queue,
        JSON.stringify(job.platform),
        routedTo ? target : '',
        routedTo ?? '',
        ...fields,
      );
      if (r[0]) {
        await this.repairIfOrphaned(r[0]).catch((err: unknown) =>
          this.log.warn({ err: errorMessage(err), operation: r[0] }, 'could not check the merged operation'),
        );
        return { operationName: r[0], merged: true };
      }
      if (r[1] === 1) await this.cmd.publish(this.chPlatforms, queue);
      try {
        await this.addJob(target, uuid, name, job.priority);
      } catch (err) {
        await this.finish(name, { error: { code: Status.UNAVAILABLE, message: `could not enqueue: ${errorMessage(err)}` } }).catch(() => {});
        throw err;
      }
    } finally {
      if (reserved) this.release(target);
    }
    this.ensureSweeper();
    await this.cmd.publish(this.chJobAdded, target);
    if (routedTo) {
      // It may have died since we looked, and a sweep may have missed this job: move it ourselves.
      try {
        if (!(await this.cmd.exists(this.workerKey(routedTo)))) await this.moveToShared(target, uuid, name, bullPriority(job.priority));
      } catch (err) {
        this.log.warn({ err: errorMessage(err), operation: name }, 'could not check the routed worker; the sweep will');
      }
    }
    return { operationName: name, merged: false };
  }

  async getOperation(name: string): Promise<OperationState | undefined> {
    this.assertOpen();
    return decodeOp(await this.cmd.hgetall(this.opKey(name)));
  }

  watch(name: string, onUpdate: (state: OperationState) => void): () => void {
    this.assertOpen();
    const w: Watcher = { name, onUpdate, ver: -1, stopped: false, chain: Promise.resolve() };
    let set = this.watchers.get(name);
    if (!set) this.watchers.set(name, (set = new Set()));
    set.add(w);
    this.ensurePoll();
    const stop = () => {
      w.stopped = true;
      const s = this.watchers.get(name);
      s?.delete(w);
      if (s && s.size === 0) this.watchers.delete(name);
    };
    this.repairIfOrphaned(name).catch((err: unknown) =>
      this.log.warn({ err: errorMessage(err), operation: name }, 'could not check the watched operation'),
    );
    this.ensureSub().then(
      () => this.refresh(w),
      (err) => this.log.warn({ err: errorMessage(err), operation: name }, 'could not subscribe to operation events'),
    );
    return stop;
  }

  /**
   * A scheduler that dies between creating an operation and adding its job leaves it QUEUED with
   * no job anywhere; clients that merge into it or wait for it would wait forever. An operation
   * found so (and older than a moment, so its own submitter is not racing us) gets its job again.
   * Adding with the same job id in the same queue is a no-op when the job does exist after all.
   */
  private async repairIfOrphaned(name: string): Promise<void> {
    const h = await this.cmd.hgetall(this.opKey(name));
    if (!h.name || h.done !== '0' || h.stage !== 'QUEUED' || !h.queue || !h.jobId) return;
    if (Date.now() - Number(h.queuedAt ?? 0) < ORPHAN_GRACE_MS) return;
    if ((await this.queue(h.queue).getJobState(h.jobId)) !== 'unknown') return;
    const job = JSON.parse(h.job ?? '{}') as Partial<JobSpec>;
    this.log.warn({ operation: name, queue: h.queue }, 'operation was queued but its job was never added (its scheduler died); adding it again');
    if (h.queue !== sharedOf(h.queue)) {
      await this.moveToShared(h.queue, h.jobId, name, bullPriority(job.priority ?? 0));
      return;
    }
    await this.addJob(h.queue, h.jobId, name, job.priority ?? 0);
    await this.cmd.publish(this.chJobAdded, h.queue);
  }

  async cancel(name: string): Promise<boolean> {
    this.assertOpen();
    const h = await this.cmd.hgetall(this.opKey(name));
    if (!h.name || h.done !== '0') return false;
    if (h.queue && h.jobId) {
      try {
        await this.queue(h.queue).remove(h.jobId); // 0 when a worker holds it (locked)
      } catch (err) {
        this.log.debug({ err: errorMessage(err), operation: name }, 'could not remove job');
      }
    }
    const ok = await this.finish(name, { error: { code: Status.CANCELLED, message: `operation ${name} was cancelled` } });
    await this.cmd.publish(this.chCancel, name);
    return ok;
  }

  async unsatisfiable(platform: PlatformProperties): Promise<string[]> {
    this.assertOpen();
    return unsatisfiableProperties((await this.liveWorkers()).map((w) => w.platform), platform);
  }

  async stats(): Promise<QueueStats> {
    this.assertOpen();
    const all = await this.cmd.hgetall(this.platformsKey);
    const platforms: QueueStats['platforms'] = [];
    const byQueue = new Map<string, QueueStats['platforms'][number]>();
    for (const [queue, json] of Object.entries(all)) {
      let platform: PlatformProperties;
      try {
        platform = JSON.parse(json) as PlatformProperties;
      } catch {
        continue;
      }
      const c = await this.queue(queue).getJobCounts('waiting', 'prioritized', 'delayed', 'active');
      const p = { platform, waiting: (c.waiting ?? 0) + (c.prioritized ?? 0) + (c.delayed ?? 0), active: c.active ?? 0 };
      platforms.push(p);
      byQueue.set(queue, p);
    }
    // jobs routed to one worker count for their platform too
    for (const pq of Object.keys(await this.cmd.hgetall(this.personalKey))) {
      const p = byQueue.get(sharedOf(pq));
      if (!p) continue;
      const c = await this.queue(pq).getJobCounts('waiting', 'prioritized', 'delayed', 'active');
      p.waiting += (c.waiting ?? 0) + (c.prioritized ?? 0) + (c.delayed ?? 0);
      p.active += c.active ?? 0;
    }
    return { platforms, workers: await this.liveWorkers() };
  }

  async freeWorkers(platform: PlatformProperties, exclude: string): Promise<string[]> {
    this.assertOpen();
    const queue = this.queueName(platform);
    const names = (await this.cmd.zrange(this.workersKey, 0, -1)).filter((n) => n !== exclude);
    const regs = names.length ? await this.cmd.mget(names.map((n) => this.workerKey(n))) : [];
    const free: Array<{ name: string; free: number }> = [];
    for (const [i, r] of regs.entries()) {
      const reg = parseRegistration(r);
      const name = names[i] ?? '';
      if (!reg || reg.draining || !satisfies(reg.platform, platform) || reg.active >= reg.concurrency) continue;
      const counts = await this.queue(this.personalQueueName(queue, name)).getJobCounts('waiting', 'prioritized', 'delayed');
      const waiting = (counts.waiting ?? 0) + (counts.prioritized ?? 0) + (counts.delayed ?? 0);
      if (reg.active + waiting < reg.concurrency) free.push({ name, free: reg.concurrency - reg.active - waiting });
    }
    return free.sort((a, b) => b.free - a.free).map((w) => w.name);
  }

  /** Registered workers whose registration has not expired. */
  private async liveWorkers(): Promise<QueueStats['workers']> {
    // Liveness is the registration key's Redis-side expiry (no clock skew); the zset only lists names.
    const names = await this.cmd.zrange(this.workersKey, 0, -1);
    const regs = names.length ? await this.cmd.mget(names.map((n) => this.workerKey(n))) : [];
    const live: QueueStats['workers'] = [];
    const dead: string[] = [];
    for (const [i, r] of regs.entries()) {
      if (!r) {
        dead.push(names[i] ?? '');
        continue;
      }
      try {
        const reg = JSON.parse(r) as { platform: PlatformProperties; concurrency?: number };
        live.push({ name: names[i] ?? '', platform: reg.platform, concurrency: reg.concurrency ?? 1 });
      } catch {
        // not ours
      }
    }
    if (dead.length) await this.cmd.zrem(this.workersKey, ...dead);
    return live;
  }

  async work(worker: WorkerRegistration, handler: JobHandler): Promise<() => Promise<void>> {
    this.assertOpen();
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
      await this.ensureSub();
      await this.heartbeat(s);
      await this.rescan(s);
    } catch (err) {
      await this.stopSession(s, true);
      throw err;
    }
    s.loop = this.fetchLoop(s);
    s.timer = setInterval(() => {
      this.heartbeat(s).catch((err) => this.log.warn({ err: errorMessage(err), worker: reg.name }, 'worker heartbeat failed'));
      this.rescan(s).catch((err) => this.log.warn({ err: errorMessage(err), worker: reg.name }, 'platform rescan failed'));
    }, this.heartbeatMs);
    s.timer.unref();
    this.ensureSweeper();
    return () => this.stopSession(s, false);
  }

  /**
   * Stop this instance: workers stop at once (running handlers see their signal aborted and their
   * jobs are re-delivered elsewhere once the lock expires), every connection quits. Operation
   * state stays in Redis for other instances.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.pollTimer = undefined;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
    this.watchers.clear();
    await Promise.allSettled([...this.sessions].map((s) => this.stopSession(s, true)));
    await this.sweeping?.catch(() => {});
    await Promise.allSettled([...this.queues.values()].map((q) => q.close()));
    this.queues.clear();
    // the queues leave the connection they share open: it is ours
    await Promise.allSettled([this.bull, this.sub, this.cmd].map((c) => c && quit(c)));
    this.bull = undefined;
    this.sub = undefined;
    this.subReady = undefined;
  }

  // --- internals: state ---

  private assertOpen(): void {
    if (this.closed) throw new Error('job queue is closed');
  }

  private async finish(name: string, result: { response?: Buffer; error?: { code: number; message: string } }): Promise<boolean> {
    const fields: ScriptArg[] = [];
    if (result.response) fields.push('response', result.response.toString('base64'));
    if (result.error) fields.push('error', JSON.stringify(result.error));
    const r = await this.cmd.finishOp(this.opKey(name), this.chEvents, name, this.doneTtlMs, this.mergePrefix, Date.now(), ...fields);
    return r === 1;
  }

  private async update(name: string, stage: Stage, worker: string): Promise<boolean> {
    const r = await this.cmd.updateOp(this.opKey(name), this.chEvents, name, stage, worker, Date.now());
    return r === 1;
  }

  /** The operation and its version, for watchers. */
  private async readOp(name: string): Promise<{ state: OperationState; ver: number } | undefined> {
    const h = await this.cmd.hgetall(this.opKey(name));
    const state = decodeOp(h);
    return state && { state, ver: Number(h.ver ?? 0) };
  }

  private queue(name: string): Queue {
    let q = this.queues.get(name);
    const personal = name.includes(PERSONAL_INFIX);
    if (q && personal) {
      // most recently used last
      this.queues.delete(name);
      this.queues.set(name, q);
    }
    if (!q) {
      q = new Queue(name, { connection: this.bullClient(), prefix: this.bullPrefix });
      q.on('error', (err) => this.log.warn({ err: errorMessage(err), queue: name }, 'queue error'));
      this.queues.set(name, q);
      if (personal) {
        const open = [...this.queues.keys()].filter((n) => n.includes(PERSONAL_INFIX));
        for (const old of open.slice(0, Math.max(0, open.length - MAX_OPEN_PERSONAL_QUEUES))) this.dropQueue(old);
      }
    }
    return q;
  }

  /** Close and forget a Queue object (its jobs stay in Redis). */
  private dropQueue(name: string): void {
    const q = this.queues.get(name);
    if (!q) return;
    this.queues.delete(name);
    q.close().catch(() => {});
  }

  private async addJob(queue: string, jobId: string, operationName: string, reapiPriority: number): Promise<void> {
    await this.queue(queue).add(
      'action',
      { operationName },
      {
        jobId,
        priority: bullPriority(reapiPriority),
        attempts: this.maxAttempts + 1,
        removeOnComplete: true,
        removeOnFail: true,
      },
    );
  }

  /** The connection BullMQ queues share; workers duplicate it (so it must not retry-limit commands). */
  private bullClient(): Redis {
    if (!this.bull) {
      this.bull = new Redis(this.url, { maxRetriesPerRequest: null, lazyConnect: true });
      this.bull.on('error', (err: unknown) => this.log.warn({ err: errorMessage(err) }, 'redis connection error'));
    }
    return this.bull;
  }

  // --- internals: pub/sub and watching ---

  private ensureSub(): Promise<void> {
    if (this.subReady) return this.subReady;
    const channels = [this.chEvents, this.chCancel, this.chPlatforms, this.chJobAdded];
    const sub = new Redis(this.url, { lazyConnect: true });
    let subscribed = false;
    sub.on('message', (channel: string, message: string) => this.onMessage(channel, message));
    sub.on('error', (err: unknown) => this.log.warn({ err: errorMessage(err) }, 'pub/sub connection error'));
    sub.on('ready', () => {
      if (!subscribed || this.closed || this.sub !== sub) return;
      // A reconnect: ioredis has just resubscribed by itself. Once a SUBSCRIBE round trip on this
      // connection says that took effect, catch up on what was published while we were away.
      this.log.warn('pub/sub connection restored; catching up');
      sub.subscribe(...channels).then(
        () => {
          if (this.closed || this.sub !== sub) return;
          for (const set of this.watchers.values()) for (const w of set) this.refresh(w);
          for (const s of this.sessions) {
            this.rescan(s).catch(() => {});
            this.poke(s);
          }
        },
        (err: unknown) => this.log.warn({ err: errorMessage(err) }, 'could not resubscribe'),
      );
    });
    this.sub = sub;
    const ready = sub.subscribe(...channels).then(() => {
      subscribed = true;
    });
    this.subReady = ready;
    ready.catch(() => {
      if (this.sub === sub) {
        this.sub = undefined;
        this.subReady = undefined;
        sub.disconnect();
      }
    });
    return ready;
  }

  private onMessage(channel: string, message: string): void {
    if (channel === this.chEvents) {
      let ev: OpEvent;
      try {
        ev = JSON.parse(message) as OpEvent;
      } catch {
        return;
      }
      const set = this.watchers.get(ev.name);
      if (set) for (const w of set) this.refresh(w, ev);
    } else if (channel === this.chCancel) {
      for (const s of this.sessions) s.running.get(message)?.abort(new Error(`operation ${message} was cancelled`));
    } else if (channel === this.chPlatforms) {
      for (const s of this.sessions) {
        this.rescan(s).catch((err) => this.log.warn({ err: errorMessage(err) }, 'platform rescan failed'));
      }
    } else if (channel === this.chJobAdded) {
      for (const s of this.sessions) if (s.consumers.has(message)) this.poke(s);
    }
  }

  /**
   * Report a change to a watcher, in order and once per version: from the event itself while the
   * operation runs, re-reading the hash for the first state, for the final one (response, error)
   * and when there is no event (poll, resubscribe). Stops the watcher after done.
   */
  private refresh(w: Watcher, ev?: OpEvent): void {
    w.chain = w.chain.then(async () => {
      if (w.stopped || this.closed) return;
      if (ev && ev.ver <= w.ver) return;
      let next: { state: OperationState; ver: number } | undefined;
      if (ev && !ev.done && w.state) {
        const state: OperationState = { ...w.state, stage: ev.stage, updatedAt: ev.updatedAt };
        if (ev.worker) state.worker = ev.worker;
        else delete state.worker;
        next = { state, ver: ev.ver };
      } else {
        try {
          next = await this.readOp(w.name);
        } catch (err) {
          if (!this.closed) this.log.warn({ err: errorMessage(err), operation: w.name }, 'could not read operation');
          return;
        }
      }
      if (!next || w.stopped || next.ver <= w.ver) return;
      w.state = next.state;
      w.ver = next.ver;
      if (next.state.done) {
        w.stopped = true;
        const set = this.watchers.get(w.name);
        set?.delete(w);
        if (set && set.size === 0) this.watchers.delete(w.name);
      }
      try {
        w.onUpdate({ ...next.state });
      } catch (err) {
        this.log.warn({ err: errorMessage(err), operation: w.name }, 'operation watcher threw');
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
        // Someone waits for it: make sure it is not an orphan of a dead scheduler.
        this.repairIfOrphaned(name).catch(() => {});
      }
    }, this.watchPollMs);
    this.pollTimer.unref();
  }

  // --- internals: locality ---

  /**
   * The worker this job should go to: the live one satisfying its platform that ran the most of
   * its locality keys lately (then: the most recent), unless it already has `concurrency` jobs
   * waiting on its personal queue. Undefined: the shared queue.
   */
  private async route(job: JobSpec, sharedQueue: string): Promise<string | undefined> {
    const keys = localityKeysOf(job.localityKeys);
    if (keys.length === 0) return undefined;
    const p = this.cmd.pipeline();
    for (const k of keys) p.zrange(this.localityKey(k), 0, -1, 'WITHSCORES');
    const replies = (await p.exec()) ?? [];
    const hits = replies.map(([err, v]) => {
      const flat = !err && Array.isArray(v) ? (v as string[]) : [];
      const pairs: Array<[string, number]> = [];
      for (let i = 0; i + 1 < flat.length; i += 2) pairs.push([flat[i]!, Number(flat[i + 1])]);
      return pairs;
    });
    const ranked = rankLocality(hits, Date.now() - this.localityTtlMs).slice(0, LOCALITY_CANDIDATES);
    if (ranked.length === 0) return undefined;
    const regs = await this.cmd.mget(ranked.map((c) => this.workerKey(c.worker)));
    for (const [i, c] of ranked.entries()) {
      const reg = parseRegistration(regs[i]);
      if (!reg || reg.draining || !satisfies(reg.platform, job.platform)) continue;
      // Reserve before counting, so a burst of submits does not all see the queue empty; the
      // caller releases the reservation once the job is added (or not).
      const pq = this.personalQueueName(sharedQueue, c.worker);
      this.routing.set(pq, (this.routing.get(pq) ?? 0) + 1);
      let routed = false;
      try {
        const counts = await this.queue(pq).getJobCounts('waiting', 'prioritized', 'delayed');
        const waiting = (counts.waiting ?? 0) + (counts.prioritized ?? 0) + (counts.delayed ?? 0) + (this.routing.get(pq) ?? 1) - 1;
        routed = waiting < reg.concurrency;
        return routed ? c.worker : undefined;
      } finally {
        if (!routed) this.release(pq);
      }
    }
    return undefined;
  }

  private release(personalQueue: string): void {
    const n = (this.routing.get(personalQueue) ?? 1) - 1;
    if (n > 0) this.routing.set(personalQueue, n);
    else this.routing.delete(personalQueue);
  }

  /** Remember that `worker` just ran a job with these locality keys. */
  private async recordLocality(job: JobSpec, worker: string): Promise<void> {
    const keys = localityKeysOf(job.localityKeys);
    if (!this.locality || keys.length === 0) return;
    const now = Date.now();
    const p = this.cmd.pipeline();
    for (const k of keys) {
      const key = this.localityKey(k);
      p.zadd(key, now, worker)
        .zremrangebyscore(key, '-inf', now - this.localityTtlMs)
        .zremrangebyrank(key, 0, -(LOCALITY_WORKERS_PER_KEY + 1))
        .pexpire(key, this.localityTtlMs);
    }
    await p.exec();
  }

  /**
   * Move a job from a personal queue to its shared queue, unless it is locked (its worker runs
   * it). True when it is no longer in the personal queue (moved, finished, or gone); the
   * operation hash decides who re-enqueues it, so two movers never both do.
   */
  private async moveToShared(personalQueue: string, jobId: string, operationName: string | undefined, bullPrio: number | undefined): Promise<boolean> {
    const pq = this.queue(personalQueue);
    const state = await pq.getJobState(jobId);
    if (state !== 'unknown' && (await pq.remove(jobId)) !== 1) return false;
    if (!operationName) return true;
    const shared = sharedOf(personalQueue);
    if ((await this.cmd.requeueOp(this.opKey(operationName), personalQueue, shared)) !== 1) return true;
    await this.queue(shared).add(
      'action',
      { operationName },
      { jobId, priority: bullPrio ?? bullPriority(0), attempts: this.maxAttempts + 1, removeOnComplete: true, removeOnFail: true },
    );
    await this.cmd.publish(this.chJobAdded, shared);
    this.log.debug({ operation: operationName, from: personalQueue, to: shared }, 'moved a job to the shared queue');
    return true;
  }

  /** Move every job of a personal queue that is not locked to the shared queue; true when none is left. */
  private async drainPersonal(personalQueue: string): Promise<boolean> {
    const jobs = await this.queue(personalQueue).getJobs(['waiting', 'prioritized', 'delayed', 'active']);
    let left = 0;
    for (const job of jobs) {
      if (!job?.id) continue;
      const name = (job.data as { operationName?: unknown } | undefined)?.operationName;
      if (!(await this.moveToShared(personalQueue, job.id, typeof name === 'string' ? name : undefined, job.opts.priority))) left++;
    }
    return left === 0;
  }

  private ensureSweeper(): void {
    if (this.sweepTimer || this.closed) return;
    this.sweepTimer = setInterval(() => void this.sweep(), this.heartbeatMs);
    this.sweepTimer.unref();
  }

  /**
   * Move the jobs of dead workers' personal queues to the shared queues. At most one instance
   * sweeps per heartbeat period (the first to take `<p>:sweep`); moves are safe to repeat.
   */
  private sweep(): Promise<void> {
    if (this.sweeping || this.closed) return this.sweeping ?? Promise.resolve();
    this.sweeping = (async () => {
      try {
        const entries = await this.cmd.hgetall(this.personalKey);
        const names = [...new Set(Object.values(entries))];
        if (names.length === 0) return;
        const regs = await this.cmd.mget(names.map((n) => this.workerKey(n)));
        const dead = new Set(names.filter((_, i) => !regs[i]));
        if (dead.size === 0) return;
        if ((await this.cmd.set(this.sweepKey, this.instanceId, 'PX', this.heartbeatMs, 'NX')) !== 'OK') return;
        for (const [pq, worker] of Object.entries(entries)) {
          if (this.closed) return;
          if (dead.has(worker)) await this.retirePersonal(pq, worker);
        }
      } catch (err) {
        if (!this.closed) this.log.warn({ err: errorMessage(err) }, 'sweeping dead workers failed');
      }
    })().finally(() => {
      this.sweeping = undefined;
    });
    return this.sweeping;
  }

  /** Empty a dead worker's personal queue and forget it (unless a job is still locked there). */
  private async retirePersonal(pq: string, worker: string): Promise<void> {
    if (!(await this.drainPersonal(pq))) return; // a job still locked: next time
    await this.cmd.hdel(this.personalKey, pq);
    // A job added since (its submitter saw the worker live) keeps the entry; the submitter also
    // moves it itself once it sees the worker dead.
    const q = this.queue(pq);
    const c = await q.getJobCounts('waiting', 'prioritized', 'delayed', 'active');
    if (Object.values(c).some((n) => n > 0)) {
      await this.cmd.hset(this.personalKey, pq, worker);
      return;
    }
    if (await this.cmd.exists(this.workerKey(worker))) return; // it came back
    // BullMQ's bookkeeping of the empty queue (events stream, counters); never a job
    const k = q.keys as Record<string, string>;
    const bookkeeping = ['events', 'meta', 'id', 'pc', 'marker', 'stalled-check', 'stalled', 'limiter']
      .map((t) => k[t])
      .filter((x): x is string => !!x);
    if (bookkeeping.length) await this.cmd.del(...bookkeeping);
    this.dropQueue(pq);
    this.log.info({ worker, queue: pq }, 'retired the personal queue of a dead worker');
  }

  // --- internals: workers ---

  private async heartbeat(s: Session): Promise<void> {
    if (s.stopping) return;
    const now = Date.now();
    const m = this.cmd
      .multi()
      .zadd(this.workersKey, now, s.reg.name)
      .set(this.workerKey(s.reg.name), this.registration(s), 'PX', this.workerTtlMs);
    // the sweep's list of personal queues (a sweep may have dropped them while we were away)
    for (const c of s.consumers.values()) if (c.personal) m.hset(this.personalKey, c.queue, s.reg.name);
    await m.exec();
  }

  /** A worker's registration record: what it offers, and how busy it is (for freeWorkers). */
  private registration(s: Session): string {
    return JSON.stringify({ platform: s.reg.platform, concurrency: s.reg.concurrency, active: s.active });
  }

  /** Publish a worker's load when a job starts or ends, between heartbeats (best effort). */
  private publishLoad(s: Session): void {
    if (s.stopping) return;
    this.cmd
      .set(this.workerKey(s.reg.name), this.registration(s), 'PX', this.workerTtlMs, 'XX')
      .catch((err: unknown) => this.log.debug({ err: errorMessage(err), worker: s.reg.name }, 'could not publish worker load'));
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
        const all = await this.cmd.hgetall(this.platformsKey);
        for (const [queue, json] of Object.entries(all)) {
          if (s.stopping || s.consumers.has(queue)) continue;
          let platform: PlatformProperties;
          try {
            platform = JSON.parse(json) as PlatformProperties;
          } catch {
            continue;
          }
          if (!satisfies(s.reg.platform, platform)) continue;
          const personal = this.personalQueueName(queue, s.reg.name);
          await this.cmd.hset(this.personalKey, personal, s.reg.name);
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
    const w = new Worker(queue, null, {
      connection: this.bullClient(),
      prefix: this.bullPrefix,
      autorun: false,
      lockDuration: this.lockDurationMs,
      stalledInterval: this.stalledIntervalMs,
      // our own delivery count decides; BullMQ must never give up first
      maxStalledCount: this.maxAttempts + 1,
      drainDelay: this.drainDelaySec,
      removeOnComplete: { count: 0 },
      removeOnFail: { count: 0 },
    });
    w.on('error', (err) => {
      if (!s.stopping) this.log.warn({ err: errorMessage(err), worker: s.reg.name, queue }, 'BullMQ worker error');
    });
    // a dead worker's job is back in the queue: wake whoever can take it
    w.on('stalled', () => {
      this.cmd.publish(this.chJobAdded, queue).catch(() => {});
    });
    w.startStalledCheckTimer().catch((err) => this.log.warn({ err: errorMessage(err), queue }, 'could not start the stalled-job check'));
    s.consumers.set(queue, { queue, shared, personal, worker: w });
    this.log.debug({ worker: s.reg.name, queue, personal }, 'worker consumes queue');
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
        if (s.fetchFailing) this.log.info({ worker: s.reg.name }, 'taking jobs again');
        s.fetchFailing = false;
      } catch (err) {
        if (s.stopping) break;
        if (!s.fetchFailing) this.log.warn({ err: errorMessage(err), worker: s.reg.name }, 'could not take a job; retrying');
        s.fetchFailing = true;
        await this.sleep(s, 1000);
        continue;
      }
      if (got) this.startJob(s, got.c, got.job, got.token);
      else if (!s.dirty && !s.stopping) await this.sleep(s, this.drainDelaySec * 1000);
    }
  }

  private async fetchOne(s: Session): Promise<{ c: Consumer; job: Job; token: string } | undefined> {
    const all = [...s.consumers.values()];
    const turn = s.turn++;
    const rotate = (cs: Consumer[]) => (cs.length ? cs.map((_, i) => cs[(i + turn) % cs.length]!) : cs);
    for (const c of [...rotate(all.filter((c) => c.personal)), ...rotate(all.filter((c) => !c.personal))]) {
      if (s.stopping) return undefined;
      const token = `${this.instanceId}:${++this.tokens}`;
      const job = (await c.worker.getNextJob(token, { block: false })) as Job | undefined;
      if (job) return { c, job, token };
    }
    return undefined;
  }

  /** Run a taken job in the background, renewing its lock until it is finished. */
  private startJob(s: Session, c: Consumer, job: Job, token: string): void {
    s.active++;
    this.publishLoad(s);
    const renew = setInterval(
      () => {
        if (s.forced) return;
        job.extendLock(token, this.lockDurationMs).catch((err: unknown) => this.log.debug({ err: errorMessage(err), queue: c.queue }, 'could not renew a job lock'));
      },
      Math.max(50, Math.floor(this.lockDurationMs / 3)),
    );
    const p: Promise<void> = this.runJob(s, c, job, token)
      .catch((err: unknown) => {
        if (!s.forced && !this.closed) this.log.warn({ err: errorMessage(err), worker: s.reg.name, queue: c.queue }, 'could not finish a job in its queue');
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
      if ((await this.cmd.requeueOp(this.opKey(name), c.queue, c.shared)) === 1) {
        await this.queue(c.shared).add(
          'action',
          { operationName: name },
          { jobId: job.id, priority: job.opts.priority, attempts: this.maxAttempts + 1, removeOnComplete: true, removeOnFail: true },
        );
      }
      await job.moveToCompleted(undefined, token, false);
      await this.cmd.publish(this.chJobAdded, c.shared);
    } else {
      await job.moveToFailed(outcome.retry, token, false); // BullMQ puts it back in the queue
      await this.cmd.publish(this.chJobAdded, c.queue);
    }
  }

  private async stopSession(s: Session, force: boolean): Promise<void> {
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
          await this.drainPersonal(c.queue);
        } catch (err) {
          if (!this.closed) this.log.warn({ err: errorMessage(err), queue: c.queue }, 'could not move waiting jobs to the shared queue; a sweep will');
        }
      }
    };
    // While Redis is unreachable, do not wait out ioredis' reconnect attempts: the registration
    // expires after workerTtlMs anyway, and then a sweep moves the jobs routed to us.
    const ready = this.cmd.status === 'ready';
    if (ready) {
      // Still registered (platforms stay satisfiable) but no longer routed to; the jobs waiting
      // for us go to the others now.
      const draining = JSON.stringify({ platform: s.reg.platform, concurrency: s.reg.concurrency, draining: true });
      await this.cmd.set(this.workerKey(s.reg.name), draining, 'PX', this.workerTtlMs).catch(() => {});
      await handOver();
    }
    // graceful: let running jobs finish; forced: they are abandoned (locks expire, re-delivered)
    if (!force) await Promise.allSettled([...s.inflight]);
    await Promise.allSettled(consumers.map((c) => c.worker.close(force)));
    s.consumers.clear();
    this.sessions.delete(s);
    const cleanup = Promise.allSettled([this.cmd.zrem(this.workersKey, s.reg.name), this.cmd.del(this.workerKey(s.reg.name))]);
    if (this.cmd.status === 'ready') {
      await cleanup;
      await handOver(); // anything routed to us meanwhile
    }
  }

  private exhausted(job: JobSpec, deliveries: number, lastWorker: string, lastError?: string): string {
    const what = `action ${digestKey(job.actionDigest)} was delivered ${deliveries} times and its worker died each time; last worker: ${lastWorker || 'unknown'}`;
    return lastError === undefined ? what : `${what} (it failed: ${lastError})`;
  }

  /**
   * One delivery of one job. 'done': finished with it in BullMQ (completed, cancelled, or given
   * up); 'abandon': this instance is closing mid-job, leave it locked so it is re-delivered
   * elsewhere once the lock expires, as if this worker had died; `retry`: the handler threw and
   * attempts are left.
   */
  private async process(s: Session, job: Job): Promise<'done' | 'abandon' | { retry: Error }> {
    const name = (job.data as { operationName?: unknown } | undefined)?.operationName;
    if (typeof name !== 'string') return 'done';
    if (s.forced) return 'abandon';
    const d = await this.cmd.deliverJob(this.opKey(name), s.reg.name, Date.now(), this.chEvents, name);
    if (d[0] !== 'ok') return 'done'; // cancelled, or expired
    const deliveries = Number(d[1]);
    const spec = JSON.parse(String(d[2])) as JobSpec;
    const previousWorker = String(d[3] ?? '');
    const queuedAt = Number(d[4]) || undefined;
    if (deliveries > this.maxAttempts) {
      await this.finish(name, {
        error: { code: Status.UNAVAILABLE, message: this.exhausted(spec, deliveries - 1, previousWorker) },
      });
      return 'done';
    }
    const controller = new AbortController();
    s.running.set(name, controller);
    try {
      if (s.forced) return 'abandon';
      // a cancel published before we were listening for it
      if ((await this.cmd.hget(this.opKey(name), 'done')) !== '0') return 'done';
      const ctx: JobContext = {
        operationName: name,
        job: spec,
        attempt: deliveries - 1,
        queuedAt,
        signal: controller.signal,
        markExecuting: async (worker: string) => {
          if (controller.signal.aborted || s.forced) return;
          await this.update(name, 'EXECUTING', worker);
        },
      };
      let response: Buffer;
      try {
        response = await s.handler(ctx);
      } catch (err) {
        if (s.forced) return 'abandon';
        if (controller.signal.aborted) return 'done';
        if ((await this.cmd.hget(this.opKey(name), 'done')) !== '0') return 'done';
        const message = errorMessage(err);
        this.log.warn({ operation: name, worker: s.reg.name, attempt: deliveries - 1, err: message }, 'job handler failed');
        if (deliveries >= this.maxAttempts) {
          await this.finish(name, {
            error: { code: Status.UNAVAILABLE, message: this.exhausted(spec, deliveries, s.reg.name, message) },
          });
          return 'done';
        }
        await this.update(name, 'QUEUED', '');
        return { retry: err instanceof Error ? err : new Error(message) };
      }
      if (s.forced) return 'abandon';
      if (controller.signal.aborted) return 'done';
      // before the result is out, so a follow-up job already finds this worker
      await this.recordLocality(spec, s.reg.name).catch((err: unknown) =>
        this.log.warn({ err: errorMessage(err), operation: name }, 'could not record locality'),
      );
      await this.finish(name, { response });
      return 'done';
    } finally {
      s.running.delete(name);
    }
  }
}
