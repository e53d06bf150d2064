import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { digestOf } from '../../common/digest.ts';
import { ReapiError, Status } from '../../common/errors.ts';
import { InProcessJobQueue } from '../../scheduler/in-process-queue.ts';
import type { JobContext, JobQueue, JobSpec, OperationState } from '../../execution/job-queue.ts';
import { NO_WORKERS, platformKey, satisfies, unsatisfiableProperties } from '../../execution/platform.ts';

const LINUX = { OSFamily: 'linux' };

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

function untilDone(q: JobQueue, name: string): Promise<OperationState> {
  return new Promise((resolve) => {
    const stop = q.watch(name, (s) => {
      if (s.done) {
        queueMicrotask(() => stop());
        resolve(s);
      }
    });
  });
}

function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

describe('platform helpers', () => {
  it('keys platforms canonically and matches with *', () => {
    assert.equal(platformKey({ b: '2', a: '1' }), 'a=1,b=2');
    assert.notEqual(platformKey({ a: '1,b=2' }), platformKey({ a: '1', b: '2' }));
    assert.equal(platformKey({}), '');
    assert.ok(satisfies({ OSFamily: 'linux', 'container-image': '*' }, { OSFamily: 'linux', 'container-image': 'docker://x' }));
    assert.ok(!satisfies({ OSFamily: 'linux' }, { OSFamily: 'linux', 'container-image': 'docker://x' }));
    assert.ok(satisfies({ OSFamily: 'linux' }, {}));
    assert.deepEqual(unsatisfiableProperties([], {}), [NO_WORKERS]);
    assert.deepEqual(unsatisfiableProperties([], { b: '1', a: '2' }), ['a', 'b']);
    // each property offered by some worker but never together: the best worker's misses
    assert.deepEqual(unsatisfiableProperties([{ a: '1' }, { b: '1', c: '1' }], { a: '1', b: '1', c: '1' }), ['a']);
  });
});

