// Audits: served cache entries (sampled by the VerificationPolicy, the biggest blast radius first)
// and quarantined client writes are re-executed in the background by a worker, which compares and
// removes or promotes the entry (worker/verifier.ts). Audits never delay or fail a client's call.
import type { ActionResult } from '../cas/action-cache.ts';
import { putBlob } from '../cas/blob-io.ts';
import type { Storage } from '../cas/storage-factory.ts';
import type { DigestFunction } from '../common/digest-function.ts';
import { provenanceOf } from '../cas/provenance.ts';
import type { Config } from '../common/config.ts';
import { digestKey, type Digest } from '../common/digest.ts';
import type { RequestLabels } from '../common/grpc.ts';
import type { Logger } from '../common/logger.ts';
import { encode } from '../protos/index.ts';
import { loadAction, preloaded } from '../execution/action-loader.ts';
import type { JobQueue } from '../execution/job-queue.ts';
import type { VerificationPolicy } from './verification-policy.ts';

/** Audits queue behind everything clients wait for (REAPI: larger priority values run later). */
const AUDIT_PRIORITY = 1000;

export class Auditor {
  constructor(
    private readonly deps: {
      stores: Pick<Storage, 'forFunction'>;
      queue: JobQueue;
      policy: VerificationPolicy;
      config: Config;
      logger: Logger;
    },
  ) {}

  /** A cache hit was served to a client: record it, and maybe audit the entry most worth it. */
  served(instanceName: string, actionDigest: Digest, result: ActionResult, labels: RequestLabels, fn: DigestFunction): void {
    const provenance = provenanceOf(result);
    const source = provenance.source === 'client' || provenance.source === 'worker' ? provenance.source : 'unknown';
    void (async () => {
      const pick = await this.deps.policy.onServed(instanceName, actionDigest, labels.mnemonic ?? '', { source, verified: provenance.verified });
      if (!pick) return;
      const same = pick.instanceName === instanceName && pick.actionDigest.hash === actionDigest.hash;
      // The policy names actions by digest alone: another pick is looked up under the same function.
      const { actionCache, blobs } = this.deps.stores.forFunction(fn);
      const entry = same ? result : await actionCache.get(pick.instanceName, pick.actionDigest);
      if (!entry) return;
      const blob = await putBlob(blobs, encode('ActionResult', entry));
      await this.submit(pick.instanceName, pick.actionDigest, blob, 'served', same ? labels : { mnemonic: pick.mnemonic }, fn);
    })().catch((err: unknown) => this.deps.logger.warn({ err, action: digestKey(actionDigest) }, 'could not schedule an audit'));
  }

  /** A client wrote an entry under the quarantine policy: execute the action to confirm it. */
  async quarantinedWrite(instanceName: string, actionDigest: Digest, entry: Digest, labels: RequestLabels, fn: DigestFunction): Promise<void> {
    await this.submit(instanceName, actionDigest, entry, 'client-write', labels, fn);
  }

  private async submit(instanceName: string, actionDigest: Digest, entry: Digest, reason: 'served' | 'client-write', labels: RequestLabels, fn: DigestFunction): Promise<void> {
    const { queue, config, logger } = this.deps;
    const { blobs } = this.deps.stores.forFunction(fn);
    let loaded;
    try {
      loaded = await loadAction(blobs, actionDigest, config.execution);
    } catch (err) {
      logger.info({ action: digestKey(actionDigest), reason, err }, 'cannot audit: the action is not in the CAS');
      return;
    }
    const { platform } = loaded;
    if ((await queue.unsatisfiable(platform)).length > 0) return;
    const requestMetadata: Record<string, string> = {};
    for (const [k, v] of Object.entries(labels)) if (typeof v === 'string') requestMetadata[k] = v;
    const { operationName } = await queue.submit({
      instanceName,
      actionDigest,
      digestFunction: fn.name,
      priority: AUDIT_PRIORITY,
      platform,
      doNotCache: true,
      requestMetadata,
      ...preloaded(loaded),
      audit: { entry, reason },
    });
    logger.debug({ operation: operationName, action: digestKey(actionDigest), reason }, 'audit queued');
  }
}
