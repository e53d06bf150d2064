// What the storage services share.
import type { Config } from '../../common/config.ts';
import type { ServiceContext } from '../../common/grpc.ts';
import type { Digest } from '../../common/digest.ts';
import type { RequestLabels } from '../../common/grpc.ts';
import type { ActionCache, ActionResult } from '../action-cache.ts';
import type { BlobStore } from '../blob-store.ts';
import type { ClientWrites } from '../../common/storage-config.ts';

export interface StorageContext {
  blobs: BlobStore;
  actionCache: ActionCache;
  config: Config;
  service: (name: string) => ServiceContext;
  /** What the chain's write policy does with client writes (Capabilities announces it). */
  clientWrites: ClientWrites;
  /** Told about every cache hit served by GetActionResult (feedback, audits). */
  onServed?: (instanceName: string, actionDigest: Digest, result: ActionResult, labels: RequestLabels) => void;
}
