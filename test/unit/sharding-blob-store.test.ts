import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { digestOf, EMPTY_DIGEST, type Digest } from '../../common/digest.ts';
import { putBlob, readBlob, readStream } from '../../cas/blob-io.ts';
import { MemoryBlobStore } from '../../cas/memory-blob-store.ts';
import { ShardingBlobStore, type Shard } from '../../cas/sharding-blob-store.ts';

const randomDigests = (n: number): Digest[] =>
  Array.from({ length: n }, () => ({ hash: randomBytes(32).toString('hex'), size_bytes: 1 + Math.floor(Math.random() * 1000) }));

const shards = (names: string[], weights: number[] = []): Shard[] =>
  names.map((name, i) => ({ name, store: new MemoryBlobStore(), weight: weights[i] }));

function counts(store: ShardingBlobStore, digests: Digest[]): Map<string, number> {
  const c = new Map<string, number>();
  for (const d of digests) {
    const name = store.shardFor(d).name;
    c.set(name, (c.get(name) ?? 0) + 1);
  }
  return c;
}

describe('ShardingBlobStore', () => {
  it('spreads digests roughly evenly over 3 shards', () => {
    const store = new ShardingBlobStore(shards(['cas-a:8980', 'cas-b:8980', 'cas-c:8980']));
    const digests = randomDigests(3000);
    const c = counts(store, digests);
    assert.equal(c.size, 3);
    for (const [name, n] of c) {
      const share = n / digests.length;
      assert.ok(share >= 0.25 && share <= 0.42, `${name} got ${(share * 100).toFixed(1)}%`);
    }
  });

  it('follows weights', () => {
    const store = new ShardingBlobStore(shards(['big', 'small'], [3, 1]));
    const c = counts(store, randomDigests(4000));
    const share = (c.get('big') ?? 0) / 4000;
    assert.ok(share > 0.7 && share < 0.8, `big got ${(share * 100).toFixed(1)}%`);
  });

  it('is stable: a 4th shard takes about 1/4 of the keys and moves nothing else', () => {
    const three = shards(['cas-a:8980', 'cas-b:8980', 'cas-c:8980']);
    const before = new ShardingBlobStore(three);
    const after = new ShardingBlobStore([...three, { name: 'cas-d:8980', store: new MemoryBlobStore() }]);
    const digests = randomDigests(3000);
    let moved = 0;
    for (const d of digests) {
      const was = before.shardFor(d).name;
      const now = after.shardFor(d).name;
      if (was !== now) {
        moved++;
        assert.equal(now, 'cas-d:8980', 'a key moved between two old shards');
      }
    }
    const share = moved / digests.length;
    assert.ok(share > 0.18 && share < 0.32, `moved ${(share * 100).toFixed(1)}%`);
    // The same shards in another order place every key the same way.
    const reordered = new ShardingBlobStore([three[2]!, three[0]!, three[1]!]);
    for (const d of digests.slice(0, 500)) assert.equal(reordered.shardFor(d).name, before.shardFor(d).name);
  });

  it('writes and reads through the owning shard; findMissing keeps the input order', async () => {
    const parts = shards(['a', 'b', 'c']);
    const store = new ShardingBlobStore(parts);
    const blobs = Array.from({ length: 60 }, (_, i) => Buffer.from(`blob number ${i} ${'x'.repeat(i)}`));
    const digests = blobs.map(digestOf);
    for (const b of blobs.filter((_, i) => i % 3 === 0)) await putBlob(store, b);
    // Every stored blob sits in exactly its owner.
    for (const [i, d] of digests.entries()) {
      if (i % 3 !== 0) continue;
      const owner = store.shardFor(d).name;
      for (const p of parts) assert.equal((await p.store.findMissing([d])).length === 0, p.name === owner, `${i} in ${p.name}`);
      assert.deepEqual(await readBlob(store, d), blobs[i]);
    }
    const d0 = digests[0]!;
    assert.equal((await readStream(await store.read(d0, 5, 6))).toString(), 'number');
    const asked = [...digests].reverse().concat([EMPTY_DIGEST, digests[1]!]);
    const expected = asked.filter((d) => d !== EMPTY_DIGEST && digests.indexOf(d) % 3 !== 0);
    assert.deepEqual(await store.findMissing(asked), expected);
    assert.deepEqual(await store.findMissing([]), []);
  });

  it('refuses bad shard lists', () => {
    assert.throws(() => new ShardingBlobStore([]), /at least one/);
    assert.throws(() => new ShardingBlobStore(shards(['a', 'a'])), /used twice/);
    assert.throws(() => new ShardingBlobStore(shards(['a'], [0])), /weight/);
  });

  it('routes 10k digests of findMissing quickly', async () => {
    const store = new ShardingBlobStore(shards(['a', 'b', 'c', 'd', 'e']));
    const digests = randomDigests(10_000);
    const t0 = performance.now();
    assert.equal((await store.findMissing(digests)).length, 10_000);
    const ms = performance.now() - t0;
    assert.ok(ms < 2000, `took ${ms.toFixed(0)} ms`);
  });
});
