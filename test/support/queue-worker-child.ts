// A BullMQ queue worker in its own process, for tests that SIGKILL it mid-job.
// Options come as JSON in REAPI_QUEUE_CHILD: BullmqJobQueueOptions plus `workerName` and
// `platform`. For each job it marks the operation EXECUTING, prints `took <operation> <attempt>`
// on stdout and then hangs until the operation is cancelled.
import { BullmqJobQueue, type BullmqJobQueueOptions } from '../../scheduler/queue/bullmq/index.ts';
import type { PlatformProperties } from '../../execution/job-queue.ts';

const opts = JSON.parse(process.env.REAPI_QUEUE_CHILD ?? '{}') as BullmqJobQueueOptions & {
  workerName: string;
  platform: PlatformProperties;
};
const queue = new BullmqJobQueue(opts);
await queue.work({ name: opts.workerName, platform: opts.platform, concurrency: 1 }, async (ctx) => {
  await ctx.markExecuting(opts.workerName);
  process.stdout.write(`took ${ctx.operationName} ${ctx.attempt}\n`);
  await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve(), { once: true }));
  throw new Error('cancelled');
});
process.stdout.write('ready\n');
process.on('SIGTERM', () => {
  void queue.close().then(() => process.exit(0));
});
