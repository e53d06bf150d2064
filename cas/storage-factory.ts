// Builds the storage chain from config, as one place that knows every implementation and
// decorator: BlobStore (disk or memory) and ActionCache (disk or memory, behind completeness
// checking).
import { join } from 'node:path';
import type { Config } from '../common/config.ts';
import type { Logger } from '../common/logger.ts';
import type { Metrics } from '../common/metrics.ts';
import type { ActionCache } from './action-cache.ts';
import type { BlobStore } from './blob-store.ts';
import { CompletenessCheckingActionCache } from './completeness-checking-action-cache.ts';
import { DiskActionCache } from './disk-action-cache.ts';
import { DiskBlobStore } from './disk-blob-store.ts';
import { MemoryActionCache } from './memory-action-cache.ts';
import { MemoryBlobStore } from './memory-blob-store.ts';

export interface Storage {
  blobs: BlobStore;
  actionCache: ActionCache;
}

export async function createStorage(config: Config, metrics: Metrics, logger: Logger): Promise<Storage> {
  const { storage } = config;
  let blobs: BlobStore;
  let actionCache: ActionCache;
  if (storage.backend === 'memory') {
    blobs = new MemoryBlobStore(storage.maxBytes);
    actionCache = new MemoryActionCache();
  } else {
    blobs = await DiskBlobStore.open({
      root: config.dataDir,
      maxBytes: storage.maxBytes,
      verifyBeforeServeBytes: storage.verifyBeforeServeBytes,
      metrics,
      logger,
    });
    actionCache = new DiskActionCache(join(config.dataDir, 'ac'));
  }
  if (config.actionCache.checkCompleteness) actionCache = new CompletenessCheckingActionCache(actionCache, blobs, logger);
  return { blobs, actionCache };
}
