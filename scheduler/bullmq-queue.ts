// The BullMQ JobQueue: a fleet of schedulers and workers sharing one Redis.
//
// - One BullMQ queue per platform (`q-<sha256(platformKey)>`); a worker runs one BullMQ Worker per
//   known platform it satisfies, discovering new platforms through a Redis hash and pub/sub.
// - Operation state lives in a Redis hash per operation (kept `doneTtlMs` after done), so any
//   scheduler (a restarted one too) can answer getOperation / watch; every change is announced
//   on a pub/sub channel.
// - Worker death: BullMQ's stalled-job recovery delivers the job again; we count deliveries in
//   the operation hash and give up with UNAVAILABLE after `maxAttempts`.
//
// Key layout (prefix `reapi` by default):
//   <p>:op:<operation name>   hash   name, job (JSON JobSpec), stage, done 0|1, queuedAt, updatedAt,
//                                    worker, response (base64), error (JSON), queue, jobId,
//                                    mergeKey, deliveries, lastWorker, ver (bumped on each change)
//   <p>:merge:<sha256>        string operation name of the in-flight mergeable action
//   <p>:platforms             hash   BullMQ queue name -> platform (JSON)
//   <p>:workers               zset   worker name -> last heartbeat (ms); an index, pruned lazily
//   <p>:worker:<name>         string registration (JSON {platform, concurrency}), PX workerTtlMs:
//                                    a worker counts as live while this key exists
//   <p>:bull:<queue>:...      BullMQ's own keys
// Channels: <p>:events (JSON {name, ver, stage, worker, updatedAt, done} of each change),
//           <p>:cancel (operation name to abort),
//           <p>:platform-added (name of a new platform queue).
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
  SubmitResult,
  WorkerRegistration,
} from './job-queue.ts';
import { platformKey, satisfies, unsatisfiableProperties } from './platform.ts';

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
}

type CommandClient = Redis & ScriptCommands;

