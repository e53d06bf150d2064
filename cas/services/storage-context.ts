// What the storage services share.
import type { Config } from '../../common/config.ts';
import type { ServiceContext } from '../../common/grpc.ts';
import type { ActionCache } from '../action-cache.ts';
import type { BlobStore } from '../blob-store.ts';

export interface StorageContext {
  blobs: BlobStore;
  actionCache: ActionCache;
  config: Config;
  service: (name: string) => ServiceContext;
}
