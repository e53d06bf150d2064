// Runs an action once, here: materialise a fresh exec root from the local content cache, run the
// command with the runner its platform selects, collect and upload the declared outputs, and
// always remove the exec root.
import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { ActionResultInput } from '../../cas/action-cache.ts';
import type { BlobStore } from '../../cas/blob-store.ts';
import type { Config } from '../../common/config.ts';
import { ReapiError, Status } from '../../common/errors.ts';
import type { Logger } from '../../common/logger.ts';
import { toTimestamp } from '../../common/proto-time.ts';
import type { Command } from '../../execution/action-loader.ts';
import type { PlatformProperties } from '../../execution/job-queue.ts';
import { satisfies } from '../../execution/platform.ts';
import type { ResourceLimits, RunOutcome, Runner } from '../../execution/runner.ts';
import { packAny } from '../../protos/index.ts';
import type { LocalContentCache } from '../content-cache.ts';
import { withShuffledDirectories } from '../disorderfs.ts';
import { createOutputParents, materializeInputRoot } from '../materializer.ts';
import { collectOutputs, uploadStdStreams } from '../output-collector.ts';
import type { VariationSupport } from '../variations.ts';
import type { Run, RunExecutor, RunRequest, Verdict } from './types.ts';

export interface LocalExecutorDeps {
  workerName: string;
  /** The CAS: where outputs go. */
  blobs: BlobStore;
  /** Inputs come from here (and through it from the CAS). */
  cache: LocalContentCache;
  /** The runner of a job by its platform (e.g. Docker for `container-image`). */
  runnerFor: (platform: PlatformProperties) => Runner;
  /** Exec roots are created under here, one fresh directory per run. */
  execDir: string;
  config: Config;
  logger: Logger;
  variationSupport: VariationSupport;
}


export function limitsFor(config: Config, platform: PlatformProperties): ResourceLimits {
  const base = config.worker.limits;
  const match = config.worker.platformLimits.find((p) => satisfies(platform, p.match));
  return { ...base, ...Object.fromEntries(Object.entries(match?.limits ?? {}).filter(([, v]) => v !== undefined)) };
}

export function environment(command: Command): Record<string, string> {
  const env: Record<string, string> = {};
  for (const v of command.environment_variables) env[v.name] = v.value;
  return env;
}

/** Outcome label and, for runs a limit ended, the explanation for the client. */
export function verdictOf(outcome: RunOutcome): Verdict {
  const f = outcome.failure;
  if (!f) return { label: outcome.exitCode === 0 ? 'success' : 'nonzero-exit', status: Status.OK, message: '' };
  if (f.kind === 'timeout') return { label: 'timeout', status: Status.DEADLINE_EXCEEDED, message: f.message };
  if (f.kind === 'cancelled') return { label: 'cancelled', status: Status.CANCELLED, message: f.message };
  if (f.kind === 'sandbox-error') return { label: 'error', status: Status.INTERNAL, message: f.message };
  return { label: f.kind, status: Status.OK, message: f.message };
}

export class LocalExecutor implements RunExecutor {
  constructor(private readonly deps: LocalExecutorDeps) {}

  async run({ ctx, loaded, variation }: RunRequest): Promise<Run> {
    const { deps } = this;
    const { config } = deps;
    const { action, command } = loaded;
    const runner = deps.runnerFor(loaded.platform);
    const execRoot = join(deps.execDir, randomUUID());
    let release = () => {};
    try {
      const workerStart = Date.now();
      // Materialising is held to the action's timeout too: a huge or slow input root cannot hold
      // a worker longer than the action itself may run.
      const inputDeadline = AbortSignal.timeout(Math.max(1, loaded.timeoutMs));
      let inputs: Awaited<ReturnType<typeof materializeInputRoot>>;
      try {
        inputs = await materializeInputRoot(deps.cache, action.input_root_digest!, execRoot, {
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
        platform: loaded.platform,
        timeoutMs: loaded.timeoutMs,
        limits: limitsFor(config, loaded.platform),
        maxOutputBytes: config.worker.maxOutputBytes,
        variation: variation?.variation,
      };
      const outcome = variation?.shuffleDirectories
        ? await withShuffledDirectories(deps.variationSupport.disorderfs!, execRoot, deps.logger, (root) => runner.run({ ...spec, execRoot: root }, ctx.signal))
        : await runner.run(spec, ctx.signal);
      const execEnd = Date.now();
      const verdict = verdictOf(outcome);
      if (verdict.status === Status.INTERNAL) throw new ReapiError(Status.INTERNAL, `sandbox failed: ${verdict.message}`);

      const outputs = await collectOutputs(execRoot, command, deps.blobs);
      if (outcome.truncated) {
        const note = `stdout/stderr exceeded ${config.worker.maxOutputBytes} bytes and were cut there`;
        verdict.message = verdict.message ? `${verdict.message}; ${note}` : note;
      }
      const stderr = verdict.message ? Buffer.concat([outcome.stderr, Buffer.from(`\nreapi: ${verdict.message}\n`)]) : outcome.stderr;
      const std = await uploadStdStreams(outcome.stdout, stderr, deps.blobs);
      const uploadEnd = Date.now();
      if (outputs.missing.length > 0) deps.logger.debug({ missing: outputs.missing }, 'declared outputs not produced');

      const result: ActionResultInput = {
        ...outputs.result,
        exit_code: outcome.exitCode,
        ...std,
        execution_metadata: {
          worker: deps.workerName,
          queued_timestamp: toTimestamp(ctx.queuedAt ?? workerStart),
          worker_start_timestamp: toTimestamp(workerStart),
          input_fetch_start_timestamp: toTimestamp(workerStart),
          input_fetch_completed_timestamp: toTimestamp(fetchEnd),
          execution_start_timestamp: toTimestamp(outcome.startedAt.getTime()),
          execution_completed_timestamp: toTimestamp(outcome.completedAt.getTime()),
          output_upload_start_timestamp: toTimestamp(execEnd),
          output_upload_completed_timestamp: toTimestamp(uploadEnd),
          worker_completed_timestamp: toTimestamp(Date.now()),
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
      return { result, verdict, cacheable: verdict.label === 'success' && !outcome.truncated, timings: { workerStart, fetchEnd, execEnd, uploadEnd } };
    } finally {
      release();
      await rm(execRoot, { recursive: true, force: true }).catch((err: unknown) => deps.logger.warn({ err }, 'could not remove exec root'));
    }
  }
}
