// RemoteBlobStore, RemoteActionCache and ShardingBlobStore against real storage nodes over gRPC.
import { strict as assert } from 'node:assert';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import { putBlob, readBlob, readStream } from '../../cas/blob-io.ts';
import { connectStorage, parseStorageAddress, type StorageClients } from '../../cas/grpc-clients.ts';
import { RemoteActionCache } from '../../cas/remote-action-cache.ts';
import { RemoteBlobStore } from '../../cas/remote-blob-store.ts';
import { ShardingBlobStore } from '../../cas/sharding-blob-store.ts';
import { startStorageNode, type StorageNode } from '../../cas/storage-node.ts';
import { createStorage } from '../../cas/storage-factory.ts';
import { Metrics } from '../../common/metrics.ts';
import { TEST_FLEET_TOKEN } from '../support/reapi-process.ts';
import { freePort } from '../support/net.ts';
import { parseConfig } from '../../common/config.ts';
import { digestOf, EMPTY_DIGEST, type Digest } from '../../common/digest.ts';
import { ReapiError } from '../../common/errors.ts';
import { silentLogger } from '../../common/logger.ts';

interface Node {
  node: StorageNode;
  dataDir: string;
  address: string;
  clients: StorageClients;
  /** Stop the node (the clients stay open). */
  stop(): Promise<void>;
}

const cleanups: Array<() => Promise<void>> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function startNode(): Promise<Node> {
  const dataDir = await mkdtemp(join(tmpdir(), 'reapi-remote-store-'));
  const config = parseConfig({ port: 0, httpPort: 0, listen: '127.0.0.1', dataDir, logLevel: 'silent', fleetToken: TEST_FLEET_TOKEN });
  const node = await startStorageNode(config, silentLogger);
  const address = `127.0.0.1:${node.grpcPort}`;
  const clients = connectStorage(address, { fleetToken: TEST_FLEET_TOKEN });
  let stopped: Promise<void> | undefined;
  const stop = () => (stopped ??= node.close());
  cleanups.push(async () => {
    clients.close();
    await stop();
    await rm(dataDir, { recursive: true, force: true });
  });
  return { node, dataDir, address, clients, stop };
}

async function rejectsWith(p: Promise<unknown>, code: status, pattern?: RegExp): Promise<ReapiError> {
  let caught: ReapiError | undefined;
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof ReapiError, `expected ReapiError, got ${String(err)}`);
    assert.equal(err.code, code, `expected ${status[code]}, got ${status[err.code]}: ${err.message}`);
    if (pattern) assert.match(err.message, pattern);
    caught = err;
    return true;
  });
  return caught!;
}

const onDisk = (n: Node, d: Digest) => existsSync(join(n.dataDir, 'cas', d.hash.slice(0, 2), `${d.hash}-${d.size_bytes}`));
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const MiB = 1024 * 1024;

/** Feed `data` to a writer in uneven pieces, as a proxying service would. */
async function putInPieces(store: RemoteBlobStore | ShardingBlobStore, data: Buffer, piece = 300_001): Promise<Digest> {
  const d = digestOf(data);
  const w = await store.write(d);
  if (w.alreadyExists) return d;
  for (let i = 0; i < data.length; i += piece) await w.append(data.subarray(i, i + piece));
  await w.commit();
  return d;
}

describe('connectStorage', () => {
  it('accepts host:port and grpc://host:port, refuses the rest', () => {
    assert.deepEqual(parseStorageAddress('cas-1:8980'), { target: 'cas-1:8980', tls: false });
    assert.deepEqual(parseStorageAddress('grpc://10.0.0.5:9000'), { target: '10.0.0.5:9000', tls: false });
    assert.deepEqual(parseStorageAddress('grpcs://cas.example.com:443'), { target: 'cas.example.com:443', tls: true });
    assert.deepEqual(parseStorageAddress('[::1]:8980'), { target: '[::1]:8980', tls: false });
    for (const bad of ['cas-1', 'http://cas:80', 'cas:0', 'cas:99999', ':8980', 'a b:1']) {
      assert.throws(() => parseStorageAddress(bad), /is not HOST:PORT, grpc:\/\/HOST:PORT or grpcs:\/\/HOST:PORT/, bad);
    }
  });
});

