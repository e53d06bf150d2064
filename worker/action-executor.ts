// The worker's job handler: one action from Action digest to ExecuteResponse.
// Fetch Action and Command, materialise a fresh exec root from the local content cache, run it
// with the Runner, collect and upload the declared outputs, and write the ActionResult when it
// may be cached; always remove the exec root. A job marked `verify` runs a second time under
// variations before its result may be cached (worker/verifier.ts); an `audit` job re-runs an
// ActionCache entry and checks it.
//
// Errors that are the action's own (bad input, missing blobs, timeouts) become the response's
// status; infrastructure errors are thrown so the queue delivers the job again, maybe elsewhere.
import { randomUUID } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { ActionCache } from '../cas/action-cache.ts';
import type { BlobStore } from '../cas/blob-store.ts';
import { withProvenance } from '../cas/provenance.ts';
import type { Config } from '../common/config.ts';
import { digestKey } from '../common/digest.ts';
import { ReapiError, Status, toRpcStatus } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import type { Metrics } from '../common/metrics.ts';
import { encode, packAny, type MessageInput } from '../protos/index.ts';
import { loadAction, type Command, type LoadedAction } from '../execution/action-loader.ts';
import type { FeedbackStore } from '../execution/feedback.ts';
import type { JobContext, JobHandler, JobQueue, PlatformProperties } from '../execution/job-queue.ts';
import { satisfies } from '../execution/platform.ts';
import type { ReportStore } from '../execution/report-store.ts';
import type { LocalContentCache } from './content-cache.ts';
import { withShuffledDirectories } from './disorderfs.ts';
import { createOutputParents, materializeInputRoot } from './materializer.ts';
import { collectOutputs, uploadStdStreams } from './output-collector.ts';
import type { ResourceLimits, RunOutcome, Runner } from '../execution/runner.ts';
import { verificationVariation, type PlannedVariation, type VariationSupport } from './variations.ts';
import { Verifier } from './verifier.ts';
import { encodeSecondRun, secondRunElsewhere, type SecondRun } from './second-run-elsewhere.ts';

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

export interface Verdict {
  label: string;
  status: number;
  message: string;
}

/** Outcome label and, for runs a limit ended, the explanation for the client. */
function describe(outcome: RunOutcome): Verdict {
  const f = outcome.failure;
  if (!f) return { label: outcome.exitCode === 0 ? 'success' : 'nonzero-exit', status: Status.OK, message: '' };
  if (f.kind === 'timeout') return { label: 'timeout', status: Status.DEADLINE_EXCEEDED, message: f.message };
  if (f.kind === 'cancelled') return { label: 'cancelled', status: Status.CANCELLED, message: f.message };
  if (f.kind === 'sandbox-error') return { label: 'error', status: Status.INTERNAL, message: f.message };
  return { label: f.kind, status: Status.OK, message: f.message };
}

/** One run of an action: its ActionResult (outputs uploaded) and how it ended. */
export interface Run {
  result: MessageInput<'ActionResult'>;
  verdict: Verdict;
  /** Successful and complete: a result that may be cached. */
  cacheable: boolean;
}

