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
// Redis client: ioredis is not installed here, so this file carries a small RESP2 client
// (`RespClient`) that BullMQ drives through its Bun-client adapter (`createBunRedisClient`).
import { createHash, randomUUID } from 'node:crypto';
import { createConnection, type Socket } from 'node:net';
import { createBunRedisClient, Queue, Worker, type IRedisClient, type Job } from 'bullmq';
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
  Stage,
  SubmitResult,
  WorkerRegistration,
} from './job-queue.ts';
import { platformKey, satisfies, unsatisfiableProperties } from './platform.ts';

// ---------------------------------------------------------------------------------------------
// A minimal RESP2 client
// ---------------------------------------------------------------------------------------------

export type RespArg = string | number | Buffer;
export type Reply = string | number | null | ReplyError | Reply[];

/** An error reply from Redis (e.g. NOSCRIPT, WRONGTYPE). */
export class ReplyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ReplyError';
  }
}

const CRLF = Buffer.from('\r\n');

function encodeCommand(cmd: string, args: readonly RespArg[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length + 1}\r\n$${Buffer.byteLength(cmd)}\r\n${cmd}\r\n`)];
  for (const a of args) {
    const b = Buffer.isBuffer(a) ? a : Buffer.from(String(a));
    parts.push(Buffer.from(`$${b.length}\r\n`), b, CRLF);
  }
  return Buffer.concat(parts);
}

/** Parse one reply at `pos`; undefined when the buffer does not hold all of it yet. */
function parseReply(buf: Buffer, pos: number): { value: Reply; end: number } | undefined {
  if (pos >= buf.length) return undefined;
  const nl = buf.indexOf(CRLF, pos);
  if (nl < 0) return undefined;
  const type = buf[pos];
  const line = buf.toString('utf8', pos + 1, nl);
  switch (type) {
    case 0x2b: // +
      return { value: line, end: nl + 2 };
    case 0x2d: // -
      return { value: new ReplyError(line), end: nl + 2 };
    case 0x3a: // :
      return { value: Number(line), end: nl + 2 };
    case 0x24: {
      // $
      const n = Number(line);
      if (n < 0) return { value: null, end: nl + 2 };
      const start = nl + 2;
      if (buf.length < start + n + 2) return undefined;
      return { value: buf.toString('utf8', start, start + n), end: start + n + 2 };
    }
    case 0x2a: {
      // *
      const n = Number(line);
      if (n < 0) return { value: null, end: nl + 2 };
      const out: Reply[] = [];
      let p = nl + 2;
      for (let i = 0; i < n; i++) {
        const r = parseReply(buf, p);
        if (!r) return undefined;
        out.push(r.value);
        p = r.end;
      }
      return { value: out, end: p };
    }
    default:
      throw new Error(`unexpected RESP reply type 0x${(type ?? 0).toString(16)}`);
  }
}

interface RedisTarget {
  host: string;
  port: number;
  username?: string;
  password?: string;
  db: number;
}

/** `redis://[[user]:password@]host[:port][/db]` (no TLS). */
export function parseRedisUrl(url: string): RedisTarget {
  const u = new URL(url);
  if (u.protocol !== 'redis:') throw new Error(`unsupported Redis URL ${url}: only redis:// is supported`);
  const db = u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0;
  if (!Number.isInteger(db) || db < 0) throw new Error(`bad database number in Redis URL ${url}`);
  return {
    host: u.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1',
    port: u.port ? Number(u.port) : 6379,
    username: u.username ? decodeURIComponent(u.username) : undefined,
    password: u.password ? decodeURIComponent(u.password) : undefined,
    db,
  };
}

/**
 * One Redis connection speaking RESP2; connects on first use. Shaped like Bun's `RedisClient`
 * (`send`, `connect`, `close`, `connected`, `onconnect`, `onclose`, `duplicate`) so BullMQ can
 * drive it through `createBunRedisClient`. A client that lost its connection reconnects on the
 * next command; one that was `close()`d stays closed.
 */
export class RespClient {
  connected = false;
  onconnect: ((...args: unknown[]) => void) | null = null;
  onclose: ((err?: Error) => void) | null = null;
  onerror: ((err: Error) => void) | null = null;
  /** Pub/sub messages, once `subscribe` was called. */
  onmessage: ((channel: string, message: string) => void) | null = null;
  readonly url: string;
  private readonly target: RedisTarget;
  private socket: Socket | undefined;
  private connecting: Promise<void> | undefined;
  private pending: { resolve: (v: Reply) => void; reject: (e: Error) => void }[] = [];
  private buf: Buffer = Buffer.alloc(0);
  private closing = false;
  private subscribed = false;
  private lastError: Error | undefined;

  constructor(url: string) {
    this.url = url;
    this.target = parseRedisUrl(url);
  }

  connect(): Promise<void> {
    if (this.connected) return Promise.resolve();
    this.connecting ??= this.open().finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  private open(): Promise<void> {
    this.closing = false;
    const { host, port, username, password, db } = this.target;
    return new Promise<void>((resolve, reject) => {
      const sock = createConnection({ host, port });
      sock.setNoDelay(true);
      const fail = (err: Error) => {
        sock.destroy();
        reject(err);
      };
      sock.once('error', fail);
      sock.once('connect', () => {
        sock.off('error', fail);
        if (this.closing) {
          sock.destroy();
          reject(new Error('Connection closed'));
          return;
        }
        this.socket = sock;
        this.buf = Buffer.alloc(0);
        this.connected = true;
        this.lastError = undefined;
        sock.on('data', (d: Buffer) => this.onData(d));
        sock.on('error', (err) => {
          this.lastError = err;
        });
        sock.on('close', () => this.onSocketClose(sock));
        const setup: Promise<Reply>[] = [];
        if (password !== undefined) setup.push(this.write('AUTH', username ? [username, password] : [password]));
        if (db) setup.push(this.write('SELECT', [db]));
        Promise.all(setup).then(
          () => {
            this.onconnect?.();
            resolve();
          },
          (err: Error) => {
            sock.destroy();
            reject(err);
          },
        );
      });
    });
  }

  send(cmd: string, args: readonly RespArg[] = []): Promise<any> {
    if (this.closing) return Promise.reject(new Error('Connection closed'));
    if (this.connected && this.socket) return this.write(cmd, args);
    return this.connect().then(() => this.send(cmd, args));
  }

  private write(cmd: string, args: readonly RespArg[]): Promise<Reply> {
    const sock = this.socket;
    if (!sock) return Promise.reject(new Error('Connection closed'));
    return new Promise<Reply>((resolve, reject) => {
      this.pending.push({ resolve, reject });
      sock.write(encodeCommand(cmd, args));
    });
  }

  /** Enter pub/sub mode on this connection and subscribe to one channel. */
  subscribe(channel: string): Promise<unknown> {
    this.subscribed = true;
    return this.send('SUBSCRIBE', [channel]);
  }

  private onData(d: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    let pos = 0;
    for (;;) {
      let r: { value: Reply; end: number } | undefined;
      try {
        r = parseReply(this.buf, pos);
      } catch (err) {
        this.lastError = err as Error;
        this.socket?.destroy();
        return;
      }
      if (!r) break;
      pos = r.end;
      this.dispatch(r.value);
    }
    this.buf = pos >= this.buf.length ? Buffer.alloc(0) : this.buf.subarray(pos);
  }

  private dispatch(value: Reply): void {
    if (this.subscribed && Array.isArray(value) && value[0] === 'message') {
      try {
        this.onmessage?.(String(value[1]), String(value[2]));
      } catch {
        // a listener's problem, not the connection's
      }
      return;
    }
    const p = this.pending.shift();
    if (!p) return;
    if (value instanceof ReplyError) p.reject(value);
    else p.resolve(value);
  }

  private onSocketClose(sock: Socket): void {
    if (this.socket !== sock) return;
    this.socket = undefined;
    this.connected = false;
    this.subscribed = false;
    const pending = this.pending;
    this.pending = [];
    const err = new Error('Connection closed');
    for (const p of pending) p.reject(err);
    if (this.closing) this.onclose?.();
    else this.onclose?.(this.lastError ?? new Error('Connection closed unexpectedly'));
  }

  close(): void {
    this.closing = true;
    this.connected = false;
    const sock = this.socket;
    if (!sock) return;
    sock.end();
    const t = setTimeout(() => sock.destroy(), 1000);
    t.unref();
    sock.once('close', () => clearTimeout(t));
  }

  duplicate(): Promise<this> {
    return Promise.resolve(new RespClient(this.url) as this);
  }

  get(key: string): Promise<string | null> {
    return this.send('GET', [key]);
  }

  smembers(key: string): Promise<string[]> {
    return this.send('SMEMBERS', [key]);
  }

  incr(key: string): Promise<number> {
    return this.send('INCR', [key]);
  }
}

/** A Lua script run with EVALSHA, falling back to EVAL the first time. */
class Script {
  private readonly sha: string;
  constructor(private readonly lua: string) {
    this.sha = createHash('sha1').update(lua).digest('hex');
  }

  async run(c: RespClient, keys: string[], args: RespArg[]): Promise<Reply> {
    try {
      return await c.send('EVALSHA', [this.sha, keys.length, ...keys, ...args]);
    } catch (err) {
      if (err instanceof ReplyError && err.message.startsWith('NOSCRIPT')) {
        return c.send('EVAL', [this.lua, keys.length, ...keys, ...args]);
      }
      throw err;
    }
  }
}

// KEYS: op key, merge key (op key again when not mergeable), platforms hash.
// ARGV: op name, '1' when mergeable, op key prefix, ttl ms, queue name, platform JSON, fields...
const SUBMIT = new Script(`
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
`);

// Every change of an operation bumps its `ver` and publishes the change itself on the events
// channel, as JSON {name, ver, stage, worker, updatedAt, done}, so watchers see every stage even
// when they come faster than a watcher could re-read the hash.

// KEYS: op key. ARGV: worker, now, events channel, op name.
// Counts a delivery; a job delivered again (its worker died) goes back to QUEUED.
const DELIVER = new Script(`
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
`);

// KEYS: op key. ARGV: events channel, op name, stage, worker, now. Only while not done.
const UPDATE = new Script(`
if redis.call('HGET', KEYS[1], 'done') ~= '0' then return 0 end
local v = redis.call('HINCRBY', KEYS[1], 'ver', 1)
redis.call('HSET', KEYS[1], 'stage', ARGV[3], 'worker', ARGV[4], 'updatedAt', ARGV[5])
redis.call('PUBLISH', ARGV[1], cjson.encode({name = ARGV[2], ver = v, stage = ARGV[3], worker = ARGV[4], updatedAt = tonumber(ARGV[5]), done = false}))
return 1
`);

// KEYS: op key. ARGV: events channel, op name, ttl ms, merge key prefix, now, fields...
// The first finisher wins; frees the merge key when it still names this operation.
const FINISH = new Script(`
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
`);

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
  /** `redis://[[user]:password@]host[:port][/db]`. */
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

function toRecord(flat: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (Array.isArray(flat)) for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = String(flat[i + 1]);
  return out;
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

  private readonly cmd: RespClient;
  private sub: RespClient | undefined;
  private subReady: Promise<void> | undefined;
  private bull: IRedisClient | undefined;
  private readonly queues = new Map<string, Queue>();
  private readonly watchers = new Map<string, Set<Watcher>>();
  private readonly sessions = new Set<Session>();
  private readonly timers = new Set<NodeJS.Timeout>();
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
    this.cmd = new RespClient(this.url);
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
    const fields: RespArg[] = [
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
    const r = (await SUBMIT.run(
      this.cmd,
      [opKey, mergeHash ? this.mergePrefix + mergeHash : opKey, this.platformsKey],
      [name, mergeHash ? '1' : '0', `${this.prefix}:op:`, this.inFlightTtlMs, queue, JSON.stringify(job.platform), ...fields],
    )) as [string, number];
    if (r[0]) return { operationName: r[0], merged: true };
    if (r[1] === 1) await this.cmd.send('PUBLISH', [this.chPlatforms, queue]);
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
    return decodeOp(toRecord(await this.cmd.send('HGETALL', [this.opKey(name)])));
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
    const h = toRecord(await this.cmd.send('HGETALL', [this.opKey(name)]));
    if (!h.name || h.done !== '0') return false;
    if (h.queue && h.jobId) {
      try {
        await this.queue(h.queue).remove(h.jobId); // 0 when a worker holds it (locked)
      } catch (err) {
        this.log.debug({ err: errorMessage(err), operation: name }, 'could not remove job');
      }
    }
    const ok = await this.finish(name, { error: { code: Status.CANCELLED, message: `operation ${name} was cancelled` } });
    await this.cmd.send('PUBLISH', [this.chCancel, name]);
    return ok;
  }

  async unsatisfiable(platform: PlatformProperties): Promise<string[]> {
    this.assertOpen();
    // Liveness is the registration key's Redis-side expiry (no clock skew); the zset only lists names.
    const names = (await this.cmd.send('ZRANGE', [this.workersKey, 0, -1])) as string[];
    const regs = names.length ? ((await this.cmd.send('MGET', names.map((n) => this.workerKey(n)))) as (string | null)[]) : [];
    const platforms: PlatformProperties[] = [];
    const dead: string[] = [];
    for (const [i, r] of regs.entries()) {
      if (!r) {
        dead.push(names[i] ?? '');
        continue;
      }
      try {
        platforms.push((JSON.parse(r) as { platform: PlatformProperties }).platform);
      } catch {
        // not ours
      }
    }
    if (dead.length) await this.cmd.send('ZREM', [this.workersKey, ...dead]);
    return unsatisfiableProperties(platforms, platform);
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
   * jobs are re-delivered elsewhere once the lock expires), connections close. Operation state
   * stays in Redis for other instances.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.pollTimer = undefined;
    this.watchers.clear();
    await Promise.allSettled([...this.sessions].map((s) => this.stopSession(s, true)));
    await Promise.allSettled([...this.queues.values()].map((q) => q.close()));
    this.queues.clear();
    if (this.bull) {
      try {
        await this.bull.quit();
      } catch {
        // closing anyway
      }
    }
    this.sub?.close();
    this.cmd.close();
  }

  // --- internals: state ---

  private assertOpen(): void {
    if (this.closed) throw new Error('job queue is closed');
  }

  private async finish(name: string, result: { response?: Buffer; error?: { code: number; message: string } }): Promise<boolean> {
    const fields: RespArg[] = [];
    if (result.response) fields.push('response', result.response.toString('base64'));
    if (result.error) fields.push('error', JSON.stringify(result.error));
    const r = await FINISH.run(this.cmd, [this.opKey(name)], [this.chEvents, name, this.doneTtlMs, this.mergePrefix, Date.now(), ...fields]);
    return r === 1;
  }

  private async update(name: string, stage: Stage, worker: string): Promise<boolean> {
    const r = await UPDATE.run(this.cmd, [this.opKey(name)], [this.chEvents, name, stage, worker, Date.now()]);
    return r === 1;
  }

  /** The operation and its version, for watchers. */
  private async readOp(name: string): Promise<{ state: OperationState; ver: number } | undefined> {
    const h = toRecord(await this.cmd.send('HGETALL', [this.opKey(name)]));
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

  /** The connection BullMQ queues share; workers duplicate it. */
  private bullClient(): IRedisClient {
    if (!this.bull) {
      this.bull = createBunRedisClient(new RespClient(this.url));
      this.bull.on('error', (err: unknown) => this.log.warn({ err: errorMessage(err) }, 'redis connection error'));
    }
    return this.bull;
  }

  // --- internals: pub/sub and watching ---

  private ensureSub(): Promise<void> {
    if (this.subReady) return this.subReady;
    const sub = new RespClient(this.url);
    sub.onmessage = (channel, message) => this.onMessage(channel, message);
    sub.onclose = (err) => {
      if (!err || this.closed || this.sub !== sub) return;
      this.log.warn({ err: errorMessage(err) }, 'lost the pub/sub connection; resubscribing');
      this.sub = undefined;
      this.subReady = undefined;
      this.resubscribeLater();
    };
    this.sub = sub;
    const ready = (async () => {
      for (const ch of [this.chEvents, this.chCancel, this.chPlatforms]) await sub.subscribe(ch);
    })();
    this.subReady = ready;
    ready.catch(() => {
      if (this.sub === sub) {
        this.sub = undefined;
        this.subReady = undefined;
        sub.close();
      }
    });
    return ready;
  }

  private resubscribeLater(): void {
    if (this.closed) return;
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (this.closed) return;
      this.ensureSub().then(
        () => {
          // catch up on what was published while we were away
          for (const set of this.watchers.values()) for (const w of set) this.refresh(w);
          for (const s of this.sessions) this.rescan(s).catch(() => {});
        },
        () => this.resubscribeLater(),
      );
    }, 1000);
    t.unref();
    this.timers.add(t);
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
      this.cmd.send('ZADD', [this.workersKey, now, s.reg.name]),
      this.cmd.send('SET', [this.workerKey(s.reg.name), JSON.stringify({ platform: s.reg.platform, concurrency: s.reg.concurrency }), 'PX', this.workerTtlMs]),
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
        const all = toRecord(await this.cmd.send('HGETALL', [this.platformsKey]));
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
    await Promise.allSettled([
      this.cmd.send('ZREM', [this.workersKey, s.reg.name]),
      this.cmd.send('DEL', [this.workerKey(s.reg.name)]),
    ]);
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
    const d = (await DELIVER.run(this.cmd, [this.opKey(name)], [s.reg.name, Date.now(), this.chEvents, name])) as Reply[];
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
      if ((await this.cmd.send('HGET', [this.opKey(name), 'done'])) !== '0') return;
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
        if ((await this.cmd.send('HGET', [this.opKey(name), 'done'])) !== '0') return;
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
