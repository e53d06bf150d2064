// A queued operation whose workers are all gone fails after the grace period, naming the platform.
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { Status } from '../../common/errors.ts';
import { InProcessJobQueue } from '../../scheduler/queue/in-process-queue.ts';
import { watchForNoWorker } from '../../scheduler/no-worker-watchdog.ts';
import { deferred, spec, untilDone } from '../support/job-queue-contract.ts';

test('a job queued while a worker was live fails with FAILED_PRECONDITION once no worker has been for the grace period', async () => {
  const q = new InProcessJobQueue();
  const platform = { OSFamily: 'linux', gpu: 'a100' };
  const release = deferred();
  const took = deferred();
  const stop = await q.work({ name: 'gpu-1', platform, concurrency: 1 }, async () => {
    took.resolve();
    await release.promise;
    return Buffer.from('done');
  });
  const first = await q.submit(spec('first', { platform }));
  await took.promise;
  const second = await q.submit(spec('second', { platform }));
  const unwatch = watchForNoWorker(q, second.operationName, platform, { graceMs: 300, pollMs: 25 });
  // While the worker lives, the queued job waits.
  await new Promise((r) => setTimeout(r, 400));
  assert.equal((await q.getOperation(second.operationName))?.done, false);
  // The worker stops (after its running job): nobody can run `second` any more.
  const stopped = stop();
  release.resolve();
  await stopped;
  assert.equal((await untilDone(q, first.operationName)).response?.toString(), 'done');
  const t0 = Date.now();
  const failed = await untilDone(q, second.operationName, 5000);
  assert.ok(Date.now() - t0 >= 250, 'not before the grace period');
  assert.equal(failed.error?.code, Status.FAILED_PRECONDITION);
  assert.match(failed.error?.message ?? '', /^no live worker offers platform properties OSFamily=linux, gpu=a100, and none has been for [\d.]+ s while this action waited in the queue; start a worker/);
  unwatch();
  await q.close();
});

test('a platform still offered by another worker is not failed', async () => {
  const q = new InProcessJobQueue();
  const platform = { OSFamily: 'linux' };
  const stopOther = await q.work({ name: 'busy', platform, concurrency: 1 }, () => new Promise(() => {}));
  await q.submit(spec('blocker', { platform }));
  const waiting = await q.submit(spec('waiting', { platform }));
  const unwatch = watchForNoWorker(q, waiting.operationName, platform, { graceMs: 100, pollMs: 20 });
  await new Promise((r) => setTimeout(r, 400));
  assert.equal((await q.getOperation(waiting.operationName))?.done, false);
  unwatch();
  void stopOther;
  await q.close();
});
