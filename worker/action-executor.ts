// The worker's job handler: one job from its JobSpec to the ExecuteResponse the queue publishes.
// The execution layers (worker/executors/) are composed here, in one place, as bb_worker composes
// its BuildExecutors (innermost first):
//
//   LocalExecutor     materialise, run, collect, for one run      (a RunExecutor)
//   MetricsExecutor   counts every run and its stages             (a RunExecutor)
//   SingleRunExecutor one run of the job                          (an ActionExecutor from here on)
//   VerifyingExecutor a second run under variations when the job says `verify`
//   CachingExecutor   the only writer of the ActionCache
//
// An audit job goes through AuditingExecutor and CachingExecutor; a verification's second run,
// sent here by another worker, is one run answered to that worker.
//
// Errors that are the action's own (bad input, missing blobs, timeouts) become the response's
// status; infrastructure errors are thrown so the queue delivers the job again, maybe elsewhere.
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { ActionCache } from '../cas/action-cache.ts';
import type { BlobStore } from '../cas/blob-store.ts';
import type { Config } from '../common/config.ts';
import { digestKey } from '../common/digest.ts';
import { Status, toRpcStatus } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import type { Metrics } from '../common/metrics.ts';
import { loadJobAction } from '../execution/action-loader.ts';
import type { FeedbackStore } from '../execution/feedback.ts';
import type { JobContext, JobHandler, JobQueue, PlatformProperties } from '../execution/job-queue.ts';
import type { ReportStore } from '../execution/report-store.ts';
import type { Runner } from '../execution/runner.ts';
import { encode } from '../protos/index.ts';
import type { LocalContentCache } from './content-cache.ts';
import { AuditingExecutor } from './executors/auditing-executor.ts';
import { CachingExecutor } from './executors/caching-executor.ts';
import { LocalExecutor } from './executors/local-executor.ts';
import { MetricsExecutor } from './executors/metrics-executor.ts';
import { SingleRunExecutor } from './executors/single-run-executor.ts';
import { secondRunVariation, VerifyingExecutor } from './executors/verifying-executor.ts';
import { encodeSecondRun } from './second-run-elsewhere.ts';
import type { VariationSupport } from './variations.ts';
import { Verifier } from './verifier.ts';

export interface ActionExecutorDeps {
  workerName: string;
  /** The CAS: where inputs come from and outputs go. */
  blobs: BlobStore;
  actionCache: ActionCache;
  cache: LocalContentCache;
  runner: Runner;
  /** The runner of a job by its platform (e.g. Docker for `container-image`); default: `runner`. */
  runnerFor?: (platform: PlatformProperties) => Runner;
  /** Exec roots are created under here, one fresh directory per run. */
  execDir: string;
  config: Config;
  metrics: Metrics;
  logger: Logger;
  reports: ReportStore;
  feedback: FeedbackStore;
  variationSupport: VariationSupport;
  /** The queue this worker takes jobs from: a verification's second run may go to another worker. */
  queue?: JobQueue;
}

/** Status codes that describe the action or its inputs, answered to the client rather than retried. */
const CLIENT_ERRORS = new Set<number>([
  Status.INVALID_ARGUMENT,
  Status.FAILED_PRECONDITION,
  Status.NOT_FOUND,
  Status.PERMISSION_DENIED,
  Status.CANCELLED,
  Status.DEADLINE_EXCEEDED,
  Status.OUT_OF_RANGE,
  Status.RESOURCE_EXHAUSTED,
]);

export function createActionExecutor(deps: ActionExecutorDeps): JobHandler {
  const { blobs, config, metrics, workerName } = deps;
  const runnerFor = (platform: PlatformProperties) => deps.runnerFor?.(platform) ?? deps.runner;
  const runs = new MetricsExecutor(
    new LocalExecutor({ workerName, blobs, cache: deps.cache, runnerFor, execDir: deps.execDir, config, logger: deps.logger, variationSupport: deps.variationSupport }),
    metrics,
  );
  const verifier = new Verifier({ workerName, blobs, metrics, reports: deps.reports, feedback: deps.feedback });
  const executions = new CachingExecutor(
    new VerifyingExecutor(new SingleRunExecutor(runs), { runs, verifier, feedback: deps.feedback, metrics, config, variationSupport: deps.variationSupport, workerName, queue: deps.queue }),
    deps.actionCache,
    workerName,
  );
  const audits = new CachingExecutor(new AuditingExecutor(runs, verifier, { config, variationSupport: deps.variationSupport }), deps.actionCache, workerName);

  return async (ctx: JobContext): Promise<Buffer> => {
    const { job } = ctx;
    const log = deps.logger.child({ operation: ctx.operationName, action: digestKey(job.actionDigest), ...job.requestMetadata });
    await ctx.markExecuting(workerName);
    try {
      const loaded = await loadJobAction(blobs, job, config.execution);
      if (job.verificationRun) {
        // The second run of a verification another worker started: it compares and caches.
        const planned = secondRunVariation(loaded, { config, variationSupport: deps.variationSupport });
        const run = await runs.run({ ctx, loaded, variation: planned });
        log.info({ firstWorker: job.verificationRun.firstWorker, outcome: run.verdict.label }, 'ran the second run of a verification');
        return encodeSecondRun(run.result, { label: run.verdict.label, described: planned.described });
      }
      if (job.audit) {
        const out = await audits.execute({ ctx, loaded, log });
        return encode('ExecuteResponse', { result: out.run.result, status: { code: Status.OK, message: '' } });
      }
      const out = await executions.execute({ ctx, loaded, log });
      log.info({ exitCode: out.run.result.exit_code ?? 0, outcome: out.run.verdict.label, cached: out.cacheable, verified: out.verified }, 'action executed');
      return encode('ExecuteResponse', { result: out.run.result, status: { code: out.status, message: out.message }, message: out.message });
    } catch (err) {
      const status = toRpcStatus(err);
      if (!CLIENT_ERRORS.has(status.code)) {
        metrics.actionsExecuted.inc({ outcome: 'error' });
        log.error({ err }, 'action failed on this worker; it will be retried');
        throw err;
      }
      metrics.actionsExecuted.inc({ outcome: status.code === Status.CANCELLED ? 'cancelled' : 'rejected' });
      log.warn({ code: status.code }, status.message);
      return encode('ExecuteResponse', { status });
    }
  };
}

export async function prepareExecDir(workDir: string): Promise<string> {
  const execDir = join(workDir, 'exec');
  // Leftovers of a previous run (a crash) are never reused.
  await rm(execDir, { recursive: true, force: true });
  await mkdir(execDir, { recursive: true, mode: 0o711 });
  return execDir;
}
