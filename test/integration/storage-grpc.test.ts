// The storage services over real gRPC against startStorageNode: Capabilities, CAS, GetTree,
// ByteStream (large, ranged, resumable, zstd, bounded memory), ActionCache, persistence, disk full.
// One file, long, because every suite runs against the same node and clients.
import assert from 'node:assert/strict';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readdir, rm, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { status } from '@grpc/grpc-js';
import { digestOf, EMPTY_DIGEST, type Digest } from '../../common/digest.ts';
import { readResourceName, writeResourceName } from '../../common/resource-name.ts';
import { zstdCompress, zstdDecompressBounded } from '../../common/zstd.ts';
import { encode, type MessageInput, type MessageOutput } from '../../protos/index.ts';
import {
  byteStreamRead,
  byteStreamReadEach,
  byteStreamWrite,
  byteStreamWriteChunks,
  collect,
  expectGrpcError,
  metricValue,
  startTestStorage,
  unary,
  type TestStorage,
} from '../support/storage.ts';

const MiB = 1024 * 1024;

const uploadName = (d: Digest, instance = '') => writeResourceName(instance, randomUUID(), d);

async function batchUpdate(s: TestStorage, blobs: Buffer[], instance = ''): Promise<Digest[]> {
  const digests = blobs.map(digestOf);
  const res = await unary(s.cas, s.cas.BatchUpdateBlobs, {
    instance_name: instance,
    requests: blobs.map((data, i) => ({ digest: digests[i]!, data })),
  });
  for (const r of res.responses) assert.equal(r.status?.code, 0, r.status?.message);
  return digests;
}

async function findMissing(s: TestStorage, digests: Digest[]): Promise<Digest[]> {
  return (await unary(s.cas, s.cas.FindMissingBlobs, { blob_digests: digests })).missing_blob_digests.map((d) => ({
    hash: d.hash,
    size_bytes: d.size_bytes,
  }));
}

/** Files (not directories) anywhere under `dir`. */
async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) if (e.isFile()) out.push(join(e.parentPath, e.name));
  return out;
}

function blobPath(s: TestStorage, d: Digest): string {
  return join(s.dataDir, 'cas', d.hash.slice(0, 2), `${d.hash}-${d.size_bytes}`);
}