// KEYS: op key, merge key (op key again when not mergeable), platforms hash.
// ARGV: op name, '1' when mergeable, op key prefix, ttl ms, queue name, platform JSON, fields...
const SUBMIT_LUA = `
if ARGV[2] == '1' then
  local existing = redis.call('GET', KEYS[2])
  if existing and redis.call('HGET', ARGV[3] .. existing, 'done') == '0' then
    return {existing, 0}
  end
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[4])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local added = redis.call('HSETNX', KEYS[3], ARGV[5], ARGV[6])
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

const SCRIPTS: Record<keyof ScriptCommands, { numberOfKeys: number; lua: string }> = {
  submitOp: { numberOfKeys: 3, lua: SUBMIT_LUA },
  deliverJob: { numberOfKeys: 1, lua: DELIVER_LUA },
  updateOp: { numberOfKeys: 1, lua: UPDATE_LUA },
  finishOp: { numberOfKeys: 1, lua: FINISH_LUA },
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
  /** Seconds an idle BullMQ worker blocks waiting for a job (default 5). */
  drainDelaySec?: number;
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

class Slots {
  private waiters: (() => void)[] = [];
  constructor(private free: number) {}
  acquire(): Promise<void> {
    if (this.free > 0) {
      this.free--;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiters.push(resolve));
  }
  release(): void {
    const w = this.waiters.shift();
    if (w) w();
    else this.free++;
  }
}

interface Session {
  reg: WorkerRegistration;
  handler: JobHandler;
  slots: Slots;
  workers: Map<string, Worker>;
  running: Map<string, AbortController>;
  stopping: boolean;
  forced: boolean;
  timer?: NodeJS.Timeout;
  scanning?: Promise<void>;
  rescanAgain: boolean;
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
 * JobQueue on BullMQ + Redis. A `work()` registration runs one BullMQ Worker (concurrency N) per
 * platform queue it satisfies, and a shared semaphore keeps its handlers to N at once: with
 * several platform queues, a job taken while all N slots are busy waits (holding its lock, still
 * QUEUED) for a slot on that worker.
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
  private readonly log: Logger;

  private readonly cmd: CommandClient;
  private sub: Redis | undefined;
  private subReady: Promise<void> | undefined;
  private bull: Redis | undefined;
  private readonly queues = new Map<string, Queue>();
  private readonly watchers = new Map<string, Set<Watcher>>();
  private readonly sessions = new Set<Session>();
  private pollTimer: NodeJS.Timeout | undefined;
  private closed = false;

  private readonly chEvents: string;
  private readonly chCancel: string;
  private readonly chPlatforms: string;

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
    this.log = opts.logger ?? silentLogger;
    // lazyConnect: connections open on first use, as before
    this.cmd = new Redis(this.url, { lazyConnect: true }) as CommandClient;
    for (const [name, def] of Object.entries(SCRIPTS)) this.cmd.defineCommand(name, def);
    this.cmd.on('error', (err: unknown) => this.log.warn({ err: errorMessage(err) }, 'redis connection error'));
    this.chEvents = `${this.prefix}:events`;
    this.chCancel = `${this.prefix}:cancel`;
    this.chPlatforms = `${this.prefix}:platform-added`;
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
  /** BullMQ queue of a platform (queue names may not contain ':'). */
  queueName(platform: PlatformProperties): string {
    return `q-${createHash('sha256').update(platformKey(platform)).digest('hex').slice(0, 24)}`;
  }

  // --- JobQueue ---

  async submit(job: JobSpec): Promise<SubmitResult> {
    this.assertOpen();
    const uuid = randomUUID();
    const name = `operations/${uuid}`;
    const queue = this.queueName(job.platform);
    const mergeHash = job.doNotCache
      ? ''
      : createHash('sha256')
          .update(`${job.instanceName}\n${digestKey(job.actionDigest)}\n${platformKey(job.platform)}`)
          .digest('hex');
    const now = String(Date.now());
    const fields: ScriptArg[] = [
      'name', name,
      'job', JSON.stringify(job),
      'stage', 'QUEUED',
      'done', '0',
      'queuedAt', now,
      'updatedAt', now,
      'queue', queue,
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
      name,
      mergeHash ? '1' : '0',
      `${this.prefix}:op:`,
      this.inFlightTtlMs,
      queue,
      JSON.stringify(job.platform),
      ...fields,
    );
    if (r[0]) return { operationName: r[0], merged: true };
    if (r[1] === 1) await this.cmd.publish(this.chPlatforms, queue);
    try {
      await this.queue(queue).add(
        'action',
        { operationName: name },
        {
          jobId: uuid,
          priority: bullPriority(job.priority),
          attempts: this.maxAttempts + 1,
          removeOnComplete: true,
          removeOnFail: true,
        },
      );
    } catch (err) {
      await this.finish(name, { error: { code: Status.UNAVAILABLE, message: `could not enqueue: ${errorMessage(err)}` } }).catch(() => {});
      throw err;
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
    this.ensureSub().then(
      () => this.refresh(w),
      (err) => this.log.warn({ err: errorMessage(err), operation: name }, 'could not subscribe to operation events'),
    );
    return stop;
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
    for (const [queue, json] of Object.entries(all)) {
      let platform: PlatformProperties;
      try {
        platform = JSON.parse(json) as PlatformProperties;
      } catch {
        continue;
      }
      const c = await this.queue(queue).getJobCounts('waiting', 'prioritized', 'delayed', 'active');
      platforms.push({ platform, waiting: (c.waiting ?? 0) + (c.prioritized ?? 0) + (c.delayed ?? 0), active: c.active ?? 0 });
    }
    return { platforms, workers: await this.liveWorkers() };
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
      slots: new Slots(reg.concurrency),
      workers: new Map(),
      running: new Map(),
      stopping: false,
      forced: false,
      rescanAgain: false,
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
    s.timer = setInterval(() => {
      this.heartbeat(s).catch((err) => this.log.warn({ err: errorMessage(err), worker: reg.name }, 'worker heartbeat failed'));
      this.rescan(s).catch((err) => this.log.warn({ err: errorMessage(err), worker: reg.name }, 'platform rescan failed'));
    }, this.heartbeatMs);
    s.timer.unref();
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
    this.watchers.clear();
    await Promise.allSettled([...this.sessions].map((s) => this.stopSession(s, true)));
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
    if (!q) {
      q = new Queue(name, { connection: this.bullClient(), prefix: this.bullPrefix });
      q.on('error', (err) => this.log.warn({ err: errorMessage(err), queue: name }, 'queue error'));
      this.queues.set(name, q);
    }
    return q;
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
    const channels = [this.chEvents, this.chCancel, this.chPlatforms];
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
          for (const s of this.sessions) this.rescan(s).catch(() => {});
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
      for (const set of this.watchers.values()) for (const w of set) this.refresh(w);
    }, this.watchPollMs);
    this.pollTimer.unref();
  }

  // --- internals: workers ---

  private async heartbeat(s: Session): Promise<void> {
    if (s.stopping) return;
    const now = Date.now();
    await Promise.all([
      this.cmd.zadd(this.workersKey, now, s.reg.name),
      this.cmd.set(this.workerKey(s.reg.name), JSON.stringify({ platform: s.reg.platform, concurrency: s.reg.concurrency }), 'PX', this.workerTtlMs),
    ]);
  }

  /** Start a BullMQ worker on every known platform queue this worker satisfies. */
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
          if (s.stopping || s.workers.has(queue)) continue;
          let platform: PlatformProperties;
          try {
            platform = JSON.parse(json) as PlatformProperties;
          } catch {
            continue;
          }
          if (satisfies(s.reg.platform, platform)) this.startWorker(s, queue);
        }
      } while (s.rescanAgain);
    })().finally(() => {
      s.scanning = undefined;
    });
    return s.scanning;
  }

  private startWorker(s: Session, queue: string): void {
    const w = new Worker(queue, (job: Job) => this.process(s, job), {
      connection: this.bullClient(),
      prefix: this.bullPrefix,
      concurrency: s.reg.concurrency,
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
    s.workers.set(queue, w);
    this.log.debug({ worker: s.reg.name, queue }, 'worker listens on platform queue');
  }

  private async stopSession(s: Session, force: boolean): Promise<void> {
    if (force) {
      s.forced = true;
      for (const ac of s.running.values()) ac.abort(new Error('the worker is shutting down'));
    }
    s.stopping = true;
    if (s.timer) clearInterval(s.timer);
    s.timer = undefined;
    await s.scanning?.catch(() => {});
    await Promise.allSettled([...s.workers.values()].map((w) => w.close(force)));
    s.workers.clear();
    this.sessions.delete(s);
    // Best effort (the registration expires after workerTtlMs anyway): while Redis is unreachable,
    // do not wait out ioredis' reconnect attempts.
    const cleanup = Promise.allSettled([this.cmd.zrem(this.workersKey, s.reg.name), this.cmd.del(this.workerKey(s.reg.name))]);
    if (this.cmd.status === 'ready') await cleanup;
  }

  private exhausted(job: JobSpec, deliveries: number, lastWorker: string, lastError?: string): string {
    const what = `action ${digestKey(job.actionDigest)} was delivered ${deliveries} times and its worker died each time; last worker: ${lastWorker || 'unknown'}`;
    return lastError === undefined ? what : `${what} (it failed: ${lastError})`;
  }

  /**
   * The BullMQ processor: one delivery of one job. When this instance is closed mid-job the
   * promise never settles: BullMQ has stopped renewing the lock, so the job is re-delivered
   * elsewhere as if this worker had died, and nothing races the closing connections.
   */
  private async process(s: Session, job: Job): Promise<void> {
    const abandon = () => new Promise<never>(() => {});
    const name = (job.data as { operationName?: unknown } | undefined)?.operationName;
    if (typeof name !== 'string') return;
    if (s.forced) return abandon();
    const d = await this.cmd.deliverJob(this.opKey(name), s.reg.name, Date.now(), this.chEvents, name);
    if (d[0] !== 'ok') return; // cancelled, or expired
    const deliveries = Number(d[1]);
    const spec = JSON.parse(String(d[2])) as JobSpec;
    const previousWorker = String(d[3] ?? '');
    const queuedAt = Number(d[4]) || undefined;
    if (deliveries > this.maxAttempts) {
      await this.finish(name, {
        error: { code: Status.UNAVAILABLE, message: this.exhausted(spec, deliveries - 1, previousWorker) },
      });
      return;
    }
    await s.slots.acquire();
    const controller = new AbortController();
    s.running.set(name, controller);
    try {
      if (s.forced) return abandon();
      // a cancel published before we were listening for it
      if ((await this.cmd.hget(this.opKey(name), 'done')) !== '0') return;
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
        if (s.forced) return abandon();
        if (controller.signal.aborted) return;
        if ((await this.cmd.hget(this.opKey(name), 'done')) !== '0') return;
        const message = errorMessage(err);
        this.log.warn({ operation: name, worker: s.reg.name, attempt: deliveries - 1, err: message }, 'job handler failed');
        if (deliveries >= this.maxAttempts) {
          await this.finish(name, {
            error: { code: Status.UNAVAILABLE, message: this.exhausted(spec, deliveries, s.reg.name, message) },
          });
          return;
        }
        await this.update(name, 'QUEUED', '');
        throw err; // BullMQ puts it back in the queue
      }
      if (s.forced) return abandon();
      if (controller.signal.aborted) return;
      await this.finish(name, { response });
    } finally {
      s.running.delete(name);
      s.slots.release();
    }
  }
}
