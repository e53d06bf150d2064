// An ActionCache decorator that never serves an entry whose blobs are gone: stdout/stderr, every
// output file, and every file of every output directory's Tree must still be in the CAS.
// Serving such an entry would make the client fail on download instead of re-running the action.
// Fleet members (schedulers, workers) get the entry as stored: they check it themselves against
// every shard, where a storage node sees only its own. So sharded storage nodes need no setting.
import type { Digest } from '../common/digest.ts';
import { silentLogger, type Logger } from '../common/logger.ts';
import { decode } from '../protos/index.ts';
import type { ActionCache, ActionResult, ActionResultInput, CacheCaller } from './action-cache.ts';
import type { BlobStore } from './blob-store.ts';
import { readBlob } from './blob-io.ts';
import { digestsInTree } from './tree.ts';

export class CompletenessCheckingActionCache implements ActionCache {
  constructor(
    private readonly inner: ActionCache,
    private readonly blobs: BlobStore,
    private readonly log: Logger = silentLogger,
  ) {}

  async get(instanceName: string, actionDigest: Digest, reader?: CacheCaller): Promise<ActionResult | undefined> {
    const result = await this.inner.get(instanceName, actionDigest, reader);
    if (!result || reader?.kind === 'fleet') return result;
    const missing = await this.missingBlobs(result);
    if (missing.length === 0) return result;
    this.log.info(
      { action: actionDigest.hash, missing: missing.slice(0, 5).map((d) => d.hash), count: missing.length },
      'action cache entry refers to blobs no longer in the CAS; treating it as a miss',
    );
    return undefined;
  }

  put(instanceName: string, actionDigest: Digest, result: ActionResultInput, writer?: CacheCaller): Promise<void> {
    return this.inner.put(instanceName, actionDigest, result, writer);
  }

  remove(instanceName: string, actionDigest: Digest): Promise<void> {
    return this.inner.remove(instanceName, actionDigest);
  }

  private async missingBlobs(result: ActionResult): Promise<Digest[]> {
    const direct: Digest[] = [];
    for (const f of result.output_files) if (f.digest) direct.push(f.digest);
    for (const d of result.output_directories) if (d.tree_digest) direct.push(d.tree_digest);
    if (result.stdout_digest) direct.push(result.stdout_digest);
    if (result.stderr_digest) direct.push(result.stderr_digest);
    const missing = await this.blobs.findMissing(direct);
    if (missing.length > 0) return missing;
    const inTrees: Digest[] = [];
    for (const d of result.output_directories) {
      if (!d.tree_digest) continue;
      try {
        inTrees.push(...digestsInTree(decode('Tree', await readBlob(this.blobs, d.tree_digest))));
      } catch {
        return [d.tree_digest];
      }
    }
    return this.blobs.findMissing(inTrees);
  }
}
