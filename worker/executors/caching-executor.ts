// The only layer that writes the ActionCache: a cacheable result as this worker's (with its
// provenance), or what an audit decided. Writes go through the storage chain's write policy.
import type { ActionCache } from '../../cas/action-cache.ts';
import { withProvenance } from '../../cas/provenance.ts';
import type { ActionExecutor, ActionOutcome, ActionRequest } from './types.ts';

export class CachingExecutor implements ActionExecutor {
  constructor(
    private readonly inner: ActionExecutor,
    private readonly actionCache: ActionCache,
    private readonly workerName: string,
  ) {}

  async execute(req: ActionRequest): Promise<ActionOutcome> {
    const out = await this.inner.execute(req);
    const { job } = req.ctx;
    if (out.cacheUpdate?.kind === 'store') {
      await this.actionCache.put(job.instanceName, job.actionDigest, out.cacheUpdate.entry);
    } else if (out.cacheUpdate?.kind === 'remove') {
      await this.actionCache.remove(job.instanceName, job.actionDigest);
    } else if (out.cacheable) {
      const provenance = { source: 'worker', worker: this.workerName, verified: out.verified, tool_invocation_id: job.requestMetadata?.toolInvocationId ?? '' };
      await this.actionCache.put(job.instanceName, job.actionDigest, withProvenance(out.run.result, provenance));
    }
    await out.afterCaching?.();
    return out;
  }
}
