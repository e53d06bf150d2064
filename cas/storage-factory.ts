// Builds the storage chains from their config trees (common/storage-config.ts), as Buildbarn
// builds its BlobAccess chain: the one place that knows every implementation and decorator. Every
// node is wrapped in a metrics decorator named by its place in the tree, and the ActionCache
// chain always has a write policy on top (`allow` when the tree names none), so no entry written
// by a client is ever recorded as a worker's.
//
// Every offered digest function gets its own chain from the same tree: its blobs and entries never
// mix with another function's. Disk CAS nodes are opened once and shared between the chains
// (one index and one size cap, cas/disk-blob-store.ts); the rest is built per function.
import { join } from 'node:path';
import type { Config } from '../common/config.ts';
import type { Logger } from '../common/logger.ts';
import type { Metrics } from '../common/metrics.ts';
import type { ActionCacheConfig, BlobStoreConfig, ClientWrites } from '../common/storage-config.ts';
import { DIGEST_FUNCTIONS, requestedFunction, SHA256, type DigestFunction } from '../common/digest-function.ts';
import { invalidArgument } from '../common/errors.ts';
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

/** The storage of one digest function. */
export interface FunctionStorage {
  digestFunction: DigestFunction;
  blobs: BlobStore;
  actionCache: ActionCache;
}

export interface Storage {
  /** The SHA-256 chains (what internal users that hash nothing of a client's take). */
  blobs: BlobStore;
  actionCache: ActionCache;
  /** What the top write policy does with client writes (Capabilities announces it). */
  clientWrites: ClientWrites;
  /** The offered digest functions, in the order of the config. */
  functions: readonly DigestFunction[];
  /** The chains of one offered function; INVALID_ARGUMENT for one not offered. */
  forFunction(fn: DigestFunction): FunctionStorage;
  /**
   * The chains a request uses: its `digest_function` field (or a ByteStream name's segment), or
   * when it names none the default of its instance (storage.instanceDigestFunctions, else
   * storage.defaultDigestFunction).
   */
  resolve(instanceName: string, requested?: DigestFunction | string): FunctionStorage;
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
    const offered = config.storage.digestFunctions.map((n) => DIGEST_FUNCTIONS[n]);
    const defaults = { default: DIGEST_FUNCTIONS[config.storage.defaultDigestFunction], instances: config.storage.instanceDigestFunctions };
    for (const name of [config.storage.defaultDigestFunction, ...Object.values(defaults.instances)]) {
      if (!config.storage.digestFunctions.includes(name)) {
        throw new Error(`storage: the default digest function ${name} is not among storage.digestFunctions (${config.storage.digestFunctions.join(', ')})`);
      }
    }
    const hooks = deps.hooks ?? {};
    const top = 'writePolicy' in trees.actionCache ? trees.actionCache : { writePolicy: { clientWrites: 'allow' as const, backend: trees.actionCache } };
    const disks = new Map<string, DiskBlobStore>();
    const chains = new Map<DigestFunction, FunctionStorage>();
    for (const fn of offered) {
      const build: Build = { ...deps, hooks, connect, disks, fn };
      const blobs = await buildBlobStore(trees.contentAddressableStorage, build, '');
      chains.set(fn, { digestFunction: fn, blobs, actionCache: buildActionCache(top, build, blobs, '') });
    }
    const forFunction = (fn: DigestFunction): FunctionStorage => {
      const chain = chains.get(fn);
      if (!chain) throw invalidArgument(`digest function ${fn.name} is not offered by this server (offered: ${config.storage.digestFunctions.join(', ')})`);
      return chain;
    };
    const resolve = (instanceName: string, requested?: DigestFunction | string): FunctionStorage => {
      const fallback = DIGEST_FUNCTIONS[defaults.instances[instanceName] ?? config.storage.defaultDigestFunction];
      if (typeof requested === 'object') return forFunction(requested);
      return forFunction(requestedFunction(requested, fallback, config.storage.digestFunctions));
    };
    const sha = chains.get(SHA256) ?? chains.get(offered[0]!)!;
    return { blobs: sha.blobs, actionCache: sha.actionCache, clientWrites: top.writePolicy.clientWrites, functions: offered, forFunction, resolve, close };
  } catch (err) {
    close();
    throw err;
  }
}

type Connect = (address: string) => StorageClients;

/** What building one function's chains needs. */
interface Build extends StorageDeps {
  hooks: QuarantineHooks;
  connect: Connect;
  /** Disk stores opened so far, by root: the other functions' chains take views of them. */
  disks: Map<string, DiskBlobStore>;
  fn: DigestFunction;
}

function label(parent: string, own: string): string {
  return parent ? `${parent}/${own}` : own;
}

