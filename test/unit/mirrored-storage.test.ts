// Mirrored blobs and ActionCache entries: each on R of N backends, a backend that is down costs
// nothing, a replica that lacks a blob is repaired from one that has it.
import { strict as assert } from 'node:assert';
import type { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { MemoryActionCache } from '../../cas/memory-action-cache.ts';
import { MemoryBlobStore } from '../../cas/memory-blob-store.ts';
import type { ActionCache } from '../../cas/action-cache.ts';
import type { BlobStore, BlobWriter } from '../../cas/blob-store.ts';
import { putBlob, readBlob } from '../../cas/blob-io.ts';
import { MirroredActionCache } from '../../cas/mirrored-action-cache.ts';
import { MirroredBlobStore } from '../../cas/mirrored-blob-store.ts';
import { digestOf, type Digest } from '../../common/digest.ts';
import { ReapiError, Status } from '../../common/errors.ts';

/** A backend that can be switched off: every call then fails with UNAVAILABLE, as a dead node's would. */
class Switchable implements BlobStore {
  down = false;
  readonly inner = new MemoryBlobStore();
  readonly digestFunction = this.inner.digestFunction;
  /** Whether the backend itself holds the blob (whatever `down` says). */
  async holds(d: Digest): Promise<boolean> {
    return (await this.inner.findMissing([d])).length === 0;
  }
  private check(): void {
    if (this.down) throw new ReapiError(Status.UNAVAILABLE, 'node is down');
  }
  async findMissing(d: Digest[]): Promise<Digest[]> {
    this.check();
    return this.inner.findMissing(d);
  }
  async read(d: Digest, o?: number, l?: number): Promise<Readable> {
    this.check();
    return this.inner.read(d, o, l);
  }
  async write(d: Digest): Promise<BlobWriter> {
    this.check();
    return this.inner.write(d);
  }
}

class SwitchableCache implements ActionCache {
  down = false;
  readonly inner = new MemoryActionCache();
  private check(): void {
    if (this.down) throw new ReapiError(Status.UNAVAILABLE, 'node is down');
  }
  async get(i: string, d: Digest) {
    this.check();
    return this.inner.get(i, d);
  }
  async put(i: string, d: Digest, r: Parameters<ActionCache['put']>[2]) {
    this.check();
    return this.inner.put(i, d, r);
  }
  async remove(i: string, d: Digest) {
    this.check();
    return this.inner.remove(i, d);
  }
}

describe('MirroredBlobStore', () => {
  const nodes = () => ['a', 'b', 'c'].map((name) => ({ name, store: new Switchable() }));

  it('writes each blob to its 2 replicas out of 3, and reads it with any one of them down', async () => {
    const n = nodes();
    const m = new MirroredBlobStore(n, 2);
    const blobs: Digest[] = [];
    for (let i = 0; i < 30; i++) blobs.push(await putBlob(m, Buffer.from(`blob ${i}`)));
    for (const d of blobs) {
      const holders = [];
      for (const x of n) if (await x.store.holds(d)) holders.push(x);
      assert.equal(holders.length, 2, 'on exactly 2 nodes');
      assert.deepEqual(holders.map((h) => h.name).sort(), m.replicasOf(d).map((r) => r.name).sort());
    }
    for (const down of n) {
      down.store.down = true;
      for (const [i, d] of blobs.entries()) assert.equal((await readBlob(m, d)).toString(), `blob ${i}`);
      assert.deepEqual(await m.findMissing(blobs), [], `nothing missing with ${down.name} down`);
      down.store.down = false;
    }
  });

  it('writes while a replica is down, and repairs it when it is back', async () => {
    const n = nodes();
    const m = new MirroredBlobStore(n, 2);
    const d = digestOf(Buffer.from('written while down'));
    const [first] = m.replicasOf(d);
    const dead = n.find((x) => x.name === first!.name)!;
    dead.store.down = true;
    await putBlob(m, Buffer.from('written while down'));
    dead.store.down = false;
    assert.equal(await dead.store.holds(d), false);
    assert.equal((await readBlob(m, d)).toString(), 'written while down', 'read falls back past the replica that lacks it');
    await m.settled();
    assert.equal(await dead.store.holds(d), true, 'and the replica is repaired');
  });

  it('calls a blob missing only when no replica has it, and fails when no replica answers', async () => {
    const n = nodes();
    const m = new MirroredBlobStore(n, 2);
    const present = await putBlob(m, Buffer.from('present'));
    const absent = digestOf(Buffer.from('absent'));
    assert.deepEqual(await m.findMissing([present, absent]), [absent]);
    assert.deepEqual(await m.findMissing([]), []);
    for (const x of n) x.store.down = true;
    await assert.rejects(m.findMissing([present]), (e: { code?: number }) => e.code === Status.UNAVAILABLE);
    await assert.rejects(putBlob(m, Buffer.from('nowhere')), (e: { code?: number }) => e.code === Status.UNAVAILABLE);
  });
});

describe('MirroredActionCache', () => {
  it('keeps an entry on 2 of 3 caches, serves it with one down, and repairs the one that missed it', async () => {
    const caches = ['a', 'b', 'c'].map((name) => ({ name, cache: new SwitchableCache() }));
    const m = new MirroredActionCache(caches, 2);
    const action = digestOf(Buffer.from('an action'));
    await m.put('main', action, { exit_code: 7 });
    const holders = [];
    for (const c of caches) if (await c.cache.inner.get('main', action)) holders.push(c);
    assert.equal(holders.length, 2);
    holders[0]!.cache.down = true;
    assert.equal((await m.get('main', action))?.exit_code, 7);
    holders[0]!.cache.down = false;
    await holders[0]!.cache.inner.remove('main', action);
    assert.equal((await m.get('main', action))?.exit_code, 7);
    await new Promise((r) => setTimeout(r, 10));
    assert.equal((await holders[0]!.cache.inner.get('main', action))?.exit_code, 7, 'repaired');
    for (const c of caches) c.cache.down = true;
    await assert.rejects(m.get('main', action), (e: { code?: number }) => e.code === Status.UNAVAILABLE);
  });
});
