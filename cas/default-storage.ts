// The storage trees a role gets when its config file gives none: what `--storage`, `--data-dir`,
// `--cas` and `actionCache.*` stand for, written out as trees (common/storage-config.ts).
//
//   reapi serve, reapi cas   CAS: disk{dataDir} (or memory)
//                            AC:  writePolicy{ completenessChecking{ disk{dataDir/ac} } }
//   reapi scheduler          CAS: remote{--cas} or sharding{remote{a}, remote{b}, ...}, or with
//                                 --replicas R, mirrored{R of remote{a}, remote{b}, ...}
//                            AC:  writePolicy{ completenessChecking{ remote{first --cas} } }, or
//                                 with --replicas R, the entries mirrored on R of the nodes
//   reapi worker             the scheduler's, without the write policy (its writes are a worker's)
//
// Completeness is checked where the whole CAS is seen: on a storage node for its own blobs
// (`actionCache.checkCompleteness`, default on), and on schedulers and workers across all shards.
import { join } from 'node:path';
import type { Config } from '../common/config.ts';
import { credentialsConfigured, isLoopback } from '../common/auth/index.ts';
import type { ActionCacheConfig, BlobStoreConfig, ClientWrites } from '../common/storage-config.ts';

export type StorageRole = 'serve' | 'cas' | 'scheduler' | 'worker';

export interface StorageTrees {
  contentAddressableStorage: BlobStoreConfig;
  actionCache: ActionCacheConfig;
}

/**
 * Client writes where the role serves clients: `serve` takes those of a cache-only server and of
 * the machine's own user (no credentials configured, loopback: as a `--disk_cache` would); where
 * actions are executed for authenticated clients, and on storage nodes, only workers write.
 */
function defaultClientWrites(config: Config, role: StorageRole): ClientWrites {
  if (config.actionCache.clientWrites) return config.actionCache.clientWrites;
  const localUser = !credentialsConfigured(config) && (isLoopback(config.listen) || config.auth.insecure);
  return role === 'serve' && (!config.execution.enabled || localUser) ? 'allow' : 'deny';
}

export function storageTrees(config: Config, role: StorageRole): StorageTrees {
  const given = config.storage;
  const local = role === 'serve' || role === 'cas';
  const replicas = Math.min(given.replicas, Math.max(1, config.cas.length));
  if (!local && config.cas.length === 0 && !(given.contentAddressableStorage && given.actionCache)) {
    throw new Error('no storage nodes: pass --cas HOST:PORT[,HOST:PORT]');
  }
  const cas: BlobStoreConfig =
    given.contentAddressableStorage ??
    (local
      ? given.backend === 'memory'
        ? { memory: { maxBytes: given.maxBytes } }
        : { disk: { path: config.dataDir, maxBytes: given.maxBytes, verifyBeforeServeBytes: given.verifyBeforeServeBytes } }
      : config.cas.length === 1
        ? { remote: { address: config.cas[0]! } }
        : replicas > 1
          ? { mirrored: { replicas, backends: config.cas.map((address) => ({ name: address, weight: 1, backend: { remote: { address } } })) } }
          : { sharding: { shards: config.cas.map((address) => ({ name: address, weight: 1, backend: { remote: { address } } })) } });
  let ac: ActionCacheConfig;
  if (given.actionCache) ac = given.actionCache;
  else if (local) {
    const store: ActionCacheConfig = given.backend === 'memory' ? { memory: {} } : { disk: { path: join(config.dataDir, 'ac') } };
    const checked: ActionCacheConfig = config.actionCache.checkCompleteness ? { completenessChecking: { backend: store } } : store;
    ac = { writePolicy: { clientWrites: defaultClientWrites(config, role), backend: checked } };
  } else {
    const nodes: ActionCacheConfig =
      replicas > 1 && config.cas.length > 1
        ? { mirrored: { replicas, backends: config.cas.map((address) => ({ name: address, backend: { remote: { address } } })) } }
        : { remote: { address: config.cas[0]! } };
    const checked: ActionCacheConfig = { completenessChecking: { backend: nodes } };
    ac = role === 'scheduler' ? { writePolicy: { clientWrites: defaultClientWrites(config, role), backend: checked } } : checked;
  }
  return { contentAddressableStorage: cas, actionCache: ac };
}
