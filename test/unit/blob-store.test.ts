import { strict as assert } from 'node:assert';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import { digestOf, EMPTY_DIGEST, type Digest } from '../../common/digest.ts';
import { ReapiError } from '../../common/errors.ts';
import { Metrics } from '../../common/metrics.ts';
import type { BlobStore } from '../../cas/blob-store.ts';
import { putBlob, readBlob, readStream } from '../../cas/blob-io.ts';
import { DiskBlobStore } from '../../cas/disk-blob-store.ts';
import { MemoryBlobStore } from '../../cas/memory-blob-store.ts';

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'reapi-blob-'));
  dirs.push(d);
  return d;
}
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function rejectsWith(p: Promise<unknown>, code: status, pattern?: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof ReapiError, `expected ReapiError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (pattern) assert.match(err.message, pattern);
    return true;
  });
}

const blob = (text: string) => Buffer.from(text);

const backends: Array<[string, (maxBytes?: number) => Promise<BlobStore>]> = [
  ['memory', async (max) => new MemoryBlobStore(max)],
  ['disk', async (max) => DiskBlobStore.open({ root: await tempDir(), maxBytes: max ?? 1 << 30 })],
];

for (const [name, make] of backends) {
  describe(`${name} BlobStore`, () => {
    it('stores, finds and reads blobs, with offset and limit', async () => {
      const store = await make();
      const data = blob('hello, content-addressed world');
      const d = digestOf(data);
      assert.deepEqual(await store.findMissing([d]), [d]);
      await putBlob(store, data);
      assert.deepEqual(await store.findMissing([d]), []);
      assert.deepEqual(await readBlob(store, d), data);
      assert.equal((await readStream(await store.read(d, 7, 7))).toString(), 'content');
      assert.equal((await readStream(await store.read(d, 7))).toString(), 'content-addressed world');
      assert.equal((await readStream(await store.read(d, data.length))).length, 0);
    });

    it('always has the empty blob', async () => {
      const store = await make();
      assert.deepEqual(await store.findMissing([EMPTY_DIGEST]), []);
      assert.equal((await readBlob(store, EMPTY_DIGEST)).length, 0);
    });

    it('reports a missing blob as NOT_FOUND and a read past the end as OUT_OF_RANGE', async () => {
      const store = await make();
      const data = blob('abc');
      await rejectsWith(store.read(digestOf(data)), status.NOT_FOUND);
      await putBlob(store, data);
      await rejectsWith(store.read(digestOf(data), 4), status.OUT_OF_RANGE, /past the end/);
    });

    it('refuses a wrong hash, a short write and bytes past the declared size, storing nothing', async () => {
      const store = await make();
      const data = blob('the real content');
      const d = digestOf(data);
      const wrong = await store.write(d);
      await wrong.append(blob('something else!!'));
      await rejectsWith(wrong.commit(), status.INVALID_ARGUMENT, /hashes to/);
      const short = await store.write(d);
      await short.append(data.subarray(0, 4));
      await rejectsWith(short.commit(), status.INVALID_ARGUMENT, /declared size 16 but 4 bytes/);
      await short.abort();
      const long = await store.write(d);
      await rejectsWith(long.append(Buffer.concat([data, blob('x')])), status.OUT_OF_RANGE, /past the declared size/);
      await long.abort();
      assert.deepEqual(await store.findMissing([d]), [d]);
    });

    it('lets concurrent writers of one blob all succeed', async () => {
      const store = await make();
      const data = Buffer.alloc(3 * 1024 * 1024, 7);
      const d = digestOf(data);
      const writers = await Promise.all([1, 2, 3].map(() => store.write(d)));
      await Promise.all(writers.map(async (w) => {
        for (let i = 0; i < data.length; i += 65536) await w.append(data.subarray(i, i + 65536));
        await w.commit();
      }));
      assert.deepEqual(await readBlob(store, d), data);
    });

    it('evicts the least recently used blobs past the size cap', async () => {
      const store = await make(3000);
      const blobs = [0, 1, 2, 3].map((i) => Buffer.alloc(1000, i));
      const ds: Digest[] = [];
      for (const b of blobs.slice(0, 3)) ds.push(await putBlob(store, b));
      await readBlob(store, ds[0]!); // blob 0 is now more recent than blob 1
      ds.push(await putBlob(store, blobs[3]!));
      await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(await store.findMissing(ds), [ds[1]]);
    });
  });
}

describe('DiskBlobStore specifics', () => {
  it('keeps everything across a restart', async () => {
    const root = await tempDir();
    const a = await DiskBlobStore.open({ root, maxBytes: 1 << 20 });
    const data = blob('persistent');
    const d = await putBlob(a, data);
    const b = await DiskBlobStore.open({ root, maxBytes: 1 << 20 });
    assert.deepEqual(await b.findMissing([d]), []);
    assert.deepEqual(await readBlob(b, d), data);
    assert.equal(b.storedBytes, data.length);
  });

  it('removes a corrupt file on read and reports it missing, never serving it', async () => {
    const root = await tempDir();
    const metrics = new Metrics({ defaultMetrics: false });
    const store = await DiskBlobStore.open({ root, maxBytes: 1 << 20, metrics });
    const data = blob('original bytes');
    const d = await putBlob(store, data);
    await writeFile(join(root, 'cas', d.hash.slice(0, 2), `${d.hash}-${d.size_bytes}`), blob('tampered bytes'));
    await rejectsWith(store.read(d), status.NOT_FOUND, /corrupt/);
    assert.deepEqual(await store.findMissing([d]), [d]);
    assert.equal((await metrics.casCorruptBlobs.get()).values[0]?.value, 1);
  });

  it('fails a streamed read of a large corrupt blob with DATA_LOSS and removes it', async () => {
    const root = await tempDir();
    const store = await DiskBlobStore.open({ root, maxBytes: 1 << 30, verifyBeforeServeBytes: 1024 });
    const data = Buffer.alloc(5 * 1024 * 1024, 1);
    const d = await putBlob(store, data);
    data[4 * 1024 * 1024] = 2;
    await writeFile(join(root, 'cas', d.hash.slice(0, 2), `${d.hash}-${d.size_bytes}`), data);
    await rejectsWith(readStream(await store.read(d)), status.DATA_LOSS, /corrupt/);
    assert.deepEqual(await store.findMissing([d]), [d]);
  });

  it('leaves no temp file behind after failed writes and refuses blobs larger than the cap', async () => {
    const root = await tempDir();
    const store = await DiskBlobStore.open({ root, maxBytes: 4 * 1024 * 1024 });
    const big = Buffer.alloc(2 * 1024 * 1024, 3);
    const w = await store.write(digestOf(big));
    await w.append(big.subarray(0, 1024 * 1024 + 10)); // spills to a temp file
    await w.abort();
    assert.deepEqual(await readdir(join(root, 'tmp')), []);
    await rejectsWith(store.write(digestOf(Buffer.alloc(5 * 1024 * 1024))), status.RESOURCE_EXHAUSTED, /larger than the whole CAS/);
  });

  it('never evicts pinned blobs', async () => {
    const store = await DiskBlobStore.open({ root: await tempDir(), maxBytes: 2000 });
    const a = await putBlob(store, Buffer.alloc(1000, 1));
    const release = store.pin([a]);
    await putBlob(store, Buffer.alloc(1000, 2));
    const c = await putBlob(store, Buffer.alloc(1000, 3));
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(await store.findMissing([a, c]), []);
    release();
  });
});
