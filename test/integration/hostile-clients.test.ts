// Hostile clients against a real storage node over gRPC: a zstd decompression bomb, abandoned
// uploads, invented instance names (metric labels) and ActionCache entries that claim to come from
// a verified worker. The server's peak RSS growth under each bomb is printed (measured, not timed).
// Run: node --import tsx --test test/integration/hostile-clients.test.ts
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { connectStorage, FLEET_TOKEN_HEADER } from '../../cas/grpc-clients.ts';
import { provenanceOf } from '../../cas/provenance.ts';
import { parseConfig } from '../../common/config.ts';
import { digestOf } from '../../common/digest.ts';
import { writeResourceName } from '../../common/resource-name.ts';
import { ZstdEncoder } from '../../common/zstd.ts';
import { packAny } from '../../protos/index.ts';
import { TEST_FLEET_TOKEN } from '../support/reapi-process.ts';
import { byteStreamWrite, byteStreamWriteChunks, expectGrpcError, startTestStorage, unary, type TestStorage } from '../support/storage.ts';

const MiB = 1024 * 1024;

/** RSS now, after a collection, in MiB. */
function rssMiB(): number {
  (globalThis as { gc?: () => void }).gc?.();
  return process.memoryUsage().rss / MiB;
}

/** Samples the RSS while `fn` runs; returns the peak growth over the start, in MiB. */
async function peakGrowth(fn: () => Promise<unknown>): Promise<number> {
  const start = rssMiB();
  let peak = start;
  const t = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss / MiB)), 5);
  try {
    await fn();
  } finally {
    clearInterval(t);
  }
  return Math.max(peak, process.memoryUsage().rss / MiB) - start;
}

/** zstd of `total` zero bytes, compressed a MiB at a time (a frame of a few dozen KiB per GiB). */
function zeroFrame(total: number): Buffer {
  const enc = new ZstdEncoder(19);
  const parts: Buffer[] = [];
  const zero = Buffer.alloc(MiB);
  for (let n = 0; n < total; n += MiB) parts.push(...enc.push(zero, n + MiB >= total));
  return Buffer.concat(parts);
}

describe('hostile clients of a storage node', () => {
  let s: TestStorage;
  before(async () => {
    s = await startTestStorage({ storage: { maxPendingUploads: 50, maxPendingUploadBytes: 64 * MiB } });
  });
  after(async () => {
    await s?.stop();
  });

  test('a zstd bomb is refused the moment it passes the declared size, without the server growing', async () => {
    const bomb = zeroFrame(1024 * MiB);
    const declared = digestOf(Buffer.alloc(MiB)); // claims 1 MiB
    let err: grpc.ServiceError | undefined;
    const growth = await peakGrowth(async () => {
      err = await expectGrpcError(
        byteStreamWrite(s.byteStream, writeResourceName('', randomUUID(), declared, 'zstd'), bomb, { chunkSize: 16 * 1024 }),
        grpc.status.OUT_OF_RANGE,
        /decompresses to more than 1048576 bytes, past the declared size/,
      );
    });
    console.log(`zstd bomb: ${(bomb.length / 1024).toFixed(0)} KiB compressed standing for 1 GiB; server RSS grew by at most ${growth.toFixed(1)} MiB`);
    assert.ok(err);
    assert.ok(growth < 128, `RSS grew by ${growth.toFixed(1)} MiB`);
  });

  test('a large blob that really is that size streams to disk a slice at a time', async () => {
    const size = 256 * MiB;
    const frame = zeroFrame(size);
    const growth = await peakGrowth(async () => {
      const res = await byteStreamWrite(s.byteStream, writeResourceName('', randomUUID(), digestOf(Buffer.alloc(size)), 'zstd'), frame);
      assert.equal(res.committed_size, frame.length);
    });
    console.log(`256 MiB of zeros as one ${(frame.length / 1024).toFixed(0)} KiB zstd upload: server RSS grew by at most ${growth.toFixed(1)} MiB`);
    assert.ok(growth < 128, `RSS grew by ${growth.toFixed(1)} MiB`);
  });

  test('abandoned uploads go to disk and are capped in number', async () => {
    // Just under the 1 MiB a disk writer buffers before its first write to the temp file, sent as
    // Bazel sends (16 KiB chunks): without spilling, each abandoned upload would stay in memory.
    const piece = Buffer.alloc(16 * 1024, 7);
    const chunks = Array.from({ length: 63 }, () => piece);
    const sent = 63 * piece.length;
    const names: string[] = [];
    const growth = await peakGrowth(async () => {
      for (let i = 0; i < 300; i++) {
        const name = writeResourceName('', randomUUID(), { hash: digestOf(Buffer.from(`never finished ${i}`)).hash, size_bytes: 2 * MiB });
        names.push(name);
        await assert.rejects(byteStreamWriteChunks(s.byteStream, name, chunks, { finish: false }));
      }
    });
    console.log(`300 abandoned uploads of ${sent / 1024} KiB: server RSS grew by at most ${growth.toFixed(1)} MiB`);
    const status = async (name: string) => (await unary(s.byteStream, s.byteStream.QueryWriteStatus, { resource_name: name })).committed_size;
    assert.equal(await status(names[names.length - 1]!), sent, 'the newest upload can be resumed');
    assert.equal(await status(names[0]!), 0, 'the oldest was dropped (storage.maxPendingUploads 50)');
    assert.ok(growth < 150, `RSS grew by ${growth.toFixed(1)} MiB`);
  });

  test('invented instance names do not grow the metrics without bound', async () => {
    const d = digestOf(Buffer.from('no such action'));
    for (let i = 0; i < 500; i++) {
      await assert.rejects(unary(s.actionCache, s.actionCache.GetActionResult, { instance_name: `invented-${i}`, action_digest: d }));
    }
    const text = await (await fetch(`${s.httpUrl}/metrics`)).text();
    const series = text.split('\n').filter((l) => l.startsWith('reapi_action_cache_requests_total{'));
    assert.ok(series.length <= 17, `${series.length} series`);
    assert.ok(series.some((l) => l.includes('instance="(other)"')));
  });
});

