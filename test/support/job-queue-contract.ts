// What every JobQueue does, whatever holds its state: one suite, run against the in-process
// queue (test/unit/in-process-queue.test.ts) and the BullMQ queue on a real Redis
// (test/integration/bullmq-queue.test.ts). What only one of them does stays beside it.
import { strict as assert } from 'node:assert';
import { afterEach, describe, it } from 'node:test';
import { digestOf } from '../../common/digest.ts';
import { ReapiError, Status } from '../../common/errors.ts';
import type { JobContext, JobQueue, JobSpec, OperationState } from '../../execution/job-queue.ts';
import { NO_WORKERS } from '../../execution/platform.ts';

export const LINUX = { OSFamily: 'linux' };

export interface QueueFaces {
  /** A queue over fresh, empty state. */
  open(opts?: { maxAttempts?: number }): JobQueue;
  /** Another handle on the same state, as another machine of the fleet would hold (or `q` itself). */
  peer(q: JobQueue): JobQueue;
  /** Close what open() and peer() made. */
  closeAll(): Promise<void>;
}

export function spec(n: number | string, over: Partial<JobSpec> = {}): JobSpec {
  return {
    instanceName: 'main',
    actionDigest: digestOf(Buffer.from(`action ${n}`)),
    priority: 0,
    platform: LINUX,
    doNotCache: false,
    ...over,
  };
}

export function untilDone(q: JobQueue, name: string, timeoutMs = 20_000): Promise<OperationState> {
  return new Promise((resolve, reject) => {
    let stop = () => {};
    let finished = false;
    const t = setTimeout(() => {
      stop();
      reject(new Error(`operation ${name} not done within ${timeoutMs} ms`));
    }, timeoutMs);
    stop = q.watch(name, (s) => {
      if (!s.done || finished) return;
      finished = true;
      clearTimeout(t);
      queueMicrotask(() => stop());
      resolve(s);
    });
  });
}

export function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** Locality keys of one input root, and of others sharing its subdirectory. */
export const K = ['root-k', 'sub-shared'];
export const nearK = (i: number) => [`root-k-${i}`, 'sub-shared'];

/**
 * Workers (concurrency 1) that log who ran what and at which attempt, answer their own name, and
 * hold a job whose requestMetadata.gate names a gate until it is opened. `queueFor` gives the
 * queue a worker registers with (the one queue, or one per worker as on separate machines).
 */
export function gatedWorkers(queueFor: (worker: string) => JobQueue) {
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
    queueFor(name).work({ name, platform: LINUX, concurrency: 1 }, async (ctx) => {
      ranBy.set(ctx.operationName, { worker: name, attempt: ctx.attempt });
      await ctx.markExecuting(name);
      const label = ctx.job.requestMetadata?.gate;
      if (label) {
        started.get(label)?.resolve();
        await gates.get(label)?.promise;
      }
      return Buffer.from(name);
    });
  return { ranBy, started, gate, register };
}

