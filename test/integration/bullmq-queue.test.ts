// The BullMQ JobQueue against a real redis-server: the JobQueue contract every queue follows
// (test/support/job-queue-contract.ts), and what only a queue shared by a fleet does: a restarted
// scheduler, orphaned operations, workers that die (child processes SIGKILLed mid-job), locality
// across machines.
import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { after, afterEach, before, describe, it } from 'node:test';
import { Status } from '../../common/errors.ts';
import { BullmqJobQueue, bullPriority, BULL_PRIORITY_MAX, type BullmqJobQueueOptions } from '../../scheduler/queue/bullmq/index.ts';
import type { JobQueue, OperationState } from '../../execution/job-queue.ts';
import { gatedWorkers, jobQueueContract, K, LINUX, nearK, spec, untilDone } from '../support/job-queue-contract.ts';
import { startRedis, type TestRedis } from '../support/redis.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CHILD = fileURLToPath(new URL('../support/queue-worker-child.ts', import.meta.url));
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

const prefixOf = new WeakMap<JobQueue, string>();

function queue(prefix: string, over: Partial<BullmqJobQueueOptions> = {}): BullmqJobQueue {
  const q = new BullmqJobQueue({ redisUrl: redis.url, prefix, ...FAST, ...over });
  open.push(q);
  prefixOf.set(q, prefix);
  return q;
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

jobQueueContract('BullMQ on Redis', {
  open: (opts) => queue(newPrefix(), opts),
  peer: (q) => queue(prefixOf.get(q)!),
  closeAll: async () => {
    await Promise.all(open.splice(0).map((q) => q.close()));
  },
});

describe('BullmqJobQueue', () => {
  it('maps REAPI priority onto BullMQ priority', () => {
    assert.ok(bullPriority(-1) < bullPriority(0) && bullPriority(0) < bullPriority(1));
    assert.equal(bullPriority(-(2 ** 31)), 1);
    assert.equal(bullPriority(2 ** 31 - 1), BULL_PRIORITY_MAX);
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

});

// ---------------------------------------------------------------------------------------------
// Locality

/** A worker in a child process that runs jobs at once, or hangs on those with requestMetadata.hang. */
const LOCALITY_CHILD = `
import { BullmqJobQueue } from './scheduler/queue/bullmq/index.ts';
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
  /** Workers on queues of their own (as on separate machines), and a scheduler's queue to submit to. */
  function harness(prefix: string, over: Partial<BullmqJobQueueOptions> = {}) {
    const sched = queue(prefix, over);
    const workers = gatedWorkers(() => queue(prefix, over));
    const submit = async (n: string, keys: string[], meta: Record<string, string> = {}) =>
      (await sched.submit(spec(`${prefix}-${n}`, { localityKeys: keys, requestMetadata: meta }))).operationName;
    const worker = async (name: string) => (await untilDone(sched, name)).response?.toString();
    return { sched, ...workers, submit, worker };
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
