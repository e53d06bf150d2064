// An audit job: re-run the action under the verification variations (an entry must hold up under
// any correct execution) and check the ActionCache entry it should reproduce. The outcome says
// what the cache gets: a confirmed quarantined client write is stored, a contradicted served entry
// removed.
import { Status } from '../../common/errors.ts';
import type { Verifier } from '../verifier.ts';
import type { VerifyingExecutorDeps } from './verifying-executor.ts';
import { secondRunVariation } from './verifying-executor.ts';
import type { ActionExecutor, ActionOutcome, ActionRequest, RunExecutor } from './types.ts';

export class AuditingExecutor implements ActionExecutor {
  constructor(
    private readonly runs: RunExecutor,
    private readonly verifier: Verifier,
    private readonly variations: Pick<VerifyingExecutorDeps, 'config' | 'variationSupport'>,
  ) {}

  async execute({ ctx, loaded, log }: ActionRequest): Promise<ActionOutcome> {
    const run = await this.runs.run({ ctx, loaded, variation: secondRunVariation(loaded, this.variations) });
    const { update, record } = await this.verifier.audit(ctx.job, run, log);
    return { run, status: Status.OK, message: '', cacheable: false, verified: false, ...(update ? { cacheUpdate: update } : {}), afterCaching: record };
  }
}