describe('RemoteBlobStore and RemoteActionCache on a storage node', () => {
  let n: Node;
  let store: RemoteBlobStore;

  before(async () => {
    n = await startNode();
    store = new RemoteBlobStore(n.clients);
    await n.clients.waitReady();
  });

  it('round-trips a small blob (BatchUpdateBlobs) and the empty blob', async () => {
    const data = Buffer.from('hello, remote content-addressed world');
    const d = digestOf(data);
    assert.deepEqual(await store.findMissing([d, EMPTY_DIGEST]), [d]);
    await putBlob(store, data);
    assert.deepEqual(await store.findMissing([d, EMPTY_DIGEST]), []);
    assert.ok(onDisk(n, d));
    assert.deepEqual(await readBlob(store, d), data);
    assert.equal((await readStream(await store.read(d, 7, 6))).toString(), 'remote');
    assert.equal((await readStream(await store.read(d, 7))).toString(), 'remote content-addressed world');
    assert.equal((await readStream(await store.read(d, data.length))).length, 0);
    assert.equal((await readBlob(store, EMPTY_DIGEST)).length, 0);
    const w = await store.write(EMPTY_DIGEST);
    assert.equal(w.alreadyExists, true);
  });

  it('round-trips a 30 MiB blob over ByteStream, with offset/limit reads', async (t) => {
    const data = randomBytes(30 * MiB);
    const d = digestOf(data);
    let t0 = performance.now();
    await putInPieces(store, data);
    const writeMs = performance.now() - t0;
    assert.ok(onDisk(n, d));
    t0 = performance.now();
    const back = await readBlob(store, d);
    const readMs = performance.now() - t0;
    assert.equal(back.length, data.length);
    assert.equal(sha(back), d.hash);
    t.diagnostic(`30 MiB: write ${writeMs.toFixed(0)} ms, read ${readMs.toFixed(0)} ms`);
    // Ranges across the node's 1 MiB read chunks, and to the end.
    for (const [offset, limit] of [[0, 10], [MiB - 5, 10], [3 * MiB + 17, 5 * MiB], [30 * MiB - 100, 0], [12345, 0], [30 * MiB, 0]] as const) {
      const got = await readStream(await store.read(d, offset, limit));
      const want = data.subarray(offset, limit > 0 ? offset + limit : undefined);
      assert.ok(got.equals(want), `offset ${offset} limit ${limit}`);
    }
    // A consumer that stops early: the stream is cancelled, nothing hangs.
    const s = await store.read(d);
    for await (const chunk of s) {
      assert.ok((chunk as Buffer).length > 0);
      break;
    }
    assert.ok(s.destroyed);
    // A slow consumer: backpressure pauses the call; everything still arrives.
    const slow = await store.read(d, 0, 8 * MiB);
    let got = 0;
    for await (const chunk of slow) {
      got += (chunk as Buffer).length;
      await new Promise((r) => setTimeout(r, 2));
    }
    assert.equal(got, 8 * MiB);
  });

  it('maps NOT_FOUND and OUT_OF_RANGE, naming the node', async () => {
    const absent = digestOf(Buffer.from('never stored'));
    const err = await rejectsWith(store.read(absent), status.NOT_FOUND, new RegExp(n.address.replace(/\./g, '\\.')));
    assert.match(err.message, /not found/);
    const present = await putBlob(store, Buffer.from('0123456789'));
    await rejectsWith(store.read(present, 11), status.OUT_OF_RANGE);
    // A wrong size is another blob.
    await rejectsWith(store.read({ hash: present.hash, size_bytes: 20 }, 15), status.NOT_FOUND);
  });

  it('refuses content that does not match its digest: INVALID_ARGUMENT, nothing stored', async () => {
    for (const size of [100, 3 * MiB]) {
      const data = randomBytes(size);
      const lie: Digest = { hash: sha(Buffer.from(`other ${size}`)), size_bytes: size };
      const w = await store.write(lie);
      await w.append(data);
      await rejectsWith(w.commit(), status.INVALID_ARGUMENT, /hashes to/);
      await w.abort(); // harmless after a failed commit
      assert.deepEqual(await store.findMissing([lie]), [lie]);
      assert.ok(!onDisk(n, lie));
    }
    // Too many bytes is refused locally; too few at commit.
    const d = digestOf(Buffer.from('four'));
    const w = await store.write(d);
    await rejectsWith(w.append(Buffer.from('fives')), status.OUT_OF_RANGE);
    await w.append(Buffer.from('fou'));
    await rejectsWith(w.commit(), status.INVALID_ARGUMENT, /declared size 4 but 3/);
    await w.abort();
  });

  it('writes of existing blobs: found at write() for large blobs, or answered early by the node', async () => {
    const big = randomBytes(2 * MiB + 3);
    const d = await putInPieces(store, big);
    const again = await store.write(d);
    assert.equal(again.alreadyExists, true);
    await again.commit();

    // Without the existence check, the node answers the first chunk with committed_size = size.
    const noCheck = new RemoteBlobStore(n.clients, { existenceCheckBytes: Infinity });
    const w = await noCheck.write(d);
    assert.equal(w.alreadyExists, false);
    for (let i = 0; i < big.length; i += 64 * 1024) await w.append(big.subarray(i, i + 64 * 1024));
    await w.commit();
    assert.equal(w.written, big.length);

    // Small blobs are simply sent again.
    const small = await putBlob(store, Buffer.from('small and present'));
    const ws = await store.write(small);
    assert.equal(ws.alreadyExists, false);
    await ws.append(Buffer.from('small and present'));
    await ws.commit();
  });

  it('abort() cancels an upload; a later write of the same blob works', async () => {
    const data = randomBytes(4 * MiB);
    const d = digestOf(data);
    const w = await store.write(d);
    await w.append(data.subarray(0, 2 * MiB + 1));
    await w.abort();
    await rejectsWith(w.append(Buffer.from('x')), status.INVALID_ARGUMENT, /aborted/);
    assert.deepEqual(await store.findMissing([d]), [d]);
    await putInPieces(store, data);
    assert.deepEqual(await store.findMissing([d]), []);
  });

  it('findMissing splits big requests and keeps the input order', async () => {
    const chunked = new RemoteBlobStore(n.clients, { findMissingChunk: 100 });
    const stored = await Promise.all(Array.from({ length: 20 }, (_, i) => putBlob(store, Buffer.from(`present ${i}`))));
    const absent = Array.from({ length: 330 }, (_, i) => digestOf(Buffer.from(`absent ${i}`)));
    const asked = [...absent.slice(0, 200), ...stored, EMPTY_DIGEST, ...absent.slice(200)].reverse();
    const missing = await chunked.findMissing(asked);
    assert.deepEqual(missing, asked.filter((d) => absent.includes(d)));
  });

  it('ActionCache: put, get and miss, per instance; remove leaves a marker read as a miss', async () => {
    const ac = new RemoteActionCache(n.clients);
    const out = await putBlob(store, Buffer.from('output file'));
    const stdout = await putBlob(store, Buffer.from('some stdout'));
    const action = digestOf(Buffer.from('an action'));
    assert.equal(await ac.get('team-a', action), undefined);
    await ac.put('team-a', action, {
      exit_code: 0,
      output_files: [{ path: 'out/file.txt', digest: out, is_executable: true }],
      stdout_digest: stdout,
    });
    const got = await ac.get('team-a', action);
    assert.ok(got);
    assert.equal(got.output_files[0]?.path, 'out/file.txt');
    assert.deepEqual(got.output_files[0]?.digest, out);
    assert.deepEqual(got.stdout_digest, stdout);
    assert.equal(got.stdout_raw.length, 0);
    assert.equal(await ac.get('team-b', action), undefined);
    assert.equal(await ac.get('', action), undefined);
    // The REAPI cannot delete: a removed entry is overwritten with a marker every reader treats as a miss.
    await ac.remove('team-a', action);
    assert.equal(await ac.get('team-a', action), undefined);
    const direct = await new Promise<unknown>((resolve) =>
      n.clients.actionCache.GetActionResult({ instance_name: 'team-a', action_digest: action }, (err) => resolve(err?.code)),
    );
    assert.equal(direct, status.NOT_FOUND, 'the storage node itself answers NOT_FOUND for a removed entry');
    await ac.put('team-a', action, { exit_code: 0, stdout_digest: stdout });
    assert.ok(await ac.get('team-a', action), 'a new result replaces the marker');
  });

  it('timings: batch vs ByteStream for small blobs, cost of an existence check', async (t) => {
    const N = 200;
    const blobs = (tag: string) => Array.from({ length: N }, (_, i) => Buffer.from(`${tag} ${i} ${randomBytes(2000).toString('hex')}`));
    const viaStream = new RemoteBlobStore(n.clients, { batchUploadBytes: 0 });
    const time = async (fn: () => Promise<unknown>) => {
      const t0 = performance.now();
      await fn();
      return (performance.now() - t0) / N;
    };
    // Sequential, so this is latency per blob rather than throughput.
    const batch = await time(async () => { for (const b of blobs('batch')) await putBlob(store, b); });
    const stream = await time(async () => { for (const b of blobs('stream')) await putBlob(viaStream, b); });
    const probe = blobs('probe').map(digestOf);
    const check = await time(async () => { for (const d of probe) await store.findMissing([d]); });
    t.diagnostic(`4 KiB write: BatchUpdateBlobs ${batch.toFixed(2)} ms, ByteStream.Write ${stream.toFixed(2)} ms; FindMissingBlobs of 1 ${check.toFixed(2)} ms`);
  });
});

