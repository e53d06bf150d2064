// Builds the storage chains from their config trees (common/storage-config.ts), as Buildbarn
// builds its BlobAccess chain: the one place that knows every implementation and decorator. Every
// node is wrapped in a metrics decorator named by its place in the tree, and the ActionCache
// chain always has a write policy on top (`allow` when the tree names none), so no entry written
// by a client is ever recorded as a worker's.
import { join } from 'node:path';
import type { Config } from '../common/config.ts';
import type { Logger } from '../common/logger.ts';
import type { Metrics } from '../common/metrics.ts';
import type { ActionCacheConfig, BlobStoreConfig, ClientWrites } from '../common/storage-config.ts';
import type { ActionCache } from './action-cache.ts';
import type { BlobStore } from './blob-store.ts';
import { CompletenessCheckingActionCache } from './completeness-checking-action-cache.ts';
import { storageTrees, type StorageRole, type StorageTrees } from './default-storage.ts';
import { DiskActionCache } from './disk-action-cache.ts';
import { DiskBlobStore } from './disk-blob-store.ts';
import { ExistenceCachingBlobStore } from './existence-caching-blob-store.ts';
import { connectStorage, type StorageClients } from './grpc-clients.ts';
import { MemoryActionCache } from './memory-action-cache.ts';
import { MemoryBlobStore } from './memory-blob-store.ts';
import { MetricsActionCache } from './metrics-action-cache.ts';
import { MirroredActionCache } from './mirrored-action-cache.ts';
import { MirroredBlobStore } from './mirrored-blob-store.ts';
import { MetricsBlobStore } from './metrics-blob-store.ts';
import { RemoteActionCache } from './remote-action-cache.ts';
import { RemoteBlobStore } from './remote-blob-store.ts';
import { ShardingBlobStore } from './sharding-blob-store.ts';
import { WritePolicyActionCache, type QuarantineHooks } from './write-policy-action-cache.ts';

export interface StorageDeps {
  config: Config;
  metrics: Metrics;
  logger: Logger;
  /** Where quarantined client writes go (the role fills it in once its auditor exists). */
  hooks?: QuarantineHooks;
  /** Said after the write policy refuses a client (how writers get through here). */
  denyHint?: string;
}

export interface Storage {
  blobs: BlobStore;
  actionCache: ActionCache;
  /** What the top write policy does with client writes (Capabilities announces it). */
  clientWrites: ClientWrites;
  /** Close the connections to storage nodes. */
  close(): void;
}

/** The storage of a role: its config trees, or the defaults its flags stand for, built. */
export function createStorage(role: StorageRole, deps: StorageDeps): Promise<Storage> {
  return buildStorage(storageTrees(deps.config, role), deps);
}

export async function buildStorage(trees: StorageTrees, deps: StorageDeps): Promise<Storage> {
  const connections = new Map<string, StorageClients>();
  const { config } = deps;
  const connect = (address: string): StorageClients => {
    let c = connections.get(address);
    if (!c) {
      c = connectStorage(address, { maxMessageBytes: config.maxMessageBytes, client: config.client, ...(config.fleetToken !== undefined ? { fleetToken: config.fleetToken } : {}) });
      connections.set(address, c);
    }
    return c;
  };
  const close = () => {
    for (const c of connections.values()) c.close();
  };
  try {
    const blobs = await buildBlobStore(trees.contentAddressableStorage, deps, connect, '');
    const hooks = deps.hooks ?? {};
    const top = 'writePolicy' in trees.actionCache ? trees.actionCache : { writePolicy: { clientWrites: 'allow' as const, backend: trees.actionCache } };
    const actionCache = buildActionCache(top, { ...deps, hooks }, connect, blobs, '');
    return { blobs, actionCache, clientWrites: top.writePolicy.clientWrites, close };
  } catch (err) {
    close();
    throw err;
  }
}

type Connect = (address: string) => StorageClients;

function label(parent: string, own: string): string {
  return parent ? `${parent}/${own}` : own;
}

async function buildBlobStore(node: BlobStoreConfig, deps: StorageDeps, connect: Connect, parent: string): Promise<BlobStore> {
  const { config, metrics, logger } = deps;
  let store: BlobStore;
  let name: string;
  if ('disk' in node) {
    name = label(parent, 'disk');
    store = await DiskBlobStore.open({
      root: node.disk.path ?? config.dataDir,
      maxBytes: node.disk.maxBytes ?? config.storage.maxBytes,
      verifyBeforeServeBytes: node.disk.verifyBeforeServeBytes ?? config.storage.verifyBeforeServeBytes,
      metrics,
      logger,
    });
  } else if ('memory' in node) {
    name = label(parent, 'memory');
    store = new MemoryBlobStore(node.memory.maxBytes ?? config.storage.maxBytes);
  } else if ('remote' in node) {
    name = label(parent, `remote ${node.remote.address}`);
    store = new RemoteBlobStore(connect(node.remote.address));
  } else if ('sharding' in node) {
    name = label(parent, 'sharding');
    const shards = [];
    for (const s of node.sharding.shards) shards.push({ name: s.name, weight: s.weight, store: await buildBlobStore(s.backend, deps, connect, label(name, s.name)) });
    store = new ShardingBlobStore(shards);
  } else if ('mirrored' in node) {
    name = label(parent, 'mirrored');
    const replicas = [];
    for (const b of node.mirrored.backends) replicas.push({ name: b.name, weight: b.weight, store: await buildBlobStore(b.backend, deps, connect, label(name, b.name)) });
    store = new MirroredBlobStore(replicas, node.mirrored.replicas, logger.child({ component: 'mirrored-cas' }));
  } else {
    name = label(parent, 'existence-caching');
    store = new ExistenceCachingBlobStore(await buildBlobStore(node.existenceCaching.backend, deps, connect, name), node.existenceCaching);
  }
  return new MetricsBlobStore(store, metrics, name);
}

function buildActionCache(node: ActionCacheConfig, deps: StorageDeps & { hooks: QuarantineHooks }, connect: Connect, blobs: BlobStore, parent: string): ActionCache {
  const { config, metrics, logger } = deps;
  let cache: ActionCache;
  let name: string;
  if ('disk' in node) {
    name = label(parent, 'disk');
    cache = new DiskActionCache(node.disk.path ?? join(config.dataDir, 'ac'));
  } else if ('memory' in node) {
    name = label(parent, 'memory');
    cache = new MemoryActionCache();
  } else if ('remote' in node) {
    name = label(parent, `remote ${node.remote.address}`);
    cache = new RemoteActionCache(connect(node.remote.address));
  } else if ('completenessChecking' in node) {
    name = label(parent, 'completeness-checking');
    cache = new CompletenessCheckingActionCache(buildActionCache(node.completenessChecking.backend, deps, connect, blobs, name), blobs, logger);
  } else if ('mirrored' in node) {
    name = label(parent, 'mirrored');
    const replicas = node.mirrored.backends.map((b) => ({ name: b.name, cache: buildActionCache(b.backend, deps, connect, blobs, label(name, b.name)) }));
    cache = new MirroredActionCache(replicas, node.mirrored.replicas, logger.child({ component: 'mirrored-ac' }));
  } else {
    name = label(parent, 'write-policy');
    const inner = buildActionCache(node.writePolicy.backend, deps, connect, blobs, name);
    cache = new WritePolicyActionCache(inner, { clientWrites: node.writePolicy.clientWrites, blobs, hooks: deps.hooks, metrics, ...(deps.denyHint !== undefined ? { denyHint: deps.denyHint } : {}) });
  }
  return new MetricsActionCache(cache, metrics, name);
}