describe('InProcessJobQueue', () => {
  it('runs a job through QUEUED, EXECUTING, COMPLETED and reports every stage to watchers', async () => {
    const q = new InProcessJobQueue();
    const { operationName, merged } = await q.submit(spec(1));
    assert.match(operationName, /^operations\/[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(merged, false);
    const seen: string[] = [];
    const done = new Promise<OperationState>((resolve) =>
      q.watch(operationName, (s) => {
        seen.push(s.stage);
        if (s.done) resolve(s);
      }),
    );
    assert.deepEqual(seen, ['QUEUED'], 'the current state is delivered at once');
    let ctxSeen: JobContext | undefined;
    const stop = await q.work({ name: 'w1', platform: LINUX, concurrency: 2 }, async (ctx) => {
      ctxSeen = ctx;
      await ctx.markExecuting('w1');
      return Buffer.from('response');
    });
    const final = await done;
    assert.deepEqual(seen, ['QUEUED', 'EXECUTING', 'COMPLETED']);
    assert.equal(final.response?.toString(), 'response');
    assert.equal(final.worker, 'w1');
    assert.equal(ctxSeen?.attempt, 0);
    assert.equal(ctxSeen?.queuedAt, final.queuedAt);
    assert.equal(ctxSeen?.operationName, operationName);
    assert.equal((await q.getOperation(operationName))?.done, true);
    // watching a finished operation delivers its final state once
    const late: OperationState[] = [];
    q.watch(operationName, (s) => late.push(s));
    assert.equal(late.length, 1);
    assert.equal(late[0]?.done, true);
    await stop();
    await q.close();
  });

  it('merges identical in-flight actions, never with doNotCache, and not after done', async () => {
    const q = new InProcessJobQueue();
    const a = await q.submit(spec('m'));
    const b = await q.submit({ ...spec('m'), priority: 5, requestMetadata: { x: 'y' } });
    assert.deepEqual(b, { operationName: a.operationName, merged: true });
    const other = await q.submit(spec('m', { platform: { OSFamily: 'windows' } }));
    assert.equal(other.merged, false);
    const nc = await q.submit(spec('m', { doNotCache: true }));
    assert.equal(nc.merged, false);
    assert.notEqual(nc.operationName, a.operationName);
    const nc2 = await q.submit(spec('m', { doNotCache: true }));
    assert.notEqual(nc2.operationName, nc.operationName);
    const stop = await q.work({ name: 'w', platform: { OSFamily: '*' }, concurrency: 4 }, async () => Buffer.from('ok'));
    await untilDone(q, a.operationName);
    const c = await q.submit(spec('m'));
    assert.equal(c.merged, false);
    assert.notEqual(c.operationName, a.operationName);
    await untilDone(q, c.operationName);
    await stop();
    await q.close();
  });

  it('runs lower priority values first, FIFO among equals', async () => {
    const q = new InProcessJobQueue();
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
    await q.close();
  });

  it('names unsatisfiable properties and only hands workers jobs they satisfy', async () => {
    const q = new InProcessJobQueue();
    assert.deepEqual(await q.unsatisfiable({}), [NO_WORKERS]);
    assert.deepEqual(await q.unsatisfiable({ OSFamily: 'linux', gpu: '1' }), ['OSFamily', 'gpu']);
    const took: string[] = [];
    const stop = await q.work({ name: 'docker', platform: { OSFamily: 'linux', 'container-image': '*' }, concurrency: 1 }, async (ctx) => {
      took.push(ctx.job.platform['container-image'] ?? '');
      return Buffer.alloc(0);
    });
    assert.deepEqual(await q.unsatisfiable({ OSFamily: 'linux', 'container-image': 'docker://a' }), []);
    assert.deepEqual(await q.unsatisfiable({ OSFamily: 'windows', gpu: '1', 'container-image': 'x' }), ['OSFamily', 'gpu']);
    const win = await q.submit(spec('win', { platform: { OSFamily: 'windows' } }));
    const img = await q.submit(spec('img', { platform: { OSFamily: 'linux', 'container-image': 'docker://a' } }));
    await untilDone(q, img.operationName);
    assert.deepEqual(took, ['docker://a']);
    assert.equal((await q.getOperation(win.operationName))?.stage, 'QUEUED');
    await stop();
    assert.deepEqual(await q.unsatisfiable({ OSFamily: 'linux' }), ['OSFamily'], 'a stopped worker no longer counts');
    await q.close();
    assert.equal((await q.getOperation(win.operationName))?.error?.code, Status.UNAVAILABLE, 'close fails what is left');
  });

  it('cancels queued and running operations', async () => {
    const q = new InProcessJobQueue();
    const queued = await q.submit(spec('cq'));
    assert.equal(await q.cancel(queued.operationName), true);
    const st = await q.getOperation(queued.operationName);
    assert.equal(st?.done, true);
    assert.equal(st?.error?.code, Status.CANCELLED);
    assert.equal(await q.cancel(queued.operationName), false, 'already done');
    assert.equal(await q.cancel('operations/unknown'), false);

    const started = deferred();
    const aborted = deferred();
    let deliveries = 0;
    const stop = await q.work({ name: 'w', platform: LINUX, concurrency: 1 }, async (ctx) => {
      deliveries++;
      await ctx.markExecuting('w');
      started.resolve();
      await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve(), { once: true }));
      aborted.resolve();
      throw new Error('aborted');
    });
    const running = await q.submit(spec('cr'));
    await started.promise;
    const done = untilDone(q, running.operationName);
    assert.equal(await q.cancel(running.operationName), true);
    await aborted.promise;
    const final = await done;
    assert.equal(final.error?.code, Status.CANCELLED);
    // the worker's stop() returns (its handler is over) and the job was delivered only once
    await stop();
    assert.equal(deliveries, 1);
    await q.close();
  });

  it('retries a throwing handler, then fails with its code after maxAttempts', async () => {
    const q = new InProcessJobQueue({ maxAttempts: 3 });
    const attempts: number[] = [];
    const stop = await q.work({ name: 'w', platform: LINUX, concurrency: 1 }, async (ctx) => {
      attempts.push(ctx.attempt);
      if (ctx.job.requestMetadata?.mode === 'flaky' && ctx.attempt > 0) return Buffer.from('finally');
      if (ctx.job.requestMetadata?.mode === 'reapi') throw new ReapiError(Status.FAILED_PRECONDITION, 'missing input');
      throw new Error('boom');
    });
    const r = await q.submit(spec('r', { requestMetadata: { mode: 'reapi' } }));
    const rs = await untilDone(q, r.operationName);
    assert.deepEqual(rs.error, { code: Status.FAILED_PRECONDITION, message: 'missing input' });
    assert.deepEqual(attempts, [0, 1, 2]);
    attempts.length = 0;
    const p = await q.submit(spec('p'));
    assert.equal((await untilDone(q, p.operationName)).error?.code, Status.INTERNAL);
    attempts.length = 0;
    const f = await q.submit(spec('f', { requestMetadata: { mode: 'flaky' } }));
    assert.equal((await untilDone(q, f.operationName)).response?.toString(), 'finally');
    assert.deepEqual(attempts, [0, 1]);
    await stop();
    await q.close();
  });

  it('respects worker concurrency', async () => {
    const q = new InProcessJobQueue();
    let running = 0;
    let peak = 0;
    const stop = await q.work({ name: 'w', platform: LINUX, concurrency: 2 }, async () => {
      running++;
      peak = Math.max(peak, running);
      await new Promise((r) => setTimeout(r, 10));
      running--;
      return Buffer.alloc(0);
    });
    const ops = await Promise.all([1, 2, 3, 4, 5].map((i) => q.submit(spec(`c${i}`))));
    await Promise.all(ops.map((o) => untilDone(q, o.operationName)));
    assert.equal(peak, 2);
    await stop();
    await q.close();
  });
});

