// Double execution: a job marked `verify` whose first run may be cached runs a second time under
// variations (on another free worker when one takes it in time, else here), and is cached only
// when both agree. Disagreement is counted and reported (worker/verifier.ts).
import type { Config } from '../../common/config.ts';
import { Status } from '../../common/errors.ts';
import type { Logger } from '../../common/logger.ts';
import type { Metrics } from '../../common/metrics.ts';
import type { FeedbackStore } from '../../execution/feedback.ts';
import type { JobContext, JobQueue } from '../../execution/job-queue.ts';
import { secondRunElsewhere, type SecondRun } from '../second-run-elsewhere.ts';
import { verificationVariation, type PlannedVariation, type VariationSupport } from '../variations.ts';
import type { Verifier } from '../verifier.ts';
import { environment } from './local-executor.ts';
import type { ActionExecutor, ActionOutcome, ActionRequest, RunExecutor } from './types.ts';
import type { LoadedAction } from '../../execution/action-loader.ts';

export interface VerifyingExecutorDeps {
  runs: RunExecutor;
  verifier: Verifier;
  feedback: FeedbackStore;
  metrics: Metrics;
  config: Config;
  variationSupport: VariationSupport;
  workerName: string;
  /** The queue this worker takes jobs from: the second run may go to another worker. */
  queue?: JobQueue;
}

/** The variations of a verification's (or an audit's) second run of this action. */
export function secondRunVariation(loaded: LoadedAction, deps: Pick<VerifyingExecutorDeps, 'config' | 'variationSupport'>): PlannedVariation {
  return verificationVariation(environment(loaded.command), deps.config.verification, deps.variationSupport);
}

export class VerifyingExecutor implements ActionExecutor {
  constructor(
    private readonly inner: ActionExecutor,
    private readonly deps: VerifyingExecutorDeps,
  ) {}

  async execute(req: ActionRequest): Promise<ActionOutcome> {
    const { deps } = this;
    const { ctx, log } = req;
    const { job } = ctx;
    const out = await this.inner.execute(req);
    if (!job.verify || !out.run.cacheable) {
      if (job.verify) deps.metrics.verifications.inc({ result: 'skipped' });
      await deps.feedback.recordExecuted(job.requestMetadata?.mnemonic ?? '', false);
      return out;
    }
    const second = (await this.handToAnotherWorker(ctx, log)) ?? (await this.runHere(req));
    if (second.verdict.label !== 'success' && second.verdict.label !== 'nonzero-exit') {
      // Cancelled, or ended by a limit (timeout, memory, ...): its outputs are incomplete and say
      // nothing about determinism. Not compared, not reported, and not cached unverified.
      deps.metrics.verifications.inc({ result: 'inconclusive' });
      log.warn({ outcome: second.verdict.label }, 'verification run did not finish; result not cached');
      if (second.verdict.status === Status.CANCELLED) return { ...out, cacheable: false, status: Status.CANCELLED, message: second.verdict.message };
      return {
        ...out,
        cacheable: false,
        message: `reapi: verification inconclusive, result not cached: the second run (${second.described.join(', ')}) ended early: ${second.verdict.message}`,
      };
    }
    const check = await deps.verifier.compare(job, out.run, second, second.described, log);
    if (check.agreed) return { ...out, verified: true };
    return { ...out, cacheable: false, message: check.message, status: deps.config.verification.onMismatch === 'fail' ? Status.FAILED_PRECONDITION : out.status };
  }

  /** The second run here, under the verification variations. */
  private async runHere({ ctx, loaded }: ActionRequest): Promise<SecondRun> {
    const planned = secondRunVariation(loaded, this.deps);
    const run = await this.deps.runs.run({ ctx, loaded, variation: planned });
    return { result: run.result, verdict: run.verdict, described: planned.described };
  }

  /** The second run on another free worker; undefined: none took it, run it here. */
  private async handToAnotherWorker(ctx: JobContext, log: Logger): Promise<SecondRun | undefined> {
    const { deps } = this;
    if (!deps.queue) return undefined;
    const opts = { queue: deps.queue, workerName: deps.workerName, startMs: deps.config.verification.otherWorkerStartMs, signal: ctx.signal, log };
    return secondRunElsewhere(ctx.job, opts).catch((err: unknown) => {
      log.warn({ err }, 'could not hand the second run to another worker; running it here');
      return undefined;
    });
  }
}
