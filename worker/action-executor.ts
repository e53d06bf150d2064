// The worker's job handler: one action from Action digest to ExecuteResponse.
// Fetch Action and Command, materialise a fresh exec root from the local content cache, run it
// with the Runner, collect and upload the declared outputs, write the ActionResult when it may be
// cached, and always remove the exec root.
//
// Errors that are the action's own (bad input, missing blobs, timeouts) become the response's
// status; infrastructure errors are thrown so the queue delivers the job again, maybe elsewhere.
import { randomUUID } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { ActionCache } from '../cas/action-cache.ts';
import type { BlobStore } from '../cas/blob-store.ts';
import type { Config } from '../common/config.ts';
import { digestKey } from '../common/digest.ts';
import { ReapiError, Status, toRpcStatus } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import type { Metrics } from '../common/metrics.ts';
import { encode, packAny, type MessageInput } from '../protos/index.ts';
import { loadAction, type Command } from '../scheduler/action-loader.ts';
import type { JobContext, JobHandler, PlatformProperties } from '../scheduler/job-queue.ts';
import { satisfies } from '../scheduler/platform.ts';
import type { LocalContentCache } from './content-cache.ts';
import { createOutputParents, materializeInputRoot } from './materializer.ts';
import { collectOutputs, uploadStdStreams } from './output-collector.ts';
import type { ResourceLimits, RunOutcome, Runner } from './runner.ts';