describe('storage node over gRPC', () => {
  let s: TestStorage;
  before(async () => {
    s = await startTestStorage();
  });
  after(async () => {
    await s?.stop();
  });

  describe('Capabilities', () => {
    test('SHA256 and BLAKE3, API 2.0..2.11, batch limit, AC updates, ZSTD, split and splice', async () => {
      const caps = await unary(s.capabilities, s.capabilities.GetCapabilities, { instance_name: '' });
      const cc = caps.cache_capabilities;
      assert.ok(cc);
      assert.deepEqual(cc.digest_functions, ['SHA256', 'BLAKE3']);
      assert.equal(caps.execution_capabilities?.digest_function, 'SHA256');
      assert.equal(caps.low_api_version?.major, 2);
      assert.equal(caps.low_api_version?.minor, 0);
      assert.equal(caps.high_api_version?.major, 2);
      assert.equal(caps.high_api_version?.minor, 11);
      assert.equal(cc.split_blob_support, true);
      assert.equal(cc.splice_blob_support, true);
      assert.equal(cc.max_batch_total_size_bytes, s.config.storage.maxBatchTotalSizeBytes);
      assert.equal(cc.action_cache_update_capabilities?.update_enabled, true);
      assert.ok(cc.supported_compressors.includes('ZSTD'));
      assert.ok(cc.supported_batch_update_compressors.includes('ZSTD'));
    });
  });

  describe('CAS', () => {
    test('FindMissingBlobs: stored blobs and the empty blob are not missing', async () => {
      const [a] = await batchUpdate(s, [randomBytes(100)]);
      const b = digestOf(randomBytes(50));
      assert.deepEqual(await findMissing(s, [a!, b, EMPTY_DIGEST]), [b]);
      assert.deepEqual(await findMissing(s, [EMPTY_DIGEST]), []);
    });

    test('BatchUpdateBlobs + BatchReadBlobs round trip, identity and ZSTD both ways', async () => {
      const small = randomBytes(100);
      const big = Buffer.from('compressible text '.repeat(4000));
      const plain = Buffer.from('plain upload '.repeat(500));
      const upd = await unary(s.cas, s.cas.BatchUpdateBlobs, {
        requests: [
          { digest: digestOf(small), data: small },
          { digest: digestOf(big), data: zstdCompress(big), compressor: 'ZSTD' },
          { digest: digestOf(plain), data: plain, compressor: 'IDENTITY' },
        ],
      });
      assert.deepEqual(upd.responses.map((r) => r.status?.code), [0, 0, 0]);
      const all = [small, big, plain];

      const identity = await unary(s.cas, s.cas.BatchReadBlobs, { digests: all.map(digestOf) });
      assert.equal(identity.responses.length, 3);
      for (const [i, r] of identity.responses.entries()) {
        assert.equal(r.status?.code, 0);
        assert.equal(r.compressor, 'IDENTITY');
        assert.equal(r.digest?.hash, digestOf(all[i]!).hash);
        assert.ok(r.data.equals(all[i]!));
      }

      const zstd = await unary(s.cas, s.cas.BatchReadBlobs, { digests: all.map(digestOf), acceptable_compressors: ['ZSTD'] });
      let compressed = 0;
      for (const [i, r] of zstd.responses.entries()) {
        assert.equal(r.status?.code, 0);
        const data = r.compressor === 'ZSTD' ? zstdDecompressBounded(r.data, all[i]!.length) : r.data;
        if (r.compressor === 'ZSTD') compressed++;
        assert.ok(data.equals(all[i]!), `blob ${i} differs after ${r.compressor}`);
      }
      assert.ok(compressed >= 1, 'the large compressible blob should come back ZSTD-compressed');

      const missing = digestOf(randomBytes(10));
      const res = await unary(s.cas, s.cas.BatchReadBlobs, { digests: [missing] });
      assert.equal(res.responses[0]?.status?.code, status.NOT_FOUND);
    });

    test('BatchUpdateBlobs: a wrong hash or size fails that entry only', async () => {
      const good = randomBytes(64);
      const other = randomBytes(64);
      const wrongHash = randomBytes(64);
      const wrongSize = randomBytes(64);
      const badZstd = Buffer.from('not zstd at all');
      const res = await unary(s.cas, s.cas.BatchUpdateBlobs, {
        requests: [
          { digest: digestOf(good), data: good },
          { digest: digestOf(other), data: wrongHash },
          { digest: { hash: digestOf(wrongSize).hash, size_bytes: 65 }, data: wrongSize },
          { digest: digestOf(Buffer.from('x'.repeat(100))), data: badZstd, compressor: 'ZSTD' },
        ],
      });
      const codes = res.responses.map((r) => r.status?.code);
      assert.deepEqual(codes, [0, status.INVALID_ARGUMENT, status.INVALID_ARGUMENT, status.INVALID_ARGUMENT]);
      assert.match(res.responses[1]!.status!.message, /hash/);
      assert.match(res.responses[2]!.status!.message, /65/);
      assert.deepEqual(await findMissing(s, [digestOf(good)]), []);
      assert.equal((await findMissing(s, [digestOf(other), digestOf(wrongSize)])).length, 2);
    });

    test('oversized batches are INVALID_ARGUMENT naming the limit', async () => {
      const max = s.config.storage.maxBatchTotalSizeBytes;
      const half = randomBytes(max / 2 + 1);
      const half2 = randomBytes(max / 2 + 1);
      await expectGrpcError(
        unary(s.cas, s.cas.BatchUpdateBlobs, {
          requests: [half, half2].map((data) => ({ digest: digestOf(data), data })),
        }),
        status.INVALID_ARGUMENT,
        new RegExp(`max_batch_total_size_bytes \\(${max}\\)`),
      );
      await expectGrpcError(
        unary(s.cas, s.cas.BatchReadBlobs, { digests: [digestOf(half), digestOf(half2)] }),
        status.INVALID_ARGUMENT,
        new RegExp(`max_batch_total_size_bytes \\(${max}\\)`),
      );
    });

    test('malformed digests are INVALID_ARGUMENT naming the field', async () => {
      const ok = digestOf(Buffer.from('ok'));
      await expectGrpcError(
        unary(s.cas, s.cas.FindMissingBlobs, { blob_digests: [ok, { hash: 'zz'.repeat(32), size_bytes: 2 }] }),
        status.INVALID_ARGUMENT,
        /blob_digests\[1\].*hash/,
      );
      await expectGrpcError(
        unary(s.cas, s.cas.FindMissingBlobs, { blob_digests: [{ hash: ok.hash, size_bytes: -5 }] }),
        status.INVALID_ARGUMENT,
        /blob_digests\[0\].*size_bytes -5/,
      );
      await expectGrpcError(
        unary(s.cas, s.cas.BatchReadBlobs, { digests: [{ hash: ok.hash.toUpperCase(), size_bytes: 2 }] }),
        status.INVALID_ARGUMENT,
        /digests\[0\]/,
      );
      const res = await unary(s.cas, s.cas.BatchUpdateBlobs, {
        requests: [{ digest: { hash: 'abc', size_bytes: 2 }, data: Buffer.from('ok') }],
      });
      assert.equal(res.responses[0]?.status?.code, status.INVALID_ARGUMENT);
      assert.match(res.responses[0]!.status!.message, /requests\[0\]\.digest/);
      await expectGrpcError(
        unary(s.actionCache, s.actionCache.GetActionResult, { action_digest: { hash: 'nothex', size_bytes: 1 } }),
        status.INVALID_ARGUMENT,
        /action_digest/,
      );
    });
  });

  describe('GetTree', () => {
    type Dir = MessageInput<'Directory'>;
    const file = (name: string) => ({ name, digest: digestOf(Buffer.from(name)), is_executable: false });
    const dirs: Dir[] = [];
    let root: Digest;

    before(async () => {
      const put = async (d: Dir): Promise<Digest> => {
        const bytes = encode('Directory', d);
        dirs.push(d);
        return (await batchUpdate(s, [bytes]))[0]!;
      };
      const leaf = await put({ files: [file('leaf.txt')] });
      const shared = await put({ files: [file('shared.txt')], directories: [{ name: 'leaf', digest: leaf }] });
      const a = await put({ files: [file('a.txt')], directories: [{ name: 's', digest: shared }] });
      const b = await put({ files: [file('b.txt')], directories: [{ name: 's2', digest: shared }] });
      root = await put({ directories: [{ name: 'a', digest: a }, { name: 'b', digest: b }] });
    });

    const key = (d: MessageOutput<'Directory'>) => digestOf(encode('Directory', d)).hash;

    test('page_size 2: several pages, every directory exactly once', async () => {
      const pages = await collect(s.cas.GetTree({ root_digest: root, page_size: 2 }));
      assert.ok(pages.length >= 3, `expected several pages, got ${pages.length}`);
      for (const p of pages) assert.ok(p.directories.length <= 2);
      assert.equal(pages.at(-1)?.next_page_token, '');
      for (const p of pages.slice(0, -1)) assert.notEqual(p.next_page_token, '');
      const got = pages.flatMap((p) => p.directories.map(key)).sort();
      const want = dirs.map((d) => digestOf(encode('Directory', d)).hash).sort();
      assert.equal(got.length, 5);
      assert.deepEqual(got, want);

      // A page token from the stream resumes the walk at that point.
      const token = pages[0]!.next_page_token;
      const rest = await collect(s.cas.GetTree({ root_digest: root, page_size: 2, page_token: token }));
      assert.deepEqual(
        rest.flatMap((p) => p.directories.map(key)),
        pages.slice(1).flatMap((p) => p.directories.map(key)),
      );
    });

    test('missing root is NOT_FOUND; bad page token is INVALID_ARGUMENT', async () => {
      await expectGrpcError(collect(s.cas.GetTree({ root_digest: digestOf(randomBytes(20)) })), status.NOT_FOUND, /not found/);
      await expectGrpcError(
        collect(s.cas.GetTree({ root_digest: root, page_token: 'garbage' })),
        status.INVALID_ARGUMENT,
        /page_token/,
      );
    });
  });

  describe('ByteStream', () => {
    const big = randomBytes(20 * MiB);
    const bigDigest = digestOf(big);

    test('write then read a 20 MiB blob in 16 KiB chunks', async () => {
      const res = await byteStreamWrite(s.byteStream, uploadName(bigDigest), big);
      assert.equal(res.committed_size, big.length);
      assert.deepEqual(await findMissing(s, [bigDigest]), []);
      const back = await byteStreamRead(s.byteStream, readResourceName('', bigDigest));
      assert.equal(back.length, big.length);
      assert.ok(back.equals(big));
    });

    test('read with offset and limit', async () => {
      const name = readResourceName('', bigDigest);
      const part = await byteStreamRead(s.byteStream, name, { offset: 5 * MiB + 3, limit: 1000 });
      assert.ok(part.equals(big.subarray(5 * MiB + 3, 5 * MiB + 1003)));
      const tail = await byteStreamRead(s.byteStream, name, { offset: big.length - 10 });
      assert.ok(tail.equals(big.subarray(big.length - 10)));
      const atEnd = await byteStreamRead(s.byteStream, name, { offset: big.length });
      assert.equal(atEnd.length, 0);
      const small = Buffer.from('0123456789');
      const [d] = await batchUpdate(s, [small]);
      assert.equal((await byteStreamRead(s.byteStream, readResourceName('', d!), { offset: 2, limit: 3 })).toString(), '234');
      await expectGrpcError(
        byteStreamRead(s.byteStream, name, { offset: big.length + 1 }),
        status.OUT_OF_RANGE,
        /past the end/,
      );
      await expectGrpcError(byteStreamRead(s.byteStream, name, { offset: -1 }), status.OUT_OF_RANGE, /negative/);
    });

    test('read of a missing blob is NOT_FOUND', async () => {
      await expectGrpcError(
        byteStreamRead(s.byteStream, readResourceName('', digestOf(randomBytes(30)))),
        status.NOT_FOUND,
        /not found/,
      );
    });

    test('malformed resource names and unknown compressors are INVALID_ARGUMENT', async () => {
      const h = bigDigest.hash;
      const badReads: Array<[string, RegExp]> = [
        ['', /resource name/],
        ['foo/bar', /resource name/],
        [`blobs/${h}`, /hash.*size/],
        [`blobs/${h}/abc`, /decimal size/],
        [`blobs/${h}/-3`, /decimal size/],
        [`blobs/${h.toUpperCase()}/3`, /hash .* is not 64 lowercase hex/],
        [`blobs/md5/${h}/3`, /digest function/],
        [`compressed-blobs/lz4/${h}/${bigDigest.size_bytes}`, /unsupported compressor "lz4"/],
      ];
      for (const [name, re] of badReads) {
        await expectGrpcError(byteStreamRead(s.byteStream, name), status.INVALID_ARGUMENT, re);
      }
      const data = Buffer.from('hello');
      const d = digestOf(data);
      const badWrites: Array<[string, RegExp]> = [
        ['', /must name the resource/],
        [`blobs/${d.hash}/${d.size_bytes}`, /uploads/],
        [`uploads//blobs/${d.hash}/${d.size_bytes}`, /uploads/],
        [`uploads/${randomUUID()}/blobs/${d.hash}`, /hash.*size/],
        [`uploads/${randomUUID()}/compressed-blobs/brotli/${d.hash}/${d.size_bytes}`, /unsupported compressor "brotli"/],
      ];
      for (const [name, re] of badWrites) {
        await expectGrpcError(byteStreamWrite(s.byteStream, name, data), status.INVALID_ARGUMENT, re);
      }
      await expectGrpcError(
        unary(s.byteStream, s.byteStream.QueryWriteStatus, { resource_name: 'nonsense' }),
        status.INVALID_ARGUMENT,
        /resource name/,
      );
      assert.deepEqual(await findMissing(s, [d]), [d]);
    });

    test('write with a wrong hash is INVALID_ARGUMENT and stores nothing', async () => {
      const data = randomBytes(2 * MiB);
      const claimed = { hash: digestOf(randomBytes(10)).hash, size_bytes: data.length };
      await expectGrpcError(byteStreamWrite(s.byteStream, uploadName(claimed), data), status.INVALID_ARGUMENT, /hash/);
      assert.deepEqual(await findMissing(s, [claimed, digestOf(data)]), [claimed, digestOf(data)]);
      assert.deepEqual(await filesUnder(join(s.dataDir, 'tmp')), []);
      assert.equal(await filesUnder(join(s.dataDir, 'cas')).then((f) => f.filter((p) => p.includes(claimed.hash)).length), 0);
    });

    test('write past the declared size is OUT_OF_RANGE', async () => {
      const data = randomBytes(100_000);
      const d = digestOf(data.subarray(0, 50_000));
      await expectGrpcError(byteStreamWrite(s.byteStream, uploadName(d), data), status.OUT_OF_RANGE, /past the declared size/);
      assert.deepEqual(await findMissing(s, [d]), [d]);
    });

    test('wrong write_offset is INVALID_ARGUMENT', async () => {
      const data = randomBytes(40_000);
      const d = digestOf(data);
      await expectGrpcError(
        byteStreamWrite(s.byteStream, uploadName(d), data, { offset: 7 }),
        status.INVALID_ARGUMENT,
        /write_offset 7/,
      );
      // A gap in the middle of a stream.
      const name = uploadName(d);
      const chunks = [data.subarray(0, 10_000), data.subarray(20_000)];
      await expectGrpcError(
        new Promise((resolve, reject) => {
          const call = s.byteStream.Write((err, res) => (err ? reject(err) : resolve(res)));
          call.write({ resource_name: name, write_offset: 0, data: chunks[0] });
          call.write({ write_offset: 20_000, data: chunks[1], finish_write: true });
          call.end();
        }),
        status.INVALID_ARGUMENT,
        /write_offset 20000 does not match the 10000 bytes/,
      );
      assert.deepEqual(await findMissing(s, [d]), [d]);
    });

    test('resumable upload: half, QueryWriteStatus, then the rest', async () => {
      const data = randomBytes(3 * MiB);
      const d = digestOf(data);
      const name = uploadName(d);
      const half = data.length / 2;
      await assert.rejects(byteStreamWrite(s.byteStream, name, data.subarray(0, half), { finish: false }));
      const st = await unary(s.byteStream, s.byteStream.QueryWriteStatus, { resource_name: name });
      assert.equal(st.committed_size, half);
      assert.equal(st.complete, false);
      assert.deepEqual(await findMissing(s, [d]), [d]);
      const res = await byteStreamWrite(s.byteStream, name, data.subarray(half), { offset: half });
      assert.equal(res.committed_size, data.length);
      assert.ok((await byteStreamRead(s.byteStream, readResourceName('', d))).equals(data));
      const after = await unary(s.byteStream, s.byteStream.QueryWriteStatus, { resource_name: name });
      assert.equal(after.complete, true);
      assert.equal(after.committed_size, data.length);
    });

    test('resumable upload after the client cancelled the stream mid-way', async () => {
      const data = randomBytes(2 * MiB);
      const d = digestOf(data);
      const name = uploadName(d);
      const first = 1 * MiB + 16 * 1024;
      const cancelled = new Promise<unknown>((resolve) => {
        const call = s.byteStream.Write((err) => resolve(err));
        for (let i = 0; i < first; i += 16 * 1024) {
          call.write({ resource_name: i === 0 ? name : '', write_offset: i, data: data.subarray(i, i + 16 * 1024) });
        }
        // Let the server take the data in, then drop the call as a broken connection would.
        let polls = 0;
        const poll = setInterval(() => {
          void unary(s.byteStream, s.byteStream.QueryWriteStatus, { resource_name: name }).then((st) => {
            if (st.committed_size === first || ++polls > 300) {
              clearInterval(poll);
              call.cancel();
            }
          });
        }, 10);
      });
      assert.equal((await cancelled as { code?: number }).code, status.CANCELLED);
      // The server notices the cancellation and releases the upload for resuming.
      let res: MessageOutput<'WriteResponse'> | undefined;
      for (let attempt = 0; attempt < 50 && !res; attempt++) {
        const st = await unary(s.byteStream, s.byteStream.QueryWriteStatus, { resource_name: name });
        assert.equal(st.committed_size, first);
        try {
          res = await byteStreamWrite(s.byteStream, name, data.subarray(first), { offset: first });
        } catch (err) {
          assert.equal((err as { code?: number }).code, status.ABORTED, String(err));
          await new Promise((r) => setTimeout(r, 20));
        }
      }
      assert.equal(res?.committed_size, data.length);
      assert.ok((await byteStreamRead(s.byteStream, readResourceName('', d))).equals(data));
    });

    test('a Read cancelled by the client releases its file', async () => {
      const fds = async () => (await readdir('/proc/self/fd')).length;
      const before = await fds();
      for (let i = 0; i < 5; i++) {
        const stream = s.byteStream.Read({ resource_name: readResourceName('', bigDigest) });
        await new Promise<void>((resolve) => {
          stream.once('data', () => {
            stream.cancel();
            resolve();
          });
        });
        stream.on('error', () => {});
      }
      let now = await fds();
      for (let i = 0; i < 100 && now > before; i++) {
        await new Promise((r) => setTimeout(r, 20));
        now = await fds();
      }
      assert.ok(now <= before, `${now - before} file descriptors still open after cancelled reads`);
    });

    test('write of an existing blob answers committed_size early', async () => {
      let sent = 0;
      const chunks = function* (): Generator<Buffer> {
        for (let i = 0; i < big.length; i += 16 * 1024) {
          sent += 16 * 1024;
          yield big.subarray(i, i + 16 * 1024);
        }
      };
      const res = await byteStreamWriteChunks(s.byteStream, uploadName(bigDigest), chunks());
      assert.equal(res.committed_size, big.length);
      assert.ok(sent < big.length, `the client should not have had to send the whole blob (${sent} bytes sent)`);
      const st = await unary(s.byteStream, s.byteStream.QueryWriteStatus, { resource_name: uploadName(bigDigest) });
      assert.deepEqual([st.committed_size, st.complete], [big.length, true]);
    });

    test('compressed-blobs/zstd write and read round trip', async () => {
      const data = Buffer.concat([Buffer.from('zstd round trip '.repeat(200_000)), randomBytes(500_000)]);
      const d = digestOf(data);
      const z = zstdCompress(data);
      const res = await byteStreamWrite(s.byteStream, writeResourceName('', randomUUID(), d, 'zstd'), z);
      assert.equal(res.committed_size, z.length);
      assert.deepEqual(await findMissing(s, [d]), []);
      const plain = await byteStreamRead(s.byteStream, readResourceName('', d));
      assert.ok(plain.equals(data));
      const compressed = await byteStreamRead(s.byteStream, readResourceName('', d, 'zstd'));
      assert.ok(compressed.length < data.length);
      assert.ok(zstdDecompressBounded(compressed, data.length).equals(data));
      // Existing blob written compressed again: committed_size -1.
      const again = await byteStreamWrite(s.byteStream, writeResourceName('', randomUUID(), d, 'zstd'), z);
      assert.equal(again.committed_size, -1);
      // Garbage that is not zstd.
      const other = randomBytes(1000);
      await expectGrpcError(
        byteStreamWrite(s.byteStream, writeResourceName('', randomUUID(), digestOf(other), 'zstd'), other),
        status.INVALID_ARGUMENT,
        /zstd/,
      );
    });

    test('200 MiB write and read stream with bounded memory', async () => {
      const total = 200 * MiB;
      const chunk = 256 * 1024;
      const base = randomBytes(chunk);
      const piece = (i: number): Buffer => {
        const b = Buffer.from(base);
        b.writeUInt32LE(i, 0);
        return b;
      };
      const hash = createHash('sha256');
      for (let i = 0; i < total / chunk; i++) hash.update(piece(i));
      const d: Digest = { hash: hash.digest('hex'), size_bytes: total };

      const baseline = process.memoryUsage().rss;
      let peak = baseline;
      const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 10);
      try {
        const gen = function* (): Generator<Buffer> {
          for (let i = 0; i < total / chunk; i++) yield piece(i);
        };
        const res = await byteStreamWriteChunks(s.byteStream, uploadName(d), gen());
        assert.equal(res.committed_size, total);
        const h = createHash('sha256');
        const n = await byteStreamReadEach(s.byteStream, readResourceName('', d), (data) => h.update(data));
        assert.equal(n, total);
        assert.equal(h.digest('hex'), d.hash);
      } finally {
        clearInterval(sampler);
      }
      peak = Math.max(peak, process.memoryUsage().rss);
      const growth = (peak - baseline) / MiB;
      assert.ok(growth < 150, `RSS grew by ${growth.toFixed(0)} MiB during a 200 MiB write+read`);
      await unlink(blobPath(s, d));
    });
  });

  describe('ActionCache', () => {
    const out = Buffer.from('output file contents');
    const other = Buffer.from('another output');
    const stdout = Buffer.from('stdout text\n');
    let entry: MessageInput<'ActionResult'>;
    const action = digestOf(randomBytes(40));

    before(async () => {
      await batchUpdate(s, [out, other, stdout]);
      entry = {
        output_files: [
          { path: 'out/x', digest: digestOf(out), is_executable: true },
          { path: 'out/y', digest: digestOf(other) },
        ],
        stdout_digest: digestOf(stdout),
        exit_code: 0,
      };
    });

    test('UpdateActionResult then GetActionResult, per instance name', async () => {
      const hitsBefore = await metricValue(s, 'reapi_action_cache_requests_total', { result: 'hit' });
      const missesBefore = await metricValue(s, 'reapi_action_cache_requests_total', { result: 'miss' });
      await unary(s.actionCache, s.actionCache.UpdateActionResult, { instance_name: 'a', action_digest: action, action_result: entry });
      const got = await unary(s.actionCache, s.actionCache.GetActionResult, { instance_name: 'a', action_digest: action });
      assert.deepEqual(got.output_files.map((f) => [f.path, f.digest?.hash, f.is_executable]), [
        ['out/x', digestOf(out).hash, true],
        ['out/y', digestOf(other).hash, false],
      ]);
      assert.equal(got.stdout_digest?.hash, digestOf(stdout).hash);
      assert.equal(got.stdout_raw.length, 0);
      assert.equal(got.output_files[0]!.contents.length, 0);
      await expectGrpcError(
        unary(s.actionCache, s.actionCache.GetActionResult, { instance_name: 'b', action_digest: action }),
        status.NOT_FOUND,
        /instance "b"/,
      );
      assert.equal(await metricValue(s, 'reapi_action_cache_requests_total', { result: 'hit' }), hitsBefore + 1);
      assert.equal(await metricValue(s, 'reapi_action_cache_requests_total', { result: 'miss' }), missesBefore + 1);
      assert.equal(await metricValue(s, 'reapi_action_cache_requests_total', { result: 'miss', instance: 'b' }), 1);
    });

    test('GetActionResult inlines stdout and requested output files', async () => {
      const got = await unary(s.actionCache, s.actionCache.GetActionResult, {
        instance_name: 'a',
        action_digest: action,
        inline_stdout: true,
        inline_output_files: ['out/x'],
      });
      assert.ok(got.stdout_raw.equals(stdout));
      assert.ok(got.output_files.find((f) => f.path === 'out/x')!.contents.equals(out));
      assert.equal(got.output_files.find((f) => f.path === 'out/y')!.contents.length, 0);
    });
  });

  describe('bad requests do not stop the server', () => {
    test('UpdateActionResult without a result, Write with no request, empty stream', async () => {
      await expectGrpcError(
        unary(s.actionCache, s.actionCache.UpdateActionResult, { action_digest: digestOf(Buffer.from('a')) }),
        status.INVALID_ARGUMENT,
        /action_result/,
      );
      await expectGrpcError(
        new Promise((resolve, reject) => {
          const call = s.byteStream.Write((err, res) => (err ? reject(err) : resolve(res)));
          call.end();
        }),
        status.INVALID_ARGUMENT,
        /no request/,
      );
    });

    test('good calls still work at the end', async () => {
      const caps = await unary(s.capabilities, s.capabilities.GetCapabilities, {});
      assert.deepEqual(caps.cache_capabilities?.digest_functions, ['SHA256', 'BLAKE3']);
      const data = randomBytes(5000);
      const d = digestOf(data);
      assert.equal((await byteStreamWrite(s.byteStream, uploadName(d), data)).committed_size, 5000);
      assert.ok((await byteStreamRead(s.byteStream, readResourceName('', d))).equals(data));
      assert.deepEqual(await findMissing(s, [d]), []);
      const res = await fetch(`${s.httpUrl}/healthz`);
      assert.equal(res.status, 200);
    });
  });
});