describe('ActionCache writes at a storage node', () => {
  let s: TestStorage;
  before(async () => {
    s = await startTestStorage({ fleetToken: TEST_FLEET_TOKEN, actionCache: { clientWrites: 'deny' } });
  });
  after(async () => {
    await s?.stop();
  });

  const forged = () => ({
    exit_code: 0,
    execution_metadata: { auxiliary_metadata: [packAny('Provenance', { source: 'worker', worker: 'trusted-worker', verified: true })] },
  });

  test('a client without the fleet token cannot write, even claiming to be a verified worker', async () => {
    const d = digestOf(Buffer.from(`forged ${randomUUID()}`));
    await expectGrpcError(
      unary(s.actionCache, s.actionCache.UpdateActionResult, { action_digest: d, action_result: forged() }),
      grpc.status.PERMISSION_DENIED,
      /clientWrites is "deny"/,
    );
    await expectGrpcError(unary(s.actionCache, s.actionCache.GetActionResult, { action_digest: d }), grpc.status.NOT_FOUND);
  });

  test('a wrong token is refused as a credential (UNAUTHENTICATED); the fleet token writes and its provenance is kept', async () => {
    const d = digestOf(Buffer.from(`fleet ${randomUUID()}`));
    const wrong = new grpc.Metadata();
    wrong.set(FLEET_TOKEN_HEADER, 'not-the-fleet-token-at-all');
    await expectGrpcError(
      new Promise((resolve, reject) =>
        s.actionCache.UpdateActionResult({ action_digest: d, action_result: forged() }, wrong, (err, res) => (err ? reject(err) : resolve(res))),
      ),
      grpc.status.UNAUTHENTICATED,
      /fleet token presented is not this server's/,
    );
    const fleet = connectStorage(s.address, { fleetToken: TEST_FLEET_TOKEN });
    try {
      await unary(fleet.actionCache, fleet.actionCache.UpdateActionResult, { action_digest: d, action_result: forged() });
    } finally {
      fleet.close();
    }
    const got = await unary(s.actionCache, s.actionCache.GetActionResult, { action_digest: d });
    assert.equal(provenanceOf(got).source, 'worker');
    assert.equal(provenanceOf(got).verified, true);
  });

  test('with clientWrites allow, a client write is kept as a client write whatever it claims', async () => {
    const open = await startTestStorage({ fleetToken: TEST_FLEET_TOKEN, actionCache: { clientWrites: 'allow' } });
    try {
      const d = digestOf(Buffer.from(`allowed ${randomUUID()}`));
      await unary(open.actionCache, open.actionCache.UpdateActionResult, { action_digest: d, action_result: forged() });
      const got = await unary(open.actionCache, open.actionCache.GetActionResult, { action_digest: d });
      assert.equal(provenanceOf(got).source, 'client');
      assert.equal(provenanceOf(got).verified, false);
    } finally {
      await open.stop();
    }
  });

  test('every role listens on loopback unless told otherwise', () => {
    assert.equal(parseConfig({}).listen, '127.0.0.1');
  });
});