export function createActionExecutor(deps: ActionExecutorDeps): JobHandler {
  const { blobs, actionCache, cache, runner, config, metrics } = deps;
  const verifier = new Verifier(deps);

  /** Materialise, run and collect once, in a fresh exec root that is removed afterwards. */
  async function runOnce(ctx: JobContext, loaded: LoadedAction, variation?: PlannedVariation): Promise<Run> {
    const { action, command } = loaded;
    const runner = deps.runnerFor?.(loaded.platform) ?? deps.runner;
    const execRoot = join(deps.execDir, randomUUID());
    let release = () => {};
    try {
      const workerStart = Date.now();
      // Materialising is held to the action's timeout too: a huge or slow input root cannot hold
      // a worker longer than the action itself may run.
      const inputDeadline = AbortSignal.timeout(Math.max(1, loaded.timeoutMs));
      let inputs: Awaited<ReturnType<typeof materializeInputRoot>>;
      try {
        inputs = await materializeInputRoot(cache, action.input_root_digest!, execRoot, {
          copy: variation?.copyInputs,
          limits: config.worker.inputLimits,
          signal: AbortSignal.any([ctx.signal, inputDeadline]),
        });
      } catch (err) {
        if (inputDeadline.aborted && !ctx.signal.aborted) {
          throw new ReapiError(Status.DEADLINE_EXCEEDED, `action timed out after ${loaded.timeoutMs / 1000} s while its input root was being materialised`);
        }
        throw err;
      }
      release = inputs.release;
      await createOutputParents(execRoot, command);
      const fetchEnd = Date.now();

      const spec = {
        execRoot,
        argv: command.arguments,
        env: environment(command),
        workingDirectory: command.working_directory,
        timeoutMs: loaded.timeoutMs,
        limits: limitsFor(config, loaded.platform),
        maxOutputBytes: config.worker.maxOutputBytes,
        variation: variation?.variation,
      };
      const outcome = variation?.shuffleDirectories
        ? await withShuffledDirectories(deps.variationSupport.disorderfs!, execRoot, deps.logger, (root) => runner.run({ ...spec, execRoot: root }, ctx.signal))
        : await runner.run(spec, ctx.signal);
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

      metrics.actionsExecuted.inc({ outcome: verdict.label });
      if (ctx.queuedAt && !variation) {
        const waited = Math.max(0, workerStart - ctx.queuedAt) / 1000;
        metrics.executionStageDuration.observe({ stage: 'queued' }, waited);
        metrics.queueWait.observe({ platform: metrics.platform(loaded.platform) }, waited);
      }
      metrics.executionStageDuration.observe({ stage: 'input_fetch' }, (fetchEnd - workerStart) / 1000);
      metrics.executionStageDuration.observe({ stage: 'execution' }, (execEnd - fetchEnd) / 1000);
      metrics.executionStageDuration.observe({ stage: 'output_upload' }, (uploadEnd - execEnd) / 1000);
      if (outputs.missing.length > 0) deps.logger.debug({ missing: outputs.missing }, 'declared outputs not produced');

      const result: MessageInput<'ActionResult'> = {
        ...outputs.result,
        exit_code: outcome.exitCode,
        ...std,
        execution_metadata: {
          worker: deps.workerName,
          queued_timestamp: timestamp(ctx.queuedAt ?? workerStart),
          worker_start_timestamp: timestamp(workerStart),
          input_fetch_start_timestamp: timestamp(workerStart),
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
      // A cut stdout/stderr is not the action's real result: never cache it.
      return { result, verdict, cacheable: verdict.label === 'success' && !outcome.truncated };
    } finally {
      release();
      await rm(execRoot, { recursive: true, force: true }).catch((err: unknown) => deps.logger.warn({ err }, 'could not remove exec root'));
    }
  }

  /** A verification's second run here, under `planned` variations. */
  async function runHere(ctx: JobContext, loaded: LoadedAction, planned: PlannedVariation): Promise<SecondRun> {
    const run = await runOnce(ctx, loaded, planned);
    return { result: run.result, verdict: run.verdict, described: planned.described };
  }

  /** A verification's second run on another free worker; undefined: none took it, run it here. */
  async function handToAnotherWorker(ctx: JobContext, log: Logger): Promise<SecondRun | undefined> {
    if (!deps.queue) return undefined;
    const opts = { queue: deps.queue, workerName: deps.workerName, startMs: config.verification.otherWorkerStartMs, signal: ctx.signal, log };
    return secondRunElsewhere(ctx.job, opts).catch((err: unknown) => {
      log.warn({ err }, 'could not hand the second run to another worker; running it here');
      return undefined;
    });
  }

  return async (ctx: JobContext): Promise<Buffer> => {
    const { job } = ctx;
    const log = deps.logger.child({ operation: ctx.operationName, action: digestKey(job.actionDigest), ...job.requestMetadata });
    const mnemonic = job.requestMetadata?.mnemonic ?? '';
    await ctx.markExecuting(deps.workerName);
    try {
      const loaded = await loadAction(blobs, job.actionDigest, config.execution);
      const secondRun = () => verificationVariation(environment(loaded.command), config.verification, deps.variationSupport);

      if (job.verificationRun) {
        // The second run of a verification another worker started: it compares and caches.
        const planned = secondRun();
        const run = await runOnce(ctx, loaded, planned);
        log.info({ firstWorker: job.verificationRun.firstWorker, outcome: run.verdict.label }, 'ran the second run of a verification');
        return encodeSecondRun(run.result, { label: run.verdict.label, described: planned.described });
      }

      if (job.audit) {
        // Audits vary the environment too: an entry must hold up under any correct execution.
        const run = await runOnce(ctx, loaded, secondRun());
        await verifier.audit(job, run, log);
        return encode('ExecuteResponse', { result: run.result, status: { code: Status.OK, message: '' } });
      }

      const first = await runOnce(ctx, loaded);
      let cacheable = first.cacheable && !job.doNotCache && !loaded.action.do_not_cache;
      let verified = false;
      let warning = first.verdict.message;
      let status = first.verdict.status;
      if (job.verify && first.cacheable) {
        const second = (await handToAnotherWorker(ctx, log)) ?? (await runHere(ctx, loaded, secondRun()));
        if (second.verdict.label !== 'success' && second.verdict.label !== 'nonzero-exit') {
          // Cancelled, or ended by a limit (timeout, memory, ...): its outputs are incomplete and
          // say nothing about determinism. Not compared, not reported, and not cached unverified.
          metrics.verifications.inc({ result: 'inconclusive' });
          cacheable = false;
          if (second.verdict.status === Status.CANCELLED) {
            status = Status.CANCELLED;
            warning = second.verdict.message;
          } else {
            warning = `reapi: verification inconclusive, result not cached: the second run (${second.described.join(', ')}) ended early: ${second.verdict.message}`;
          }
          log.warn({ outcome: second.verdict.label }, 'verification run did not finish; result not cached');
        } else {
          const check = await verifier.compare(job, first, second, second.described, log);
          if (check.agreed) {
            verified = true;
          } else {
            cacheable = false;
            warning = check.message;
            if (config.verification.onMismatch === 'fail') status = Status.FAILED_PRECONDITION;
          }
        }
      } else {
        if (job.verify) metrics.verifications.inc({ result: 'skipped' });
        await deps.feedback.recordExecuted(mnemonic, false);
      }

      if (cacheable) {
        await actionCache.put(
          job.instanceName,
          job.actionDigest,
          withProvenance(first.result, { source: 'worker', worker: deps.workerName, verified, tool_invocation_id: job.requestMetadata?.toolInvocationId ?? '' }),
        );
      }
      log.info({ exitCode: first.result.exit_code ?? 0, outcome: first.verdict.label, cached: cacheable, verified }, 'action executed');
      return encode('ExecuteResponse', { result: first.result, status: { code: status, message: warning }, message: warning });
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