export function jobQueueContract(name: string, faces: QueueFaces): void {
  describe(`JobQueue contract: ${name}`, () => {
    afterEach(() => faces.closeAll());

    it('runs a job through QUEUED, EXECUTING, COMPLETED and reports every stage to watchers', async () => {
      const q = faces.open();
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
      assert.deepEqual(seen, ['QUEUED'], 'the current state first');
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
      assert.deepEqual(ctxSeen?.job.actionDigest, spec(1).actionDigest);
      const got = await q.getOperation(operationName);
      assert.equal(got?.done, true);
      assert.equal(got?.response?.toString(), 'response');
      assert.equal(await q.getOperation('operations/nope'), undefined);
      // watching a finished operation delivers its final state once
      const late: OperationState[] = [];
      const lateDone = deferred();
      q.watch(operationName, (s) => {
        late.push(s);
        lateDone.resolve();
      });
      await lateDone.promise;
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(late.length, 1);
      assert.equal(late[0]?.done, true);
      await stop();
    });

    it('merges identical in-flight actions, never with doNotCache, and not after done', async () => {
      const q = faces.open();
      const a = await q.submit(spec('m'));
      assert.deepEqual(await q.submit({ ...spec('m'), priority: 5, requestMetadata: { x: 'y' } }), { operationName: a.operationName, merged: true });
      assert.equal((await q.submit(spec('m', { platform: { OSFamily: 'windows' } }))).merged, false, 'another platform');
      assert.equal((await q.submit(spec('m', { instanceName: 'other' }))).merged, false, 'another instance');
      const nc = await q.submit(spec('m', { doNotCache: true }));
      const nc2 = await q.submit(spec('m', { doNotCache: true }));
      assert.equal(nc.merged || nc2.merged, false);
      assert.notEqual(nc.operationName, a.operationName);
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
      const q = faces.open();
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

    it('names unsatisfiable properties and only hands workers jobs they satisfy', async () => {
      const q = faces.open();
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
      // a platform first seen after the worker started is found
      const img = await q.submit(spec('img', { platform: { OSFamily: 'linux', 'container-image': 'docker://a' } }));
      await untilDone(q, img.operationName);
      assert.deepEqual(took, ['docker://a']);
      assert.equal((await q.getOperation(win.operationName))?.stage, 'QUEUED');
      await stop();
      assert.deepEqual(await q.unsatisfiable({ OSFamily: 'linux' }), ['OSFamily'], 'a stopped worker no longer counts');
    });

    it('cancels queued and running operations', async () => {
      const q = faces.open();
      const queued = await q.submit(spec('cq'));
      assert.equal(await q.cancel(queued.operationName), true);
      const st = await q.getOperation(queued.operationName);
      assert.equal(st?.done, true);
      assert.equal(st?.error?.code, Status.CANCELLED);
      assert.equal(await q.cancel(queued.operationName), false, 'already done');
      assert.equal(await q.cancel('operations/unknown'), false);

      // the worker holds its own handle (as on another machine)
      const wq = faces.peer(q);
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
      const done = untilDone(q, running.operationName);
      assert.equal(await q.cancel(running.operationName), true);
      await aborted.promise;
      assert.equal((await done).error?.code, Status.CANCELLED);
      // stop() returns once the handler is over; the cancelled queued job never ran, the running one ran once
      await stop();
      assert.deepEqual(delivered, [running.operationName]);
    });

    it('delivers a throwing handler again; after maxAttempts a status error keeps its code, any other is UNAVAILABLE', async () => {
      const q = faces.open({ maxAttempts: 3 });
      const attempts: number[] = [];
      const stop = await q.work({ name: 'w', platform: LINUX, concurrency: 1 }, async (ctx) => {
        attempts.push(ctx.attempt);
        if (ctx.job.requestMetadata?.mode === 'flaky' && ctx.attempt > 0) return Buffer.from('finally');
        if (ctx.job.requestMetadata?.mode === 'reapi') throw new ReapiError(Status.FAILED_PRECONDITION, 'missing input');
        throw new Error('docker is gone');
      });
      const r = await q.submit(spec('r', { requestMetadata: { mode: 'reapi' } }));
      assert.deepEqual((await untilDone(q, r.operationName)).error, { code: Status.FAILED_PRECONDITION, message: 'missing input' });
      assert.deepEqual(attempts, [0, 1, 2]);
      attempts.length = 0;
      const p = await q.submit(spec('p'));
      const plain = await untilDone(q, p.operationName);
      assert.equal(plain.error?.code, Status.UNAVAILABLE);
      assert.match(plain.error?.message ?? '', /^action [0-9a-f]{64}\/\d+ was delivered 3 times and failed each time; last worker: w \(it failed: docker is gone\)$/);
      assert.deepEqual(attempts, [0, 1, 2]);
      attempts.length = 0;
      const f = await q.submit(spec('f', { requestMetadata: { mode: 'flaky' } }));
      assert.equal((await untilDone(q, f.operationName)).response?.toString(), 'finally');
      assert.deepEqual(attempts, [0, 1]);
      await stop();
    });

    it('fails a queued operation with a given error, once; running handlers see their signal aborted', async () => {
      const q = faces.open();
      const queued = await q.submit(spec('fail-queued', { platform: { OSFamily: 'nowhere' } }));
      assert.equal(await q.fail(queued.operationName, { code: Status.FAILED_PRECONDITION, message: 'no worker for you' }), true);
      assert.deepEqual((await untilDone(q, queued.operationName)).error, { code: Status.FAILED_PRECONDITION, message: 'no worker for you' });
      assert.equal(await q.fail(queued.operationName, { code: Status.INTERNAL, message: 'again' }), false, 'already done');
      assert.equal(await q.fail('operations/unknown', { code: Status.INTERNAL, message: 'x' }), false);
      const started = deferred();
      const aborted = deferred();
      const stop = await faces.peer(q).work({ name: 'w', platform: LINUX, concurrency: 1 }, async (ctx) => {
        started.resolve();
        await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve(), { once: true }));
        aborted.resolve();
        throw new Error('aborted');
      });
      const running = await q.submit(spec('fail-running'));
      await started.promise;
      assert.equal(await q.fail(running.operationName, { code: Status.UNAVAILABLE, message: 'gone' }), true);
      await aborted.promise;
      assert.equal((await untilDone(q, running.operationName)).error?.message, 'gone');
      await stop();
    });

    it('respects worker concurrency', async () => {
      const q = faces.open();
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
    });
  });
}
