// The BullMQ JobQueue against a real redis-server: stages, merging, priority, platforms, cancel,
// a restarted scheduler, and workers that die (child processes SIGKILLed mid-job).
import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { after, afterEach, before, describe, it } from 'node:test';
import { digestOf } from '../../common/digest.ts';
import { Status } from '../../common/errors.ts';
import { BullmqJobQueue, bullPriority, BULL_PRIORITY_MAX, type BullmqJobQueueOptions } from '../../scheduler/bullmq-queue.ts';
import type { JobQueue, JobSpec, OperationState } from '../../execution/job-queue.ts';
import { NO_WORKERS } from '../../execution/platform.ts';
import { startRedis, type TestRedis } from '../support/redis.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CHILD = fileURLToPath(new URL('../support/queue-worker-child.ts', import.meta.url));
const LINUX = { OSFamily: 'linux' };
/** Short timings so dead workers are noticed within a few seconds. */
const FAST = {
  lockDurationMs: 2000,
  stalledIntervalMs: 1000,
  heartbeatMs: 500,
  workerTtlMs: 1500,
  drainDelaySec: 1,
  watchPollMs: 1000,
} satisfies Partial<BullmqJobQueueOptions>;

let redis: TestRedis;
let prefixes = 0;
const open: BullmqJobQueue[] = [];
const children: ChildProcess[] = [];

before(async () => {
  redis = await startRedis();
});
afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await Promise.all(open.splice(0).map((q) => q.close()));
});
after(async () => {
  await redis.stop();
});

function newPrefix(): string {
  return `t${++prefixes}-${process.pid}`;
}

function queue(prefix: string, over: Partial<BullmqJobQueueOptions> = {}): BullmqJobQueue {
  const q = new BullmqJobQueue({ redisUrl: redis.url, prefix, ...FAST, ...over });
  open.push(q);
  return q;
}

function spec(n: number | string, over: Partial<JobSpec> = {}): JobSpec {
  return {
    instanceName: 'main',
    actionDigest: digestOf(Buffer.from(`action ${n}`)),
    priority: 0,
    platform: LINUX,
    doNotCache: false,
    ...over,
  };
}

function untilDone(q: JobQueue, name: string, timeoutMs = 20_000): Promise<OperationState> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      stop();
      reject(new Error(`operation ${name} not done within ${timeoutMs} ms`));
    }, timeoutMs);
    const stop = q.watch(name, (s) => {
      if (!s.done) return;
      clearTimeout(t);
      stop();
      resolve(s);
    });
  });
}