describe('ShardingBlobStore over two storage nodes', () => {
  let a: Node;
  let b: Node;
  let sharded: ShardingBlobStore;

  before(async () => {
    [a, b] = await Promise.all([startNode(), startNode()]);
    sharded = new ShardingBlobStore([a, b].map((x) => ({ name: x.address, store: new RemoteBlobStore(x.clients) })));
  });

  it('spreads blobs over both data dirs, each on its owner only', async () => {
    const blobs = Array.from({ length: 40 }, (_, i) => randomBytes(i % 8 === 0 ? 2 * MiB : 1000 + i));
    const digests = await Promise.all(blobs.map((data) => putInPieces(sharded, data)));
    let onA = 0;
    let onB = 0;
    for (const d of digests) {
      const owner = sharded.shardFor(d).name;
      assert.equal(onDisk(a, d), owner === a.address);
      assert.equal(onDisk(b, d), owner === b.address);
      if (onDisk(a, d)) onA++;
      else onB++;
    }
    assert.ok(onA >= 5 && onB >= 5, `a has ${onA}, b has ${onB}`);
    for (const [i, d] of digests.entries()) assert.deepEqual(await readBlob(sharded, d), blobs[i]);
    const absent = digestOf(Buffer.from('absent'));
    const asked = [digests[3]!, absent, digests[0]!, EMPTY_DIGEST];
    assert.deepEqual(await sharded.findMissing(asked), [absent]);
  });

  it('a node that is down gives UNAVAILABLE naming its address', async () => {
    await b.stop();
    const onB = Array.from({ length: 50 }, (_, i) => digestOf(Buffer.from(`probe ${i}`))).find(
      (d) => sharded.shardFor(d).name === b.address,
    )!;
    const pattern = new RegExp(b.address.replace(/\./g, '\\.'));
    await rejectsWith(sharded.findMissing([onB]), status.UNAVAILABLE, pattern);
    await rejectsWith(sharded.read(onB), status.UNAVAILABLE, pattern);

    // A node that was never there, through every call.
    const address = `127.0.0.1:${await freePort()}`;
    const clients = connectStorage(`grpc://${address}`);
    cleanups.push(async () => clients.close());
    const down = new RemoteBlobStore(clients);
    const p = new RegExp(address.replace(/\./g, '\\.'));
    const t0 = performance.now();
    await rejectsWith(down.findMissing([onB]), status.UNAVAILABLE, p);
    const failMs = performance.now() - t0;
    await rejectsWith(down.read(onB), status.UNAVAILABLE, p);
    await rejectsWith(down.write(digestOf(randomBytes(2 * MiB))), status.UNAVAILABLE, p);
    const small = Buffer.from('small');
    const w = await down.write(digestOf(small));
    await w.append(small);
    await rejectsWith(w.commit(), status.UNAVAILABLE, p);
    const noCheck = new RemoteBlobStore(clients, { existenceCheckBytes: Infinity });
    const big = randomBytes(3 * MiB);
    const wb = await noCheck.write(digestOf(big));
    await assert.rejects(async () => {
      await wb.append(big);
      await wb.commit();
    }, (err: unknown) => err instanceof ReapiError && err.code === status.UNAVAILABLE && p.test(err.message));
    await rejectsWith(new RemoteActionCache(clients).get('', onB), status.UNAVAILABLE, p);
    await rejectsWith(clients.waitReady(300), status.UNAVAILABLE, p);
    assert.ok(failMs < 5000, `failing took ${failMs} ms`);
  });
});

