import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { Status } from '../../common/errors.ts';
import type { JobQueue } from '../../execution/job-queue.ts';
import { NO_WORKERS, platformKey, satisfies, unsatisfiableProperties } from '../../execution/platform.ts';
import { InProcessJobQueue } from '../../scheduler/queue/in-process-queue.ts';
import { gatedWorkers, jobQueueContract, K, LINUX, nearK, spec, untilDone } from '../support/job-queue-contract.ts';

const opened: JobQueue[] = [];
jobQueueContract('in-process', {
  open: (opts) => {
    const q = new InProcessJobQueue(opts);
    opened.push(q);
    return q;
  },
  peer: (q) => q,
  closeAll: async () => {
    await Promise.all(opened.splice(0).map((q) => q.close()));
  },
});

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
  it('fails what is left with UNAVAILABLE when it closes: its state lives only here', async () => {
    const q = new InProcessJobQueue();
    const waiting = await q.submit(spec('left', { platform: { OSFamily: 'windows' } }));
    await q.close();
    assert.equal((await q.getOperation(waiting.operationName))?.error?.code, Status.UNAVAILABLE);
    await assert.rejects(q.submit(spec('after')), /closed/);
  });
});

describe('InProcessJobQueue locality', () => {
  function fleet(q: InProcessJobQueue) {
    const workers = gatedWorkers(() => q);
    const run = async (n: string, keys: string[], gateLabel?: string) => {
      const { operationName } = await q.submit(spec(n, { localityKeys: keys, requestMetadata: gateLabel ? { gate: gateLabel } : {} }));
      return operationName;
    };
    const worker = async (name: string) => (await untilDone(q, name)).worker ?? workers.ranBy.get(name)?.worker;
    return { ...workers, run, worker };
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
    assert.equal(f.ranBy.get(held)?.worker, 'A');
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
    const onA = f.ranBy.get(held)?.worker;
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
