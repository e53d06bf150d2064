// Counts each run of an action and how long its stages took.
import type { Metrics } from '../../common/metrics.ts';
import type { Run, RunExecutor, RunRequest } from './types.ts';

export class MetricsExecutor implements RunExecutor {
  constructor(
    private readonly inner: RunExecutor,
    private readonly metrics: Metrics,
  ) {}

  async run(req: RunRequest): Promise<Run> {
    const run = await this.inner.run(req);
    const { metrics } = this;
    const t = run.timings;
    metrics.actionsExecuted.inc({ outcome: run.verdict.label });
    // Queue wait belongs to the job, so only its first run counts it.
    if (req.ctx.queuedAt && !req.variation) {
      const waited = Math.max(0, t.workerStart - req.ctx.queuedAt) / 1000;
      metrics.executionStageDuration.observe({ stage: 'queued' }, waited);
      metrics.queueWait.observe({ platform: metrics.platform(req.loaded.platform) }, waited);
    }
    metrics.executionStageDuration.observe({ stage: 'input_fetch' }, (t.fetchEnd - t.workerStart) / 1000);
    metrics.executionStageDuration.observe({ stage: 'execution' }, (t.execEnd - t.fetchEnd) / 1000);
    metrics.executionStageDuration.observe({ stage: 'output_upload' }, (t.uploadEnd - t.execEnd) / 1000);
    return run;
  }
}