/** A node's metrics label: its path in the tree, the top of a non-SHA-256 chain prefixed with the function. */
function nodeName(build: Build, parent: string, own: string): string {
  if (parent) return `${parent}/${own}`;
  return build.fn === SHA256 ? own : `${build.fn.resourceName}:${own}`;
}

async function openDisk(node: Extract<BlobStoreConfig, { disk: unknown }>, build: Build): Promise<DiskBlobStore> {
  const { config, metrics, logger } = build;
  const root = node.disk.path ?? config.dataDir;
  let store = build.disks.get(root);
  if (!store) {
    store = await DiskBlobStore.open({
      root,
      maxBytes: node.disk.maxBytes ?? config.storage.maxBytes,
      verifyBeforeServeBytes: node.disk.verifyBeforeServeBytes ?? config.storage.verifyBeforeServeBytes,
      leaseMs: (node.disk.leaseSeconds ?? config.storage.leaseSeconds) * 1000,
      metrics,
      logger,
    });
    build.disks.set(root, store);
  }
  return store.forFunction(build.fn);
}

async function buildBlobStore(node: BlobStoreConfig, deps: Build, parent: string): Promise<BlobStore> {
  const { config, metrics, logger, connect, fn } = deps;
  let store: BlobStore;
  let name: string;
  if ('disk' in node) {
    name = nodeName(deps, parent, 'disk');
    store = await openDisk(node, deps);
  } else if ('memory' in node) {
    name = nodeName(deps, parent, 'memory');
    store = new MemoryBlobStore(node.memory.maxBytes ?? config.storage.maxBytes, fn);
  } else if ('remote' in node) {
    name = nodeName(deps, parent, `remote ${node.remote.address}`);
    store = new RemoteBlobStore(connect(node.remote.address), { digestFunction: fn });
  } else if ('sharding' in node) {
    name = nodeName(deps, parent, 'sharding');
    const shards = [];
    for (const s of node.sharding.shards) shards.push({ name: s.name, weight: s.weight, store: await buildBlobStore(s.backend, deps, label(name, s.name)) });
    store = new ShardingBlobStore(shards);
  } else if ('mirrored' in node) {
    name = nodeName(deps, parent, 'mirrored');
    const replicas = [];
    for (const b of node.mirrored.backends) replicas.push({ name: b.name, weight: b.weight, store: await buildBlobStore(b.backend, deps, label(name, b.name)) });
    store = new MirroredBlobStore(replicas, node.mirrored.replicas, logger.child({ component: 'mirrored-cas' }));
  } else {
    name = nodeName(deps, parent, 'existence-caching');
    store = new ExistenceCachingBlobStore(await buildBlobStore(node.existenceCaching.backend, deps, name), node.existenceCaching);
  }
  return new MetricsBlobStore(store, metrics, name);
}

function buildActionCache(node: ActionCacheConfig, deps: Build, blobs: BlobStore, parent: string): ActionCache {
  const { config, metrics, logger, connect, fn } = deps;
  let cache: ActionCache;
  let name: string;
  if ('disk' in node) {
    name = nodeName(deps, parent, 'disk');
    cache = new DiskActionCache(node.disk.path ?? join(config.dataDir, 'ac'), fn);
  } else if ('memory' in node) {
    name = nodeName(deps, parent, 'memory');
    cache = new MemoryActionCache();
  } else if ('remote' in node) {
    name = nodeName(deps, parent, `remote ${node.remote.address}`);
    cache = new RemoteActionCache(connect(node.remote.address), { digestFunction: fn });
  } else if ('completenessChecking' in node) {
    name = nodeName(deps, parent, 'completeness-checking');
    cache = new CompletenessCheckingActionCache(buildActionCache(node.completenessChecking.backend, deps, blobs, name), blobs, logger);
  } else if ('mirrored' in node) {
    name = nodeName(deps, parent, 'mirrored');
    const replicas = node.mirrored.backends.map((b) => ({ name: b.name, cache: buildActionCache(b.backend, deps, blobs, label(name, b.name)) }));
    cache = new MirroredActionCache(replicas, node.mirrored.replicas, logger.child({ component: 'mirrored-ac' }));
  } else {
    name = nodeName(deps, parent, 'write-policy');
    const inner = buildActionCache(node.writePolicy.backend, deps, blobs, name);
    cache = new WritePolicyActionCache(inner, { clientWrites: node.writePolicy.clientWrites, blobs, hooks: deps.hooks, metrics, ...(deps.denyHint !== undefined ? { denyHint: deps.denyHint } : {}) });
  }
  return new MetricsActionCache(cache, metrics, name);
}
