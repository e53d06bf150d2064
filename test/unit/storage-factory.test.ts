// Storage built from config trees: the schema, each role's default tree, the chain the factory
// builds (metrics on every node), the write policy and existence caching decorators.
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import { WORKER_CALLER } from '../../cas/action-cache.ts';
import { putBlob, readBlob } from '../../cas/blob-io.ts';
import { storageTrees } from '../../cas/default-storage.ts';
import { ExistenceCachingBlobStore } from '../../cas/existence-caching-blob-store.ts';
import { MemoryActionCache } from '../../cas/memory-action-cache.ts';
import { MemoryBlobStore } from '../../cas/memory-blob-store.ts';
import { provenanceOf } from '../../cas/provenance.ts';
import { buildStorage } from '../../cas/storage-factory.ts';
import { WritePolicyActionCache, type QuarantineHooks } from '../../cas/write-policy-action-cache.ts';
import { parseConfig, type ConfigInput } from '../../common/config.ts';
import { digestOf, type Digest } from '../../common/digest.ts';
import { ReapiError } from '../../common/errors.ts';
import { silentLogger } from '../../common/logger.ts';
import { Metrics } from '../../common/metrics.ts';

const config = (input: ConfigInput = {}) => parseConfig(input);
const action = digestOf(Buffer.from('an action'));

async function metricValue(metrics: Metrics, name: string, labels: Record<string, string>): Promise<number> {
  const m = (await metrics.registry.getMetricsAsJSON()).find((x) => x.name === name);
  const v = m?.values.find((x) => Object.entries(labels).every(([k, want]) => x.labels[k] === want));
  return Number(v?.value ?? 0);
}

describe('storage config trees', () => {
  it('expand the flags to each role\u2019s default tree', () => {
    // On loopback with no credentials configured, the caller is the machine's own user: its writes are kept.
    assert.deepEqual(storageTrees(config({ dataDir: '/d' }), 'serve'), {
      contentAddressableStorage: { disk: { path: '/d', maxBytes: 10 * 1024 ** 3, verifyBeforeServeBytes: 4 * 1024 ** 2 } },
      actionCache: { writePolicy: { clientWrites: 'allow', backend: { completenessChecking: { backend: { disk: { path: '/d/ac' } } } } } },
    });
    // With credentials, where actions are executed, only workers write.
    const withTokens = storageTrees(config({ dataDir: '/d', auth: { tokensFile: '/t', principals: [{ name: 'ci', permissions: ['cache-read'] }] } }), 'serve');
    assert.deepEqual(withTokens.actionCache, { writePolicy: { clientWrites: 'deny', backend: { completenessChecking: { backend: { disk: { path: '/d/ac' } } } } } });
    const cacheOnly = storageTrees(config({ execution: { enabled: false }, storage: { backend: 'memory' } }), 'serve');
    assert.deepEqual(cacheOnly.actionCache, { writePolicy: { clientWrites: 'allow', backend: { completenessChecking: { backend: { memory: {} } } } } });
    assert.deepEqual(storageTrees(config({ actionCache: { checkCompleteness: false } }), 'cas').actionCache, { writePolicy: { clientWrites: 'deny', backend: { disk: { path: '.reapi-data/ac' } } } });
    const fleet = config({ cas: ['a:1', 'b:2'] });
    assert.deepEqual(storageTrees(fleet, 'scheduler'), {
      contentAddressableStorage: { sharding: { shards: [{ name: 'a:1', weight: 1, backend: { remote: { address: 'a:1' } } }, { name: 'b:2', weight: 1, backend: { remote: { address: 'b:2' } } }] } },
      actionCache: { writePolicy: { clientWrites: 'deny', backend: { completenessChecking: { backend: { remote: { address: 'a:1' } } } } } },
    });
    assert.deepEqual(storageTrees(fleet, 'worker').actionCache, { completenessChecking: { backend: { remote: { address: 'a:1' } } } });
    assert.throws(() => storageTrees(config(), 'worker'), /no storage nodes: pass --cas/);
  });

  it('validate a tree by path and fill in shard names and defaults', () => {
    const c = config({
      storage: {
        contentAddressableStorage: { existenceCaching: { backend: { sharding: { shards: [{ backend: { remote: { address: 'x:1' } } }, { weight: 2, backend: { memory: { maxBytes: '1MiB' } } }] } } } },
      },
    });
    assert.deepEqual(c.storage.contentAddressableStorage, {
      existenceCaching: { ttlMs: 60_000, maxEntries: 1_000_000, backend: { sharding: { shards: [{ name: 'x:1', weight: 1, backend: { remote: { address: 'x:1' } } }, { name: 'shard-1', weight: 2, backend: { memory: { maxBytes: 1024 ** 2 } } }] } } },
    });
    assert.throws(() => config({ storage: { contentAddressableStorage: { sharding: { shards: [] } } } }), /storage\.contentAddressableStorage/);
    assert.throws(() => config({ storage: { actionCache: { writePolicy: { clientWrites: 'maybe', backend: { memory: {} } } } } } as unknown as ConfigInput), /storage\.actionCache/);
    assert.throws(() => config({ storage: { contentAddressableStorage: { tape: {} } } } as unknown as ConfigInput), /storage\.contentAddressableStorage/);
  });
});