export interface ActionExecutorDeps {
  workerName: string;
  /** The CAS: where inputs come from and outputs go. */
  blobs: BlobStore;
  actionCache: ActionCache;
  cache: LocalContentCache;
  runner: Runner;
  /** Exec roots are created under here, one fresh directory per action. */
  execDir: string;
  config: Config;
  metrics: Metrics;
  logger: Logger;
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

type Timestamp = { seconds: number; nanos: number };
const timestamp = (ms: number): Timestamp => ({ seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 });

export function limitsFor(config: Config, platform: PlatformProperties): ResourceLimits {
  const base = config.worker.limits;
  const match = config.worker.platformLimits.find((p) => satisfies(platform, p.match));
  return { ...base, ...Object.fromEntries(Object.entries(match?.limits ?? {}).filter(([, v]) => v !== undefined)) };
}

function environment(command: Command): Record<string, string> {
  const env: Record<string, string> = {};
  for (const v of command.environment_variables) env[v.name] = v.value;
  return env;
}

/** Outcome label and, for runs a limit ended, the explanation for the client. */
function describe(outcome: RunOutcome): { label: string; status: number; message: string } {
  const f = outcome.failure;
  if (!f) return { label: outcome.exitCode === 0 ? 'success' : 'nonzero-exit', status: Status.OK, message: '' };
  if (f.kind === 'timeout') return { label: 'timeout', status: Status.DEADLINE_EXCEEDED, message: f.message };
  if (f.kind === 'cancelled') return { label: 'cancelled', status: Status.CANCELLED, message: f.message };
  if (f.kind === 'sandbox-error') return { label: 'error', status: Status.INTERNAL, message: f.message };
  return { label: f.kind, status: Status.OK, message: f.message };
}

export function createActionExecutor(deps: ActionExecutorDeps): JobHandler {
  const { blobs, actionCache, cache, runner, config, metrics } = deps;

  return async (ctx: JobContext): Promise<Buffer> => {
    const { job } = ctx;
    const log = deps.logger.child({ operation: ctx.operationName, action: digestKey(job.actionDigest), ...job.requestMetadata });
    const workerStart = Date.now();
    await ctx.markExecuting(deps.workerName);
    const execRoot = join(deps.execDir, randomUUID());
    let release = () => {};
    try {
      const loaded = await loadAction(blobs, job.actionDigest, config.execution);
      const { action, command } = loaded;

      const fetchStart = Date.now();
      const inputs = await materializeInputRoot(cache, action.input_root_digest!, execRoot);
      release = inputs.release;
      await createOutputParents(execRoot, command);
      const fetchEnd = Date.now();

      const outcome = await runner.run(
        {
          execRoot,
          argv: command.arguments,
          env: environment(command),
          workingDirectory: command.working_directory,
          timeoutMs: loaded.timeoutMs,
          limits: limitsFor(config, loaded.platform),
          maxOutputBytes: config.worker.maxOutputBytes,
        },
        ctx.signal,
      );
      const execEnd = Date.now();
      const verdict = describe(outcome);
      if (verdict.status === Status.INTERNAL) throw new ReapiError(Status.INTERNAL, `sandbox failed: ${verdict.message}`);

      const outputs = await collectOutputs(execRoot, command, blobs);
      if (outcome.truncated) {
        const note = `stdout/stderr exceeded ${config.worker.maxOutputBytes} bytes and were cut there`;
        verdict.message = verdict.message ? `${verdict.message}; ${note}` : note;
      }
      const stderr = verdict.message ? Buffer.concat([outcome.stderr, Buffer.from(`\nreapi: ${verdict.message}\n`)]) : outcome.stderr;
      const std = await uploadStdStreams(outcome.stdout, stderr, blobs);
      const uploadEnd = Date.now();

      const result: MessageInput<'ActionResult'> = {
        ...outputs.result,
        exit_code: outcome.exitCode,
        ...std,
        execution_metadata: {
          worker: deps.workerName,
          queued_timestamp: timestamp(ctx.queuedAt ?? workerStart),
          worker_start_timestamp: timestamp(workerStart),
          input_fetch_start_timestamp: timestamp(fetchStart),
          input_fetch_completed_timestamp: timestamp(fetchEnd),
          execution_start_timestamp: timestamp(outcome.startedAt.getTime()),
          execution_completed_timestamp: timestamp(outcome.completedAt.getTime()),
          output_upload_start_timestamp: timestamp(execEnd),
          output_upload_completed_timestamp: timestamp(uploadEnd),
          worker_completed_timestamp: timestamp(Date.now()),
          auxiliary_metadata: [
            packAny('ResourceUsage', {
              user_cpu_ms: outcome.usage.userCpuMs,
              system_cpu_ms: outcome.usage.systemCpuMs,
              max_rss_bytes: outcome.usage.maxRssBytes,
              runner: runner.name,
              input_fetched_bytes: inputs.fetchedBytes,
              input_cached_bytes: Math.max(0, inputs.bytes - inputs.fetchedBytes),
              input_files: inputs.files,
            }),
          ],
        },
      };

      metrics.actionsExecuted.inc({ outcome: verdict.label });
      if (ctx.queuedAt) metrics.executionStageDuration.observe({ stage: 'queued' }, (workerStart - ctx.queuedAt) / 1000);
      metrics.executionStageDuration.observe({ stage: 'input_fetch' }, (fetchEnd - fetchStart) / 1000);
      metrics.executionStageDuration.observe({ stage: 'execution' }, (execEnd - fetchEnd) / 1000);
      metrics.executionStageDuration.observe({ stage: 'output_upload' }, (uploadEnd - execEnd) / 1000);

      // A cut stdout/stderr is not the action's real result: never cache it.
      const cacheable = verdict.label === 'success' && !outcome.truncated && !job.doNotCache && !action.do_not_cache;
      if (cacheable) await actionCache.put(job.instanceName, job.actionDigest, result);
      if (outputs.missing.length > 0) log.debug({ missing: outputs.missing }, 'declared outputs not produced');
      log.info(
        { exitCode: outcome.exitCode, outcome: verdict.label, cached: cacheable, ms: execEnd - fetchEnd, fetchedBytes: inputs.fetchedBytes },
        'action executed',
      );
      return encode('ExecuteResponse', {
        result,
        status: { code: verdict.status, message: verdict.message },
        message: verdict.message,
      });
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
    } finally {
      release();
      await rm(execRoot, { recursive: true, force: true }).catch((err: unknown) => log.warn({ err }, 'could not remove exec root'));
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