describe('InProcessJobQueue locality', () => {
  const K = ['root-k', 'sub-shared'];
  /** Keys sharing the subdirectory of K (another input root around the same inputs). */
  const nearK = (i: number) => [`root-k-${i}`, 'sub-shared'];

  /** Workers that log who ran what, and hold jobs whose requestMetadata.gate names an open gate. */
  function fleet(q: InProcessJobQueue) {
    const ranBy = new Map<string, string>();
    const started = new Map<string, ReturnType<typeof deferred<void>>>();
    const gates = new Map<string, ReturnType<typeof deferred<void>>>();
    const gate = (label: string) => {
      const g = deferred();
      gates.set(label, g);
      started.set(label, deferred());
      return g;
    };
    const register = (name: string) =>
      q.work({ name, platform: LINUX, concurrency: 1 }, async (ctx) => {
        const label = ctx.job.requestMetadata?.gate;
        ranBy.set(ctx.operationName, name);
        if (label) {
          started.get(label)?.resolve();
          await gates.get(label)?.promise;
        }
        return Buffer.from(name);
      });
    const run = async (n: string, keys: string[], gateLabel?: string) => {
      const { operationName } = await q.submit(spec(n, { localityKeys: keys, requestMetadata: gateLabel ? { gate: gateLabel } : {} }));
      return operationName;
    };
    const worker = async (name: string) => (await untilDone(q, name)).worker ?? ranBy.get(name);
    return { ranBy, started, gate, register, run, worker };
  }

  async function primeA(q: InProcessJobQueue, f: ReturnType<typeof fleet>) {
    // B is registered first, so it is the one that takes shared jobs when both are idle; A runs
    // the first job with keys K while B is busy.
    const stopB = await f.register('B');
    const stopA = await f.register('A');
    const busyB = f.gate('busyB');
    const b = await f.run('busy-b', ['other'], 'busyB');
    await f.started.get('busyB')!.promise;
    const first = await f.run('first', K);
    assert.equal(await f.worker(first), 'A');
    busyB.resolve();
    assert.equal(await f.worker(b), 'B');
    await new Promise((r) => setImmediate(r)); // B's slot is free once its handler has returned
    return { stopA, stopB };
  }

  it('sends jobs sharing locality keys to the worker that ran them; others to whoever is free', async () => {
    const q = new InProcessJobQueue();
    const f = fleet(q);
    const { stopA, stopB } = await primeA(q, f);
    for (let i = 0; i < 4; i++) assert.equal(await f.worker(await f.run(`near-${i}`, nearK(i))), 'A', `job ${i} sharing K`);
    assert.equal(await f.worker(await f.run('same', K)), 'A');
    // unrelated keys, and no keys: the shared queue, where B (first registered, idle) takes them
    assert.equal(await f.worker(await f.run('unrelated', ['x', 'y'])), 'B');
    assert.equal(await f.worker(await f.run('none', [])), 'B');
    await stopA();
    await stopB();
    await q.close();
  });

  it('with locality off, the same jobs go to whoever is free', async () => {
    const q = new InProcessJobQueue({ locality: false });
    const f = fleet(q);
    const stopB = await f.register('B');
    const stopA = await f.register('A');
    const busyB = f.gate('busyB');
    const b = await f.run('busy-b', ['other'], 'busyB');
    await f.started.get('busyB')!.promise;
    assert.equal(await f.worker(await f.run('first', K)), 'A');
    busyB.resolve();
    await untilDone(q, b);
    await new Promise((r) => setImmediate(r)); // B's slot is free once its handler has returned
    for (let i = 0; i < 3; i++) assert.equal(await f.worker(await f.run(`near-${i}`, nearK(i))), 'B');
    await stopA();
    await stopB();
    await q.close();
  });

  it('uses the shared queue when the preferred worker already has `concurrency` jobs waiting', async () => {
    const q = new InProcessJobQueue();
    const f = fleet(q);
    const { stopA, stopB } = await primeA(q, f);
    const holdA = f.gate('holdA');
    const held = await f.run('held', nearK(1), 'holdA');
    await f.started.get('holdA')!.promise;
    assert.equal(f.ranBy.get(held), 'A');
    const waiting = await f.run('waits-for-a', nearK(2)); // A's personal queue: 0 waiting < 1
    const overflow = await f.run('overflow', nearK(3)); // A has 1 waiting: shared, B takes it
    assert.equal(await f.worker(overflow), 'B');
    assert.equal((await q.getOperation(waiting))?.stage, 'QUEUED', 'still waiting for A');
    const st = await q.stats();
    assert.equal(st.platforms.reduce((n, p) => n + p.waiting, 0), 1, 'stats count personal jobs');
    holdA.resolve();
    assert.equal(await f.worker(held), 'A');
    assert.equal(await f.worker(waiting), 'A');
    await stopA();
    await stopB();
    await q.close();
  });

  it('lists free workers other than the excluded one, and submits to a named worker', async () => {
    const q = new InProcessJobQueue();
    const f = fleet(q);
    const stopB = await f.register('B');
    const stopA = await f.register('A');
    assert.deepEqual((await q.freeWorkers(LINUX, 'A')).sort(), ['B']);
    assert.deepEqual((await q.freeWorkers({ ...LINUX, gpu: '1' }, 'A')).sort(), [], 'only workers satisfying the platform');
    // A busy: not free; a job named for B runs on B even though it shares no keys with it
    const holdA = f.gate('holdA');
    const held = await f.run('held', ['a-only'], 'holdA');
    await f.started.get('holdA')!.promise;
    const onA = f.ranBy.get(held);
    const other = onA === 'A' ? 'B' : 'A';
    assert.deepEqual(await q.freeWorkers(LINUX, other), [], `${onA} is busy`);
    assert.deepEqual(await q.freeWorkers(LINUX, onA!), [other]);
    const { operationName } = await q.submit(spec('named', {}), { worker: other });
    assert.equal(await f.worker(operationName), other);
    holdA.resolve();
    await untilDone(q, held);
    await stopA();
    await stopB();
    await q.close();
  });

  it('hands the waiting jobs of a worker that stops to the others; cancel still works on them', async () => {
    const q = new InProcessJobQueue();
    const f = fleet(q);
    const { stopA, stopB } = await primeA(q, f);
    const holdA = f.gate('holdA');
    const held = await f.run('held', nearK(1), 'holdA');
    await f.started.get('holdA')!.promise;
    const cancelled = await f.run('cancelled', nearK(2)); // waits on A's personal queue
    assert.equal(await q.cancel(cancelled), true);
    const moved = await f.run('moved', nearK(3)); // waits on A's personal queue
    assert.equal((await q.getOperation(moved))?.stage, 'QUEUED');
    const stopping = stopA(); // waits for A's running job, but hands its waiting ones over at once
    assert.equal(await f.worker(moved), 'B');
    assert.equal((await q.getOperation(cancelled))?.error?.code, Status.CANCELLED);
    assert.equal(f.ranBy.has(cancelled), false);
    holdA.resolve();
    await stopping;
    assert.equal(await f.worker(held), 'A');
    // A is gone: jobs sharing K now go to B
    assert.equal(await f.worker(await f.run('after', nearK(4))), 'B');
    await stopB();
    await q.close();
  });
});
