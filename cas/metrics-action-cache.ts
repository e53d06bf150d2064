// An ActionCache decorator that counts what passes through one node of the ActionCache chain.
import type { Digest } from '../common/digest.ts';
import { Status } from '../common/errors.ts';
import type { Metrics } from '../common/metrics.ts';
import type { ActionCache, ActionResult, ActionResultInput, CacheCaller } from './action-cache.ts';

export class MetricsActionCache implements ActionCache {
  constructor(
    private readonly inner: ActionCache,
    private readonly metrics: Metrics,
    private readonly backend: string,
  ) {}

  async get(instanceName: string, actionDigest: Digest, reader?: CacheCaller): Promise<ActionResult | undefined> {
    const result = await this.counted('get', () => this.inner.get(instanceName, actionDigest, reader));
    this.count('get', result ? 'hit' : 'miss');
    return result;
  }

  async put(instanceName: string, actionDigest: Digest, result: ActionResultInput, writer?: CacheCaller): Promise<void> {
    await this.counted('put', () => this.inner.put(instanceName, actionDigest, result, writer));
    this.count('put', 'ok');
  }

  async remove(instanceName: string, actionDigest: Digest): Promise<void> {
    await this.counted('remove', () => this.inner.remove(instanceName, actionDigest));
    this.count('remove', 'ok');
  }

  private count(operation: string, result: string): void {
    this.metrics.actionCacheBackendOperations.inc({ backend: this.backend, operation, result });
  }

  private async counted<T>(operation: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      this.count(operation, (err as { code?: unknown } | null)?.code === Status.PERMISSION_DENIED ? 'refused' : 'error');
      throw err;
    }
  }
}