async function eventually<T>(what: string, fn: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`${what}: still ${JSON.stringify(v)} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** A worker in a child process; resolves with the first job it took (operation and attempt). */
function childWorker(prefix: string, workerName: string, over: Partial<BullmqJobQueueOptions> = {}) {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD], {
    cwd: ROOT,
    env: { ...process.env, REAPI_QUEUE_CHILD: JSON.stringify({ redisUrl: redis.url, prefix, ...FAST, ...over, workerName, platform: LINUX }) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let out = '';
  let err = '';
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const took = new Promise<{ operation: string; attempt: number }>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /^took (\S+) (\d+)$/m.exec(out);
      if (m) resolve({ operation: m[1] ?? '', attempt: Number(m[2]) });
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    void exited.then(() => reject(new Error(`worker child ${workerName} exited before taking a job: ${out}${err}`)));
  });
  took.catch(() => {});
  return {
    took,
    async kill(): Promise<void> {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

describe('BullmqJobQueue', () => {
  it('maps REAPI priority onto BullMQ priority', () => {
    assert.ok(bullPriority(-1) < bullPriority(0) && bullPriority(0) < bullPriority(1));
    assert.equal(bullPriority(-(2 ** 31)), 1);
    assert.equal(bullPriority(2 ** 31 - 1), BULL_PRIORITY_MAX);
  });

  it('runs a job through QUEUED, EXECUTING, COMPLETED and reports every stage to watchers', async () => {
    const q = queue(newPrefix());
    const { operationName, merged } = await q.submit(spec(1));
    assert.match(operationName, /^operations\/[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(merged, false);
    const seen: string[] = [];
    const first = deferred();
    const done = new Promise<OperationState>((resolve) =>
      q.watch(operationName, (s) => {
        seen.push(s.stage);
        first.resolve();
        if (s.done) resolve(s);
      }),
    );
    await first.promise;
    assert.deepEqual(seen, ['QUEUED']);
    let attempt = -1;
    let queuedAt: number | undefined;
    const stop = await q.work({ name: 'w1', platform: LINUX, concurrency: 2 }, async (ctx) => {
      attempt = ctx.attempt;
      queuedAt = ctx.queuedAt;
      assert.deepEqual(ctx.job.actionDigest, spec(1).actionDigest);
      await ctx.markExecuting('w1');
      return Buffer.from('response');
    });
    const final = await done;
    assert.deepEqual(seen, ['QUEUED', 'EXECUTING', 'COMPLETED']);
    assert.equal(final.response?.toString(), 'response');
    assert.equal(final.worker, 'w1');
    assert.equal(attempt, 0);
    assert.equal(queuedAt, final.queuedAt);
    const got = await q.getOperation(operationName);
    assert.equal(got?.done, true);
    assert.equal(got?.response?.toString(), 'response');
    assert.equal(await q.getOperation('operations/nope'), undefined);
    await stop();
  });

  it('merges identical in-flight actions, never with doNotCache, and not after done', async () => {
    const q = queue(newPrefix());
    const a = await q.submit(spec('m'));
    assert.deepEqual(await q.submit({ ...spec('m'), priority: 3 }), { operationName: a.operationName, merged: true });
    assert.equal((await q.submit(spec('m', { instanceName: 'other' }))).merged, false);
    const nc = await q.submit(spec('m', { doNotCache: true }));
    const nc2 = await q.submit(spec('m', { doNotCache: true }));
    assert.equal(nc.merged || nc2.merged, false);
    assert.notEqual(nc.operationName, nc2.operationName);
    const stop = await q.work({ name: 'w', platform: LINUX, concurrency: 4 }, async () => Buffer.from('ok'));
    await untilDone(q, a.operationName);
    const c = await q.submit(spec('m'));
    assert.equal(c.merged, false);
    assert.notEqual(c.operationName, a.operationName);
    await untilDone(q, c.operationName);
    await stop();
  });

  it('runs lower priority values first, FIFO among equals', async () => {
    const q = queue(newPrefix());
    const prios = [5, -1, 0, 10, 0, -1000];
    const names = new Map<string, string>();
    for (const [i, p] of prios.entries()) {
      const { operationName } = await q.submit(spec(`p${i}`, { priority: p }));
      names.set(operationName, `${p}#${i}`);
    }
    const order: string[] = [];
    const all = deferred();
    const stop = await q.work({ name: 'w', platform: LINUX, concurrency: 1 }, async (ctx) => {
      order.push(names.get(ctx.operationName) ?? '?');
      if (order.length === prios.length) all.resolve();
      return Buffer.alloc(0);
    });
    await all.promise;
    assert.deepEqual(order, ['-1000#5', '-1#1', '0#2', '0#4', '5#0', '10#3']);
    await stop();
  });

  it('names unsatisfiable properties and routes jobs to workers that satisfy their platform', async () => {
    const q = queue(newPrefix());
    assert.deepEqual(await q.unsatisfiable({}), [NO_WORKERS]);
    assert.deepEqual(await q.unsatisfiable({ OSFamily: 'linux', gpu: '1' }), ['OSFamily', 'gpu']);
    const win = await q.submit(spec('win', { platform: { OSFamily: 'windows' } }));
    const took: string[] = [];
    const stop = await q.work({ name: 'docker', platform: { OSFamily: 'linux', 'container-image': '*' }, concurrency: 1 }, async (ctx) => {
      took.push(ctx.job.platform['container-image'] ?? '');
      return Buffer.alloc(0);
    });
    assert.deepEqual(await q.unsatisfiable({ OSFamily: 'linux', 'container-image': 'docker://a' }), []);
    assert.deepEqual(await q.unsatisfiable({ OSFamily: 'windows', gpu: '1', 'container-image': 'x' }), ['OSFamily', 'gpu']);
    // a platform first seen after the worker started is discovered
    const img = await q.submit(spec('img', { platform: { OSFamily: 'linux', 'container-image': 'docker://a' } }));
    await untilDone(q, img.operationName);
    assert.deepEqual(took, ['docker://a']);
    assert.equal((await q.getOperation(win.operationName))?.stage, 'QUEUED');
    await stop();
    assert.deepEqual(await q.unsatisfiable({ OSFamily: 'linux' }), ['OSFamily'], 'a stopped worker no longer counts');
  });

  it('cancels queued and running operations', async () => {
    const prefix = newPrefix();
    const q = queue(prefix);
    const queued = await q.submit(spec('cq'));
    assert.equal(await q.cancel(queued.operationName), true);
    const st = await q.getOperation(queued.operationName);
    assert.equal(st?.done, true);
    assert.equal(st?.error?.code, Status.CANCELLED);
    assert.equal(await q.cancel(queued.operationName), false, 'already done');
    assert.equal(await q.cancel('operations/unknown'), false);

    // the worker lives in another JobQueue instance (as on another machine)
    const wq = queue(prefix);
    const started = deferred();
    const aborted = deferred();
    const delivered: string[] = [];
    const stop = await wq.work({ name: 'w', platform: LINUX, concurrency: 1 }, async (ctx) => {
      delivered.push(ctx.operationName);
      await ctx.markExecuting('w');
      started.resolve();
      await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve(), { once: true }));
      aborted.resolve();
      throw new Error('aborted');
    });
    const running = await q.submit(spec('cr'));
    await started.promise;
    assert.equal(await q.cancel(running.operationName), true);
    await aborted.promise;
    const final = await untilDone(q, running.operationName);
    assert.equal(final.error?.code, Status.CANCELLED);
    await stop();
    assert.deepEqual(delivered, [running.operationName], 'the cancelled queued job never ran; the running one ran once');
  });

  it('lets a restarted scheduler read and watch an operation of the old one to completion', async () => {
    const prefix = newPrefix();
    const old = queue(prefix);
    const { operationName } = await old.submit(spec('restart'));
    await old.close();
    const fresh = queue(prefix);
    const st = await fresh.getOperation(operationName);
    assert.equal(st?.stage, 'QUEUED');
    assert.equal(st?.done, false);
    const seen: string[] = [];
    const done = new Promise<OperationState>((resolve) =>
      fresh.watch(operationName, (s) => {
        seen.push(s.stage);
        if (s.done) resolve(s);
      }),
    );
    const workers = queue(prefix);
    const stop = await workers.work({ name: 'w', platform: LINUX, concurrency: 1 }, async (ctx) => {
      await ctx.markExecuting('w');
      return Buffer.from('from another process');
    });
    const final = await done;
    assert.equal(final.response?.toString(), 'from another process');
    assert.deepEqual(seen, ['QUEUED', 'EXECUTING', 'COMPLETED']);
    await stop();
  });

  it('gives an operation orphaned by a scheduler that died before adding its job a job again', async () => {
    const prefix = newPrefix();
    const dying = queue(prefix);
    const { operationName } = await dying.submit(spec('orphan'));
    // Simulate the scheduler dying between creating the operation and adding its job: remove the
    // job and age the operation past the grace period.
    const { Redis } = await import('ioredis');
    const r = new Redis(redis.url);
    const h = await r.hgetall(`${prefix}:op:${operationName}`);
    const { Queue } = await import('bullmq');
    const conn = r.duplicate();
    const bull = new Queue(h.queue!, { connection: conn, prefix: `${prefix}:bull` });
    assert.equal(await bull.remove(h.jobId!), 1, 'the job existed and is removed');
    await r.hset(`${prefix}:op:${operationName}`, 'queuedAt', String(Date.now() - 60_000));
    await bull.close();
    conn.disconnect();
    await dying.close();

    const fresh = queue(prefix);
    const again = await fresh.submit(spec('orphan'));
    assert.equal(again.operationName, operationName, 'a new submit merges into the orphan');
    const stop = await fresh.work({ name: 'w', platform: LINUX, concurrency: 1 }, async (ctx) => {
      await ctx.markExecuting('w');
      return Buffer.from('rescued');
    });
    const final = await untilDone(fresh, operationName);
    assert.equal(final.response?.toString(), 'rescued');
    await stop();
    r.disconnect();
  });

  it('delivers the job of a SIGKILLed worker again, with attempt 1', async () => {
    const prefix = newPrefix();
    const q = queue(prefix);
    const child = childWorker(prefix, 'child-1');
    const { operationName } = await q.submit(spec('stall'));
    const took = await child.took;
    assert.deepEqual(took, { operation: operationName, attempt: 0 });
    const running = await q.getOperation(operationName);
    assert.equal(running?.stage, 'EXECUTING');
    assert.equal(running?.worker, 'child-1');
    assert.deepEqual(await q.unsatisfiable(LINUX), []);
    await child.kill();
    // its registration expires with its heartbeat
    await eventually('unsatisfiable after the worker died', () => q.unsatisfiable(LINUX), (v) => v.length === 1);
    const attempts: number[] = [];
    const stop = await q.work({ name: 'survivor', platform: LINUX, concurrency: 1 }, async (ctx) => {
      attempts.push(ctx.attempt);
      await ctx.markExecuting('survivor');
      return Buffer.from('recovered');
    });
    const final = await untilDone(q, operationName);
    assert.equal(final.response?.toString(), 'recovered');
    assert.equal(final.worker, 'survivor');
    assert.deepEqual(attempts, [1]);
    await stop();
  });

  it('gives up with UNAVAILABLE after maxAttempts deliveries whose workers died', async () => {
    const prefix = newPrefix();
    const q = queue(prefix, { maxAttempts: 2 });
    const a = childWorker(prefix, 'child-a', { maxAttempts: 2 });
    const { operationName } = await q.submit(spec('exhaust'));
    assert.equal((await a.took).attempt, 0);
    await a.kill();
    const b = childWorker(prefix, 'child-b', { maxAttempts: 2 });
    assert.deepEqual(await b.took, { operation: operationName, attempt: 1 });
    await b.kill();
    let ran = false;
    const stop = await q.work({ name: 'survivor', platform: LINUX, concurrency: 1 }, async () => {
      ran = true;
      return Buffer.alloc(0);
    });
    const final = await untilDone(q, operationName);
    assert.equal(final.error?.code, Status.UNAVAILABLE);
    assert.match(final.error?.message ?? '', /^action [0-9a-f]{64}\/\d+ was delivered 2 times and its worker died each time; last worker: child-b$/);
    assert.equal(ran, false);
    await stop();
  });

  it('counts a throwing handler as a failed delivery', async () => {
    const q = queue(newPrefix(), { maxAttempts: 2 });
    const attempts: number[] = [];
    const stop = await q.work({ name: 'w', platform: LINUX, concurrency: 1 }, async (ctx) => {
      attempts.push(ctx.attempt);
      if (ctx.job.requestMetadata?.mode === 'flaky' && ctx.attempt > 0) return Buffer.from('second time');
      throw new Error('docker is gone');
    });
    const bad = await q.submit(spec('throws'));
    const final = await untilDone(q, bad.operationName);
    assert.equal(final.error?.code, Status.UNAVAILABLE);
    assert.match(final.error?.message ?? '', /was delivered 2 times .*last worker: w \(it failed: docker is gone\)$/);
    assert.deepEqual(attempts, [0, 1]);
    const flaky = await q.submit(spec('flaky', { requestMetadata: { mode: 'flaky' } }));
    assert.equal((await untilDone(q, flaky.operationName)).response?.toString(), 'second time');
    await stop();
  });
});