describe('the ActionCache of a fleet over two default-configured storage nodes', () => {
  it('serves the scheduler an entry whose blobs are spread over both shards; a client of one node gets a miss there', async () => {
    const [a, b] = await Promise.all([startNode(), startNode()]);
    // What `reapi scheduler --cas a,b` builds: the storage chain of its default tree.
    const config = parseConfig({ cas: [a.address, b.address], fleetToken: TEST_FLEET_TOKEN, logLevel: 'silent' });
    const storage = await createStorage('scheduler', { config, metrics: new Metrics(), logger: silentLogger });
    cleanups.push(async () => storage.close());
    const outputs: Digest[] = [];
    for (let i = 0; i < 12; i++) outputs.push(await putBlob(storage.blobs, Buffer.from(`output ${i}`)));
    const owners = new Set(outputs.map((d) => (onDisk(a, d) ? 'a' : 'b')));
    assert.deepEqual([...owners].sort(), ['a', 'b'], 'the outputs are on both nodes');
    const action = digestOf(Buffer.from('a sharded action'));
    await storage.actionCache.put('main', action, { exit_code: 0, output_files: outputs.map((digest, i) => ({ path: `out/${i}`, digest, is_executable: false })) });
    assert.equal((await storage.actionCache.get('main', action))?.output_files.length, 12, 'a hit through the scheduler, which checks both shards');
    // A client asking node a alone: a sees only its shard, so the entry is incomplete there.
    const client = connectStorage(a.address);
    cleanups.push(async () => client.close());
    assert.equal(await new RemoteActionCache(client).get('main', action), undefined);
  });
});

