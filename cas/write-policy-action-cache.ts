// An ActionCache decorator that decides who may write: workers of this process and fleet members
// (who presented the fleet token to a storage node) always; clients as `clientWrites` says:
// `allow` stores their entry (recorded as a client write, whatever it claims), `deny` refuses with
// PERMISSION_DENIED, `quarantine` keeps it out of the cache, stored in the CAS and handed to
// `onQuarantine` (the auditor), until a worker's execution of the action agrees with it.
import type { Digest } from '../common/digest.ts';
import type { DigestFunction } from '../common/digest-function.ts';
import { permissionDenied } from '../common/errors.ts';
import type { RequestLabels } from '../common/grpc.ts';
import type { Metrics } from '../common/metrics.ts';
import type { ClientWrites } from '../common/storage-config.ts';
import { encode } from '../protos/index.ts';
import { WORKER_CALLER, type ActionCache, type ActionResult, type ActionResultInput, type CacheCaller } from './action-cache.ts';
import type { BlobStore } from './blob-store.ts';
import { putBlob } from './blob-io.ts';
import { provenanceOf, withProvenance } from './provenance.ts';

/** Where quarantined client writes go; filled in by the role once its auditor exists. */
export interface QuarantineHooks {
  onQuarantine?: (instanceName: string, actionDigest: Digest, entry: Digest, labels: RequestLabels, fn: DigestFunction) => Promise<void>;
}

export interface WritePolicyOptions {
  clientWrites: ClientWrites;
  /** Where a quarantined entry is stored. */
  blobs: BlobStore;
  hooks: QuarantineHooks;
  metrics: Metrics;
  /** Said after a refusal: how writers get through here (e.g. the fleet token). */
  denyHint?: string;
}

export class WritePolicyActionCache implements ActionCache {
  constructor(
    private readonly inner: ActionCache,
    private readonly opts: WritePolicyOptions,
  ) {}

  get(instanceName: string, actionDigest: Digest, reader?: CacheCaller): Promise<ActionResult | undefined> {
    return this.inner.get(instanceName, actionDigest, reader);
  }

  remove(instanceName: string, actionDigest: Digest): Promise<void> {
    return this.inner.remove(instanceName, actionDigest);
  }

  async put(instanceName: string, actionDigest: Digest, result: ActionResultInput, writer: CacheCaller = WORKER_CALLER): Promise<void> {
    if (writer.kind === 'worker') return this.inner.put(instanceName, actionDigest, result, writer);
    const { clientWrites, metrics } = this.opts;
    const policy = writer.kind === 'fleet' ? 'allow' : clientWrites;
    const instance = metrics.labels.instance.of(instanceName);
    if (policy === 'deny') {
      metrics.actionCacheUpdates.inc({ instance, source: 'client', result: 'refused' });
      throw permissionDenied(`this server does not accept ActionCache writes from clients (actionCache.clientWrites is "deny": only workers write)${this.opts.denyHint ?? ''}`);
    }
    // A fleet member's entry keeps the provenance its worker recorded; anything else is a client's.
    const entry =
      writer.kind === 'fleet' && provenanceOf(result).source !== 'unknown'
        ? result
        : withProvenance(result, { source: 'client', tool_invocation_id: writer.labels?.toolInvocationId ?? '' });
    const { onQuarantine } = this.opts.hooks;
    if (policy === 'quarantine' && onQuarantine) {
      const blob = await putBlob(this.opts.blobs, encode('ActionResult', entry));
      await onQuarantine(instanceName, actionDigest, blob, writer.labels ?? {}, this.opts.blobs.digestFunction);
      metrics.actionCacheUpdates.inc({ instance, source: 'client', result: 'quarantined' });
      return;
    }
    await this.inner.put(instanceName, actionDigest, entry, writer);
    metrics.actionCacheUpdates.inc({ instance, source: 'client', result: 'stored' });
  }
}