describe('ActionCache with clientWrites deny', () => {
  let s: TestStorage;
  before(async () => {
    s = await startTestStorage({ actionCache: { clientWrites: 'deny' } });
  });
  after(async () => {
    await s?.stop();
  });

  test('Capabilities says so and UpdateActionResult is PERMISSION_DENIED', async () => {
    const caps = await unary(s.capabilities, s.capabilities.GetCapabilities, {});
    assert.equal(caps.cache_capabilities?.action_cache_update_capabilities?.update_enabled, false);
    const d = digestOf(Buffer.from('action'));
    await expectGrpcError(
      unary(s.actionCache, s.actionCache.UpdateActionResult, { action_digest: d, action_result: { exit_code: 0 } }),
      status.PERMISSION_DENIED,
      /clientWrites/,
    );
    await expectGrpcError(unary(s.actionCache, s.actionCache.GetActionResult, { action_digest: d }), status.NOT_FOUND);
  });
});

describe('persistence across restarts', () => {
  let dir: string;
  const running: TestStorage[] = [];
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reapi-persist-'));
  });
  after(async () => {
    for (const s of running) await s.stop();
    await rm(dir, { recursive: true, force: true });
  });
  const start = async () => {
    const s = await startTestStorage({ dataDir: dir });
    running.push(s);
    return s;
  };

  test('blobs and AC entries survive; an entry whose blob is gone is a miss', async () => {
    const small = randomBytes(300);
    const large = randomBytes(6 * MiB);
    const gone = Buffer.from('this output will be deleted');
    const actionKept = digestOf(Buffer.from('kept action'));
    const actionGone = digestOf(Buffer.from('gone action'));

    const s1 = await start();
    await batchUpdate(s1, [small, gone]);
    await byteStreamWrite(s1.byteStream, uploadName(digestOf(large)), large);
    await unary(s1.actionCache, s1.actionCache.UpdateActionResult, {
      instance_name: 'main',
      action_digest: actionKept,
      action_result: { output_files: [{ path: 'o', digest: digestOf(small) }], exit_code: 0 },
    });
    await unary(s1.actionCache, s1.actionCache.UpdateActionResult, {
      instance_name: 'main',
      action_digest: actionGone,
      action_result: { output_files: [{ path: 'o', digest: digestOf(gone) }], exit_code: 0 },
    });
    await unary(s1.actionCache, s1.actionCache.GetActionResult, { instance_name: 'main', action_digest: actionGone });
    await s1.stop();

    await unlink(blobPath(s1, digestOf(gone)));

    const s2 = await start();
    assert.deepEqual(await findMissing(s2, [digestOf(small), digestOf(large)]), []);
    assert.deepEqual(await findMissing(s2, [digestOf(gone)]), [digestOf(gone)]);
    assert.ok((await byteStreamRead(s2.byteStream, readResourceName('', digestOf(large)))).equals(large));
    const kept = await unary(s2.actionCache, s2.actionCache.GetActionResult, {
      instance_name: 'main',
      action_digest: actionKept,
      inline_output_files: ['o'],
    });
    assert.ok(kept.output_files[0]?.contents.equals(small));
    await expectGrpcError(
      unary(s2.actionCache, s2.actionCache.GetActionResult, { instance_name: 'main', action_digest: actionGone }),
      status.NOT_FOUND,
    );
    assert.equal(await metricValue(s2, 'reapi_action_cache_requests_total', { result: 'hit' }), 1);
    assert.equal(await metricValue(s2, 'reapi_action_cache_requests_total', { result: 'miss' }), 1);
    await s2.stop();
  });
});