describe('buildStorage', () => {
  it('builds a sharded, existence-cached chain and counts every node', async () => {
    const metrics = new Metrics();
    const c = config({ storage: { contentAddressableStorage: { existenceCaching: { backend: { sharding: { shards: [{ name: 'a', backend: { memory: {} } }, { name: 'b', backend: { memory: {} } }] } } } }, actionCache: { memory: {} } } });
    const storage = await buildStorage({ contentAddressableStorage: c.storage.contentAddressableStorage!, actionCache: c.storage.actionCache! }, { config: c, metrics, logger: silentLogger });
    assert.equal(storage.clientWrites, 'allow', 'a tree without a write policy gets one that lets clients write');
    const blobs: Digest[] = [];
    for (let i = 0; i < 20; i++) blobs.push(await putBlob(storage.blobs, Buffer.from(`blob ${i}`)));
    for (const [i, d] of blobs.entries()) assert.equal((await readBlob(storage.blobs, d)).toString(), `blob ${i}`);
    assert.deepEqual(await storage.blobs.findMissing(blobs), []);
    const writes = async (backend: string) => metricValue(metrics, 'reapi_blob_store_operations_total', { backend, operation: 'write', result: 'ok' });
    assert.equal(await writes('existence-caching'), 20);
    assert.equal(await writes('existence-caching/sharding'), 20);
    const a = await writes('existence-caching/sharding/a/memory');
    const b = await writes('existence-caching/sharding/b/memory');
    assert.equal(a + b, 20);
    assert.ok(a > 0 && b > 0, `both shards hold blobs (${a}, ${b})`);
    assert.equal(await metricValue(metrics, 'reapi_blob_store_operations_total', { backend: 'existence-caching/sharding', operation: 'find_missing' }), 0, 'present blobs were known: no FindMissing below the cache');
    await storage.actionCache.put('main', action, { exit_code: 0 });
    assert.equal((await storage.actionCache.get('main', action))?.exit_code, 0);
    assert.equal(await metricValue(metrics, 'reapi_action_cache_backend_operations_total', { backend: 'write-policy/memory', operation: 'get', result: 'hit' }), 1);
    storage.close();
  });
});

describe('WritePolicyActionCache', () => {
  const make = (clientWrites: 'allow' | 'deny' | 'quarantine', hooks: QuarantineHooks = {}) => {
    const inner = new MemoryActionCache();
    const blobs = new MemoryBlobStore();
    return { inner, blobs, ac: new WritePolicyActionCache(inner, { clientWrites, blobs, hooks, metrics: new Metrics(), denyHint: '; ask the fleet' }) };
  };
  const claimsWorker = { exit_code: 0, execution_metadata: { worker: 'forged' } };

  it('lets workers and fleet members write; a fleet member keeps the provenance its worker recorded', async () => {
    const { ac, inner } = make('deny');
    await ac.put('main', action, { exit_code: 1 }, WORKER_CALLER);
    assert.equal((await inner.get('main', action))?.exit_code, 1);
    await ac.put('main', action, { exit_code: 2 }, { kind: 'fleet' });
    assert.equal(provenanceOf((await inner.get('main', action))!).source, 'client', 'no provenance recorded: counted as a client write');
  });

  it('refuses clients with PERMISSION_DENIED naming the setting, stores them as client writes, or quarantines them', async () => {
    const denied = make('deny');
    await assert.rejects(denied.ac.put('main', action, claimsWorker, { kind: 'client' }), (e: unknown) => e instanceof ReapiError && e.code === status.PERMISSION_DENIED && /clientWrites is "deny".*ask the fleet$/.test(e.message));
    assert.equal(await denied.inner.get('main', action), undefined);

    const open = make('allow');
    await open.ac.put('main', action, claimsWorker, { kind: 'client', labels: { toolInvocationId: 'inv-1' } });
    const stored = provenanceOf((await open.inner.get('main', action))!);
    assert.equal(stored.source, 'client');
    assert.equal(stored.tool_invocation_id, 'inv-1');

    const seen: Digest[] = [];
    const q = make('quarantine', { onQuarantine: async (_i, _a, entry) => void seen.push(entry) });
    await q.ac.put('main', action, claimsWorker, { kind: 'client' });
    assert.equal(await q.inner.get('main', action), undefined, 'not served');
    assert.equal(seen.length, 1);
    assert.ok((await readBlob(q.blobs, seen[0]!)).length > 0, 'the entry is kept in the CAS for the audit');
  });
});

describe('ExistenceCachingBlobStore', () => {
  it('answers FindMissing for blobs it saw present or written, and asks the backend about the rest', async () => {
    const inner = new MemoryBlobStore();
    let asked = 0;
    const counting = Object.assign(Object.create(inner) as MemoryBlobStore, {
      findMissing: (ds: Digest[]) => {
        asked += ds.length;
        return inner.findMissing(ds);
      },
    });
    const store = new ExistenceCachingBlobStore(counting, { ttlMs: 60_000, maxEntries: 100 });
    const a = await putBlob(store, Buffer.from('a'));
    const b = await putBlob(inner, Buffer.from('b'));
    const c = digestOf(Buffer.from('c'));
    assert.deepEqual(await store.findMissing([a, b, c]), [c]);
    assert.equal(asked, 2, 'a was written through the cache');
    assert.deepEqual(await store.findMissing([a, b, c]), [c]);
    assert.equal(asked, 3, 'b is now known present; c is asked again');
  });
});