describe('mirrored storage over three storage nodes (--replicas 2)', () => {
  it('loses no blob and no ActionCache entry when one node stops', async () => {
    const nodes = await Promise.all([startNode(), startNode(), startNode()]);
    const config = parseConfig({ cas: nodes.map((n) => n.address), storage: { replicas: 2 }, fleetToken: TEST_FLEET_TOKEN, logLevel: 'silent' });
    const storage = await createStorage('scheduler', { config, metrics: new Metrics(), logger: silentLogger });
    cleanups.push(async () => storage.close());
    const blobs: Array<{ d: Digest; data: Buffer }> = [];
    for (let i = 0; i < 24; i++) {
      const data = randomBytes(i === 0 ? 3 * MiB : 500 + i);
      blobs.push({ d: await putBlob(storage.blobs, data), data });
    }
    for (const { d } of blobs) assert.equal(nodes.filter((n) => onDisk(n, d)).length, 2, `${d.hash} is on two nodes`);
    const action = digestOf(Buffer.from(`mirrored action ${randomBytes(4).toString('hex')}`));
    await storage.actionCache.put('main', action, { exit_code: 0, output_files: blobs.slice(0, 6).map(({ d }, i) => ({ path: `o${i}`, digest: d, is_executable: false })) });
    // Any one node going down costs nothing: every blob and the entry have a second replica.
    const victim = nodes[0]!;
    await victim.stop();
    for (const { d, data } of blobs) assert.deepEqual(await readBlob(storage.blobs, d), data);
    assert.deepEqual(await storage.blobs.findMissing(blobs.map((b) => b.d)), []);
    assert.equal((await storage.actionCache.get('main', action))?.output_files.length, 6, `a hit with ${victim.address} down`);
  });
});