describe('disk full', () => {
  test('a ByteStream write that fills the disk is RESOURCE_EXHAUSTED and leaves no file', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'reapi-full-'));
    let mounted = false;
    try {
      try {
        execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', dir], { stdio: 'pipe' });
        mounted = true;
      } catch (err) {
        t.skip(`cannot mount a tmpfs (${(err as Error).message.split('\n')[0]})`);
        return;
      }
      const s = await startTestStorage({ dataDir: dir });
      try {
        const data = randomBytes(3 * MiB);
        const d = digestOf(data);
        await expectGrpcError(byteStreamWrite(s.byteStream, uploadName(d), data), status.RESOURCE_EXHAUSTED, /full/);
        assert.deepEqual(await filesUnder(join(dir, 'tmp')), []);
        assert.deepEqual(await filesUnder(join(dir, 'cas')), []);
        assert.deepEqual(await findMissing(s, [d]), [d]);
        // Still serving, and a blob that fits is stored.
        const fits = randomBytes(100_000);
        assert.equal((await byteStreamWrite(s.byteStream, uploadName(digestOf(fits)), fits)).committed_size, fits.length);
      } finally {
        await s.stop();
      }
    } finally {
      if (mounted) execFileSync('umount', [dir]);
      await rm(dir, { recursive: true, force: true });
    }
  });
});
