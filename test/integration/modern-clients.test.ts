// Modern clients over real gRPC against `reapi serve` and a storage node: the request shapes of
// Bazel 7/8 (digest_function on every request, BLAKE3, ByteStream names with the function) and
// of Buck2 (no digest_function anywhere, an instance whose default is BLAKE3, platform only on
// Command.platform, no PATH, output_paths, committed_size answers, zstd), Build without the
// Bytes leases under eviction pressure, and SplitBlob / SpliceBlob.
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { status } from '@grpc/grpc-js';
import { digestOf, type Digest } from '../../common/digest.ts';
import { BLAKE3, SHA256, type DigestFunction } from '../../common/digest-function.ts';
import { readResourceName, writeResourceName } from '../../common/resource-name.ts';
import { zstdCompress } from '../../common/zstd.ts';
import { decode, unpackAny, type MessageInput } from '../../protos/index.ts';
import { byteStreamRead, byteStreamWrite, expectGrpcError, startTestStorage, unary, type TestStorage } from '../support/storage.ts';
import { connectExec, execute, outputFile, outputTree, run, stdoutOf, type ExecClients } from '../support/execution.ts';
import { startTestServe, type TestServe } from '../support/serve.ts';
import { sandboxSkip } from '../support/sandbox.ts';
import { redisSkip } from '../support/redis.ts';
import { startFleet, type Fleet } from '../support/fleet.ts';

const KiB = 1024;
const MiB = 1024 * KiB;

type CasClients = Pick<ExecClients, 'cas' | 'byteStream' | 'actionCache'>;

async function batchUpload(c: CasClients, blobs: Buffer[], fn: DigestFunction, field: string = fn.name, instance = ''): Promise<Digest[]> {
  const digests = blobs.map((b) => fn.digestOf(b));
  const res = await unary(c.cas, c.cas.BatchUpdateBlobs, {
    instance_name: instance,
    requests: blobs.map((data, i) => ({ digest: digests[i]!, data })),
    digest_function: field as 'SHA256',
  });
  for (const r of res.responses) assert.equal(r.status?.code, 0, r.status?.message);
  return digests;
}

async function missing(c: CasClients, digests: Digest[], field: string, instance = ''): Promise<string[]> {
  const res = await unary(c.cas, c.cas.FindMissingBlobs, { instance_name: instance, blob_digests: digests, digest_function: field as 'SHA256' });
  return res.missing_blob_digests.map((d) => d.hash);
}