// ---------------------------------------------------------------------------------------------
// Locality

/** A worker in a child process that runs jobs at once, or hangs on those with requestMetadata.hang. */
const LOCALITY_CHILD = `
import { BullmqJobQueue } from './scheduler/bullmq-queue.ts';
const o = JSON.parse(process.env.REAPI_LOCALITY_CHILD ?? '{}');
const q = new BullmqJobQueue(o);
await q.work({ name: o.workerName, platform: o.platform, concurrency: 1 }, async (ctx) => {
  await ctx.markExecuting(o.workerName);
  process.stdout.write('took ' + ctx.operationName + ' ' + ctx.attempt + '\\n');
  if (ctx.job.requestMetadata?.hang) await new Promise(() => {});
  return Buffer.from(o.workerName);
});
process.stdout.write('ready\\n');
`;

function localityChild(prefix: string, workerName: string) {
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', LOCALITY_CHILD], {
    cwd: ROOT,
    env: { ...process.env, REAPI_LOCALITY_CHILD: JSON.stringify({ redisUrl: redis.url, prefix, ...FAST, workerName, platform: LINUX }) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let out = '';
  let err = '';
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const waitFor = (re: RegExp, what: string) =>
    eventually(`${workerName}: ${what}`, async () => (re.exec(out) ? 'yes' : `${out}${err}`), (v) => v === 'yes', 20_000);
  return {
    ready: () => waitFor(/^ready$/m, 'ready'),
    took: (operation: string) => waitFor(new RegExp(`^took ${operation.replace(/[/]/g, '\\/')} \\d+$`, 'm'), `took ${operation}`),
    async kill(): Promise<void> {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

describe('BullmqJobQueue locality', () => {
  const K = ['root-k', 'sub-shared'];
  const nearK = (i: number) => [`root-k-${i}`, 'sub-shared'];

  /** In-process workers that log who ran what (and the attempt), holding jobs whose requestMetadata.gate is set. */
  function harness(prefix: string, over: Partial<BullmqJobQueueOptions> = {}) {
    const sched = queue(prefix, over);
    const ranBy = new Map<string, { worker: string; attempt: number }>();
    const started = new Map<string, ReturnType<typeof deferred<void>>>();
    const gates = new Map<string, ReturnType<typeof deferred<void>>>();
    const gate = (label: string) => {
      const g = deferred();
      gates.set(label, g);
      started.set(label, deferred());
      return g;
    };
    const register = (name: string) =>
      queue(prefix, over).work({ name, platform: LINUX, concurrency: 1 }, async (ctx) => {
        ranBy.set(ctx.operationName, { worker: name, attempt: ctx.attempt });
        await ctx.markExecuting(name);
        const label = ctx.job.requestMetadata?.gate;
        if (label) {
          started.get(label)?.resolve();
          await gates.get(label)?.promise;
        }
        return Buffer.from(name);
      });
    const submit = async (n: string, keys: string[], meta: Record<string, string> = {}) =>
      (await sched.submit(spec(`${prefix}-${n}`, { localityKeys: keys, requestMetadata: meta }))).operationName;
    const worker = async (name: string) => (await untilDone(sched, name)).response?.toString();
    return { sched, ranBy, started, gate, register, submit, worker };
  }

  it('sends jobs sharing locality keys to the worker that ran them, overflow to the shared queue', async () => {
    const h = harness(newPrefix());
    const stopA = await h.register('A');
    assert.equal(await h.worker(await h.submit('first', K)), 'A', 'the only worker');
    const stopB = await h.register('B');
    for (let i = 0; i < 6; i++) assert.equal(await h.worker(await h.submit(`near-${i}`, nearK(i))), 'A', `job ${i} sharing K`);
    assert.equal(await h.worker(await h.submit('same', K)), 'A');
    // unrelated keys: the shared queue, either worker
    assert.match((await h.worker(await h.submit('unrelated', ['x', 'y']))) ?? '', /^[AB]$/);

    // A busy (concurrency 1) with one job waiting for it: the next one goes to the shared queue
    const holdA = h.gate('holdA');
    const held = await h.submit('held', nearK(10), { gate: 'holdA' });
    await h.started.get('holdA')!.promise;
    assert.equal(h.ranBy.get(held)?.worker, 'A');
    const waits = await h.submit('waits-for-a', nearK(11));
    const overflow = await h.submit('overflow', nearK(12));
    assert.equal(await h.worker(overflow), 'B');
    assert.equal((await h.sched.getOperation(waits))?.stage, 'QUEUED', 'still waiting for A');
    const st = await h.sched.stats();
    assert.equal(st.platforms.reduce((n, p) => n + p.waiting, 0), 1, 'stats count the job on a personal queue');
    holdA.resolve();
    assert.equal(await h.worker(held), 'A');
    assert.equal(await h.worker(waits), 'A');
    await stopA();
    await stopB();
  });

  it('merges and cancels jobs waiting on a personal queue', async () => {
    const h = harness(newPrefix());
    const stopA = await h.register('A');
    await h.worker(await h.submit('first', K));
    const holdA = h.gate('holdA');
    const held = await h.submit('held', nearK(1), { gate: 'holdA' });
    await h.started.get('holdA')!.promise;
    // routed to A (waiting there), then merged and cancelled like any queued job
    const waiting = await h.sched.submit(spec('merge-me', { localityKeys: nearK(2) }));
    assert.deepEqual(await h.sched.submit(spec('merge-me', { localityKeys: nearK(2) })), { operationName: waiting.operationName, merged: true });
    assert.equal(await h.sched.cancel(waiting.operationName), true);
    assert.equal((await untilDone(h.sched, waiting.operationName)).error?.code, Status.CANCELLED);
    holdA.resolve();
    await h.worker(held);
    assert.equal(h.ranBy.has(waiting.operationName), false, 'the cancelled job never ran');
    await stopA();
  });

  it('with locality off, routes nothing: a job sharing keys with a busy worker goes to a free one', async () => {
    const h = harness(newPrefix(), { locality: false });
    const stopA = await h.register('A');
    assert.equal(await h.worker(await h.submit('first', K)), 'A');
    const holdA = h.gate('holdA');
    const held = await h.submit('held', nearK(1), { gate: 'holdA' });
    await h.started.get('holdA')!.promise;
    const stopB = await h.register('B');
    // with locality on, this one would wait on A's personal queue
    assert.equal(await h.worker(await h.submit('next', nearK(2))), 'B');
    holdA.resolve();
    assert.equal(await h.worker(held), 'A');
    await stopA();
    await stopB();
  });

  it('hands the jobs waiting for a worker that stops to the others', async () => {
    const h = harness(newPrefix());
    const stopA = await h.register('A');
    await h.worker(await h.submit('first', K));
    const stopB = await h.register('B');
    const holdA = h.gate('holdA');
    const held = await h.submit('held', nearK(1), { gate: 'holdA' });
    await h.started.get('holdA')!.promise;
    const moved = await h.submit('moved', nearK(2));
    assert.equal((await h.sched.getOperation(moved))?.stage, 'QUEUED');
    const stopping = stopA(); // graceful: its running job finishes, its waiting one goes to B at once
    assert.equal(await h.worker(moved), 'B');
    holdA.resolve();
    await stopping;
    assert.equal(await h.worker(held), 'A');
    assert.equal(await h.worker(await h.submit('after', nearK(3))), 'B', 'A is gone');
    await stopB();
  });

  it('runs the jobs of a SIGKILLed worker elsewhere: waiting ones once its registration expires, the running one once its lock does', async () => {
    const prefix = newPrefix();
    const h = harness(prefix);
    const a = localityChild(prefix, 'child-a');
    await a.ready();
    assert.equal(await h.worker(await h.submit('first', K)), 'child-a');
    const stopB = await h.register('B');
    const running = await h.submit('running', nearK(1), { hang: '1' });
    await a.took(running);
    const waiting = [await h.submit('waiting', nearK(2))];
    assert.equal((await h.sched.getOperation(waiting[0]!))?.stage, 'QUEUED');
    await a.kill();
    const t0 = Date.now();
    assert.equal(await h.worker(waiting[0]!), 'B');
    assert.ok(Date.now() - t0 >= 500, 'after the registration expired');
    assert.equal(await h.worker(running), 'B');
    assert.equal(h.ranBy.get(running)?.attempt, 1, 'delivered again');
    assert.equal(h.ranBy.get(waiting[0]!)?.attempt, 0);
    // the dead worker's personal queue is retired
    await eventually('personal queues of dead workers retired', () => h.sched.stats().then((s) => s.workers.map((w) => w.name).join(',')), (v) => v === 'B');
    await stopB();
  });
});
