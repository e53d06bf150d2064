// Runs the action once; its result may be cached when the run succeeded completely and neither
// the job nor the Action says not to.
import type { ActionExecutor, ActionOutcome, ActionRequest, RunExecutor } from './types.ts';

export class SingleRunExecutor implements ActionExecutor {
  constructor(private readonly runs: RunExecutor) {}

  async execute({ ctx, loaded }: ActionRequest): Promise<ActionOutcome> {
    const run = await this.runs.run({ ctx, loaded });
    return {
      run,
      status: run.verdict.status,
      message: run.verdict.message,
      cacheable: run.cacheable && !ctx.job.doNotCache && !loaded.action.do_not_cache,
      verified: false,
    };
  }
}
