// An ActionCache that keeps each entry on `replicas` of its backends (by rendezvous hashing of the
// action digest), so losing a backend loses no entry: writes and removals go to every replica
// (one that is down is skipped), reads take the first replica that has the entry and copy it back
// to the ones that missed it.
import type { Digest } from '../common/digest.ts';
import { silentLogger, type Logger } from '../common/logger.ts';
import { Status } from '../common/errors.ts';
import { WORKER_CALLER, type ActionCache, type ActionResult, type ActionResultInput, type CacheCaller } from './action-cache.ts';
import { unreachable } from './mirrored-blob-store.ts';
import { Rendezvous } from './rendezvous.ts';

export interface CacheReplica {
  name: string;
  cache: ActionCache;
}

export class MirroredActionCache implements ActionCache {
  private readonly ring: Rendezvous<CacheReplica>;

  constructor(
    replicas: CacheReplica[],
    private readonly count: number,
    private readonly log: Logger = silentLogger,
  ) {
    this.ring = new Rendezvous(replicas.map((r) => ({ name: r.name, value: r })), 'replica');
    if (!(count >= 1) || count > replicas.length) throw new Error(`mirrored: replicas ${count} must be between 1 and the ${replicas.length} backends`);
  }

  private replicasOf(actionDigest: Digest): CacheReplica[] {
    return this.ring.ranked(actionDigest.hash, this.count).map((n) => n.value);
  }

  async get(instanceName: string, actionDigest: Digest, reader?: CacheCaller): Promise<ActionResult | undefined> {
    const missed: CacheReplica[] = [];
    let reached = false;
    let lastErr: unknown;
    for (const r of this.replicasOf(actionDigest)) {
      try {
        const entry = await r.cache.get(instanceName, actionDigest, reader);
        reached = true;
        if (!entry) {
          missed.push(r);
          continue;
        }
        for (const m of missed) {
          m.cache.put(instanceName, actionDigest, entry, WORKER_CALLER).catch((err: unknown) => this.log.warn({ err, replica: m.name }, 'mirrored: could not repair an ActionCache replica'));
        }
        return entry;
      } catch (err) {
        if (!unreachable(err)) throw err;
        lastErr = err;
      }
    }
    if (!reached) throw lastErr;
    return undefined;
  }

  put(instanceName: string, actionDigest: Digest, result: ActionResultInput, writer?: CacheCaller): Promise<void> {
    return this.everywhere(actionDigest, 'put', (c) => c.put(instanceName, actionDigest, result, writer));
  }

  remove(instanceName: string, actionDigest: Digest): Promise<void> {
    return this.everywhere(actionDigest, 'remove', (c) => c.remove(instanceName, actionDigest));
  }

  /** Apply to every replica; one that is down is skipped (logged), so long as one took it. */
  private async everywhere(actionDigest: Digest, what: string, op: (c: ActionCache) => Promise<void>): Promise<void> {
    const replicas = this.replicasOf(actionDigest);
    const results = await Promise.allSettled(replicas.map((r) => op(r.cache)));
    const failed = results.flatMap((res, i) => (res.status === 'rejected' ? [{ r: replicas[i]!, err: res.reason as unknown }] : []));
    const bad = failed.find((f) => !unreachable(f.err));
    if (bad) throw bad.err;
    if (failed.length === replicas.length) throw Object.assign(new Error(`mirrored: no ActionCache replica took the ${what}`), { code: Status.UNAVAILABLE, cause: failed[0]?.err });
    for (const f of failed) this.log.warn({ err: f.err, replica: f.r.name }, `mirrored: an ActionCache replica is down; the ${what} went to the others`);
  }
}