describe('Bazel 7/8 request shapes: digest_function on every request, BLAKE3', { skip: sandboxSkip }, () => {
  let s: TestServe;
  let b3: ExecClients;
  before(async () => {
    s = await startTestServe({}, { name: 'modern-bazel' });
    b3 = connectExec(`127.0.0.1:${s.server.grpcPort}`, 'main', undefined, { digestFunction: BLAKE3 });
  });
  after(async () => {
    b3?.close();
    await s?.close();
  });

  test('Capabilities: SHA256 and BLAKE3, API 2.0 to 2.11, split and splice', async () => {
    const caps = await unary(s.c.capabilities, s.c.capabilities.GetCapabilities, { instance_name: 'main' });
    assert.deepEqual(caps.cache_capabilities?.digest_functions, ['SHA256', 'BLAKE3']);
    assert.deepEqual(caps.execution_capabilities?.digest_functions, ['SHA256', 'BLAKE3']);
    assert.equal(caps.execution_capabilities?.digest_function, 'SHA256');
    assert.deepEqual([caps.high_api_version?.major, caps.high_api_version?.minor], [2, 11]);
    assert.equal(caps.cache_capabilities?.split_blob_support, true);
    assert.equal(caps.cache_capabilities?.splice_blob_support, true);
  });

  test('BLAKE3 blobs: batch and ByteStream (plain and zstd) round trips, never mixed with SHA-256', async () => {
    const small = randomBytes(3000);
    const [d] = await batchUpload(b3, [small], BLAKE3);
    assert.deepEqual(await missing(b3, [d!], 'BLAKE3'), []);
    // The same 64 hex characters under SHA-256 name another blob: not present.
    assert.deepEqual(await missing(b3, [d!], 'SHA256'), [d!.hash]);
    const read = await unary(b3.cas, b3.cas.BatchReadBlobs, { instance_name: '', digests: [d!], digest_function: 'BLAKE3' });
    assert.ok(read.responses[0]!.data.equals(small));

    const big = randomBytes(3 * MiB);
    const bd = BLAKE3.digestOf(big);
    const w = await byteStreamWrite(b3.byteStream, writeResourceName('main', randomUUID(), bd, 'identity', BLAKE3), big);
    assert.equal(w.committed_size, big.length);
    assert.match(readResourceName('main', bd, 'identity', BLAKE3), /\/blobs\/blake3\//);
    assert.ok((await byteStreamRead(b3.byteStream, readResourceName('main', bd, 'identity', BLAKE3))).equals(big));
    const zd = BLAKE3.digestOf(Buffer.alloc(MiB, 7));
    const zw = await byteStreamWrite(b3.byteStream, writeResourceName('main', randomUUID(), zd, 'zstd', BLAKE3), zstdCompress(Buffer.alloc(MiB, 7)));
    assert.ok(zw.committed_size > 0);
    const back = await byteStreamRead(b3.byteStream, readResourceName('main', zd, 'identity', BLAKE3));
    assert.ok(back.equals(Buffer.alloc(MiB, 7)));
    // Not readable as SHA-256 (no segment, the instance's default).
    await expectGrpcError(byteStreamRead(b3.byteStream, readResourceName('main', bd)), status.NOT_FOUND);
  });

  test('content that does not hash to its BLAKE3 digest, and unknown functions, are refused', async () => {
    const data = randomBytes(500);
    const wrong = SHA256.digestOf(data); // the SHA-256 digest presented as BLAKE3
    await expectGrpcError(byteStreamWrite(b3.byteStream, writeResourceName('main', randomUUID(), wrong, 'identity', BLAKE3), data), status.INVALID_ARGUMENT, /hashes to/);
    const res = await unary(b3.cas, b3.cas.BatchUpdateBlobs, { instance_name: 'main', requests: [{ digest: wrong, data }], digest_function: 'BLAKE3' });
    assert.equal(res.responses[0]!.status?.code, status.INVALID_ARGUMENT);
    await expectGrpcError(byteStreamRead(b3.byteStream, `main/blobs/md5/${'0'.repeat(64)}/1`), status.INVALID_ARGUMENT, /unsupported digest function "md5"/);
    await expectGrpcError(missing(b3, [wrong], 'SHA384'), status.INVALID_ARGUMENT, /SHA384 is not supported/);
    // The empty blob is the BLAKE3 one under BLAKE3.
    await expectGrpcError(missing(b3, [SHA256.emptyDigest], 'BLAKE3'), status.INVALID_ARGUMENT, /not the BLAKE3 hash of the empty blob/);
    assert.deepEqual(await missing(b3, [BLAKE3.emptyDigest], 'BLAKE3'), []);
  });

  test('ActionCache round trip under BLAKE3; the same key under SHA-256 is another entry', async () => {
    const action = BLAKE3.digestOf(randomBytes(64));
    const [out] = await batchUpload(b3, [Buffer.from('cached output')], BLAKE3, 'BLAKE3', 'main');
    const result: MessageInput<'ActionResult'> = { exit_code: 0, output_files: [{ path: 'o', digest: out! }] };
    await unary(b3.actionCache, b3.actionCache.UpdateActionResult, { instance_name: 'main', action_digest: action, action_result: result, digest_function: 'BLAKE3' });
    const hit = await unary(b3.actionCache, b3.actionCache.GetActionResult, { instance_name: 'main', action_digest: action, digest_function: 'BLAKE3' });
    assert.equal(hit.output_files[0]?.digest?.hash, out!.hash);
    await expectGrpcError(
      unary(b3.actionCache, b3.actionCache.GetActionResult, { instance_name: 'main', action_digest: action, digest_function: 'SHA256' }),
      status.NOT_FOUND,
    );
  });

  test('remote execution under BLAKE3: outputs hashed with BLAKE3, the second Execute is a cache hit', async () => {
    const spec = {
      sh: 'mkdir -p out/d && printf hello > out/f && printf deep > out/d/x && cat in.txt',
      inputs: { 'in.txt': 'input text' },
      outputFiles: ['out/f'],
      outputDirectories: ['out/d'],
      salt: `blake3-${randomUUID()}`,
    };
    const first = await run(b3, spec);
    assert.equal(await stdoutOf(b3, first.result), 'input text');
    const f = first.result.output_files.find((o) => o.path === 'out/f')!;
    assert.equal(f.digest?.hash, BLAKE3.hash(Buffer.from('hello')));
    assert.equal((await outputFile(b3, first.result, 'out/f'))?.data.toString(), 'hello');
    const tree = await outputTree(b3, first.result, 'out/d');
    assert.equal((tree?.get('x') as { data: Buffer }).data.toString(), 'deep');
    const treeDigest = first.result.output_directories[0]!.tree_digest!;
    const treeBytes = await byteStreamRead(b3.byteStream, readResourceName('main', { hash: treeDigest.hash, size_bytes: Number(treeDigest.size_bytes) }, 'identity', BLAKE3));
    assert.equal(BLAKE3.hash(treeBytes), treeDigest.hash);
    assert.equal(decode('Tree', treeBytes).root?.files[0]?.digest?.hash, BLAKE3.hash(Buffer.from('deep')));
    const meta = unpackAny(first.operations.at(-1)!.metadata!, 'ExecuteOperationMetadata');
    assert.equal(meta.digest_function, 'BLAKE3');

    const again = await execute(b3, first.action.actionDigest);
    assert.equal(again.response.cached_result, true);
    // The SHA-256 client's action for the same command is another action: executed, not a hit.
    const sha = await run(s.c, spec);
    assert.notEqual(sha.action.actionDigest.hash, first.action.actionDigest.hash);
    assert.equal(sha.response.cached_result, false);
    assert.equal(sha.result.output_files.find((o) => o.path === 'out/f')?.digest?.hash, SHA256.hash(Buffer.from('hello')));
  });
});

describe('BLAKE3 through a fleet: scheduler, storage node and workers over Redis', { skip: sandboxSkip || redisSkip }, () => {
  let fleet: Fleet;
  let b3: ExecClients;
  before(async () => {
    fleet = await startFleet({ name: 'modern-fleet', workers: 1 });
    b3 = connectExec(`127.0.0.1:${fleet.scheduler.grpcPort}`, '', undefined, { digestFunction: BLAKE3 });
  });
  after(async () => {
    b3?.close();
    await fleet?.stop();
  });

  test('the worker fetches BLAKE3 inputs from the storage node and stores BLAKE3 outputs and the entry there', async () => {
    const spec = { sh: 'cat in.txt in.txt > out.txt', inputs: { 'in.txt': 'fleet ' }, outputFiles: ['out.txt'], salt: `fleet-${randomUUID()}` };
    const first = await run(b3, spec);
    const out = first.result.output_files[0]!;
    assert.equal(out.digest?.hash, BLAKE3.hash(Buffer.from('fleet fleet ')));
    assert.equal((await outputFile(b3, first.result, 'out.txt'))?.data.toString(), 'fleet fleet ');
    // The entry is on the storage node, under BLAKE3 only.
    const node = connectExec(`127.0.0.1:${fleet.cas.grpcPort}`, '', undefined, { digestFunction: BLAKE3 });
    try {
      assert.deepEqual(await missing(node, [{ hash: out.digest!.hash, size_bytes: Number(out.digest!.size_bytes) }], 'BLAKE3'), []);
    } finally {
      node.close();
    }
    const again = await execute(b3, first.action.actionDigest);
    assert.equal(again.response.cached_result, true);
  });
});

describe('Buck2 request shapes: no digest_function, an instance whose default is BLAKE3', { skip: sandboxSkip }, () => {
  let s: TestServe;
  let buck: ExecClients;
  before(async () => {
    s = await startTestServe({ storage: { instanceDigestFunctions: { buck: 'BLAKE3' } } }, { name: 'modern-buck2', instance: 'buck' });
    // Hashes with BLAKE3 but never says so: no field, no resource name segment (Buck2).
    buck = connectExec(`127.0.0.1:${s.server.grpcPort}`, 'buck', undefined, { digestFunction: BLAKE3, sendDigestFunction: false });
  });
  after(async () => {
    buck?.close();
    await s?.close();
  });

  test("Capabilities name the instance's default first", async () => {
    const caps = await unary(buck.capabilities, buck.capabilities.GetCapabilities, { instance_name: 'buck' });
    assert.equal(caps.execution_capabilities?.digest_function, 'BLAKE3');
    assert.deepEqual(caps.cache_capabilities?.digest_functions, ['BLAKE3', 'SHA256']);
    const other = await unary(buck.capabilities, buck.capabilities.GetCapabilities, { instance_name: 'main' });
    assert.equal(other.execution_capabilities?.digest_function, 'SHA256');
  });

  test('an action with platform only on Command.platform, no PATH, output_paths: executed, then a hit', async () => {
    const spec = {
      argv: ['sh', '-c', 'mkdir -p gen && echo "PATH=$PATH" > gen/path.txt && cp src.txt gen/copy.txt'],
      inputs: { 'src.txt': 'from buck' },
      outputPaths: ['gen'],
      platform: { OSFamily: 'Linux' },
      salt: `buck-${randomUUID()}`,
    };
    const first = await run(buck, spec);
    assert.equal(first.response.status?.code ?? 0, 0);
    const gen = await outputTree(buck, first.result, 'gen');
    assert.ok(gen, `output_paths "gen" came back as a directory: ${JSON.stringify(first.result.output_directories.map((d) => d.path))}`);
    assert.equal((gen.get('copy.txt') as { data: Buffer }).data.toString(), 'from buck');
    // The documented default PATH of actions that set none.
    assert.match((gen.get('path.txt') as { data: Buffer }).data.toString(), /^PATH=\/usr\/bin:\/bin/);
    assert.equal(first.result.output_directories[0]!.tree_digest?.hash.length, 64);
    const again = await execute(buck, first.action.actionDigest);
    assert.equal(again.response.cached_result, true);
  });

  test('ByteStream without a function segment is BLAKE3 on this instance; committed_size answers', async () => {
    const data = randomBytes(200 * KiB);
    const d = BLAKE3.digestOf(data);
    const name = () => writeResourceName('buck', randomUUID(), d);
    assert.equal((await byteStreamWrite(buck.byteStream, name(), data)).committed_size, data.length);
    // Writing it again: the server answers at once with the full size.
    assert.equal((await byteStreamWrite(buck.byteStream, name(), data)).committed_size, data.length);
    // Compressed: -1 when the blob is already there (REAPI's rule for compressed uploads).
    const again = await byteStreamWrite(buck.byteStream, writeResourceName('buck', randomUUID(), d, 'zstd'), zstdCompress(data));
    assert.equal(Number(again.committed_size), -1);
    assert.ok((await byteStreamRead(buck.byteStream, readResourceName('buck', d, 'zstd'))).length > 0);
    const status1 = await unary(buck.byteStream, buck.byteStream.QueryWriteStatus, { resource_name: name() });
    assert.equal(Number(status1.committed_size), data.length);
    assert.equal(status1.complete, true);
    // The default instance is still SHA-256: the same name there is refused as content mismatch.
    await expectGrpcError(byteStreamWrite(buck.byteStream, writeResourceName('main', randomUUID(), d), data), status.INVALID_ARGUMENT, /hashes to/);
  });

  test('batch calls over max_batch_total_size_bytes are refused with the limit named', async () => {
    const limit = s.config.storage.maxBatchTotalSizeBytes;
    const blobs = [randomBytes(limit / 2 + 1), randomBytes(limit / 2 + 1)];
    await expectGrpcError(
      unary(buck.cas, buck.cas.BatchUpdateBlobs, { instance_name: 'buck', requests: blobs.map((data) => ({ digest: BLAKE3.digestOf(data), data })) }),
      status.INVALID_ARGUMENT,
      new RegExp(`max_batch_total_size_bytes \\(${limit}\\)`),
    );
  });
});

describe('Build without the Bytes: leases under eviction pressure', () => {
  let stores: TestStorage[] = [];
  after(async () => {
    for (const s of stores) await s.stop();
  });
  const start = async (leaseSeconds: number) => {
    const s = await startTestStorage({ storage: { maxBytes: 64 * KiB, leaseSeconds } });
    stores.push(s);
    return s;
  };
  /** Three 20 KiB outputs and an entry naming them. */
  const cacheEntry = async (s: TestStorage) => {
    const outputs = await batchUpload(s, [randomBytes(20 * KiB), randomBytes(20 * KiB), randomBytes(20 * KiB)], SHA256);
    const action = digestOf(randomBytes(32));
    await unary(s.actionCache, s.actionCache.UpdateActionResult, {
      action_digest: action,
      action_result: { output_files: outputs.map((digest, i) => ({ path: `o${i}`, digest })) },
    });
    return { outputs, action };
  };
  const hit = (s: TestStorage, action: Digest) => unary(s.actionCache, s.actionCache.GetActionResult, { action_digest: action });

  test('without leases, pressure evicts the outputs and the entry becomes a miss', async () => {
    const s = await start(0);
    const { action } = await cacheEntry(s);
    await batchUpload(s, [randomBytes(20 * KiB), randomBytes(20 * KiB)], SHA256);
    await sleep(50);
    await expectGrpcError(hit(s, action), status.NOT_FOUND);
  });

  test('with leases, leased blobs are never evicted: writes past the cap are refused instead', async () => {
    const s = await start(3600);
    const { outputs, action } = await cacheEntry(s);
    await batchUpload(s, [randomBytes(20 * KiB)], SHA256); // 80 KiB: over the cap, nothing evictable
    await sleep(50);
    const refused = await unary(s.cas, s.cas.BatchUpdateBlobs, { requests: [{ digest: digestOf(Buffer.alloc(KiB, 1)), data: Buffer.alloc(KiB, 1) }] });
    assert.equal(refused.responses[0]!.status?.code, status.RESOURCE_EXHAUSTED);
    assert.match(refused.responses[0]!.status!.message, /leased to clients .*leaseSeconds/);
    assert.deepEqual(await missing(s, outputs, 'SHA256'), []);
    assert.equal((await hit(s, action)).output_files.length, 3);
  });

  test('an ActionCache hit renews the lease of its outputs; unreferenced blobs expire and go first', async () => {
    const s = await start(2);
    const { outputs, action } = await cacheEntry(s);
    const [loose] = await batchUpload(s, [randomBytes(2 * KiB)], SHA256);
    await sleep(1200);
    await hit(s, action); // renews the three outputs, not `loose`
    await sleep(1000); // `loose` is past its lease now, the outputs are not
    // 2 KiB over the cap: the oldest unleased blob goes, not the outputs.
    await batchUpload(s, [randomBytes(6 * KiB)], SHA256);
    await sleep(50);
    assert.deepEqual(await missing(s, outputs, 'SHA256'), []);
    assert.deepEqual(await missing(s, [loose!], 'SHA256'), [loose!.hash]);
  });
});

describe('SplitBlob and SpliceBlob', () => {
  let s: TestStorage;
  before(async () => {
    s = await startTestStorage();
  });
  after(async () => {
    await s?.stop();
  });

  const upload = async (data: Buffer, fn: DigestFunction = SHA256): Promise<Digest> => {
    const d = fn.digestOf(data);
    await byteStreamWrite(s.byteStream, writeResourceName('', randomUUID(), d, 'identity', fn), data);
    return d;
  };
  const split = async (d: Digest, fn: DigestFunction = SHA256): Promise<Digest[]> =>
    (await unary(s.cas, s.cas.SplitBlob, { blob_digest: d, digest_function: fn.name })).chunk_digests.map((c) => ({ hash: c.hash, size_bytes: Number(c.size_bytes) }));
  const readAll = async (chunks: Digest[], fn: DigestFunction = SHA256) =>
    Buffer.concat(await Promise.all(chunks.map((c) => byteStreamRead(s.byteStream, readResourceName('', c, 'identity', fn)))));

  test('a large blob splits into content-defined chunks that concatenate to it; an edit keeps most chunks', async () => {
    const data = randomBytes(6 * MiB);
    const chunks = await split(await upload(data));
    assert.ok(chunks.length >= 4, `${chunks.length} chunks`);
    assert.ok((await readAll(chunks)).equals(data));
    for (const c of chunks.slice(0, -1)) assert.ok(c.size_bytes >= 128 * KiB && c.size_bytes <= 2 * MiB, `chunk of ${c.size_bytes} bytes`);
    const edited = Buffer.concat([data.subarray(0, 3 * MiB), Buffer.from('an edit in the middle'), data.subarray(3 * MiB)]);
    const after = await split(await upload(edited));
    const before = new Set(chunks.map((c) => c.hash));
    const shared = after.filter((c) => before.has(c.hash)).length;
    assert.ok(shared >= after.length - 2, `${shared} of ${after.length} chunks shared after a small edit`);
  });

  test('SpliceBlob assembles uploaded chunks, checks the result, and SplitBlob then returns those chunks', async () => {
    for (const fn of [SHA256, BLAKE3]) {
      const parts = [randomBytes(300 * KiB), randomBytes(10 * KiB), randomBytes(700 * KiB)];
      const chunks = await Promise.all(parts.map((p) => upload(p, fn)));
      const whole = fn.digestOf(Buffer.concat(parts));
      const res = await unary(s.cas, s.cas.SpliceBlob, { blob_digest: whole, chunk_digests: chunks, digest_function: fn.name });
      assert.equal(res.blob_digest?.hash, whole.hash);
      assert.ok((await byteStreamRead(s.byteStream, readResourceName('', whole, 'identity', fn))).equals(Buffer.concat(parts)));
      assert.deepEqual(await split(whole, fn), chunks);
    }
  });

  test('bad splices are refused: wrong digest, wrong total size, missing chunks', async () => {
    const parts = [randomBytes(1000), randomBytes(2000)];
    const chunks = await Promise.all(parts.map((p) => upload(p)));
    const other = digestOf(randomBytes(3000));
    await expectGrpcError(unary(s.cas, s.cas.SpliceBlob, { blob_digest: other, chunk_digests: chunks }), status.INVALID_ARGUMENT, /hashes to/);
    await expectGrpcError(
      unary(s.cas, s.cas.SpliceBlob, { blob_digest: digestOf(randomBytes(10)), chunk_digests: chunks }),
      status.INVALID_ARGUMENT,
      /hold 3000 bytes but blob_digest says 10/,
    );
    const absent = digestOf(randomBytes(500));
    const err = await expectGrpcError(
      unary(s.cas, s.cas.SpliceBlob, { blob_digest: digestOf(Buffer.concat([parts[0]!, Buffer.alloc(500)])), chunk_digests: [chunks[0]!, absent] }),
      status.FAILED_PRECONDITION,
      /missing/,
    );
    assert.match(err.details, new RegExp(absent.hash));
    await expectGrpcError(unary(s.cas, s.cas.SplitBlob, { blob_digest: absent }), status.FAILED_PRECONDITION, /missing/);
  });
});
