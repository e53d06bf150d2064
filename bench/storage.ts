// Storage benchmark: a `reapi serve` child process on a temp data dir, measured against what the
// machine can do at best (SHA-256 in node, raw disk write and read), over the calls Bazel makes:
// ByteStream Write/Read of large blobs, Batch{Update,Read}Blobs of many small ones, and
// FindMissingBlobs of a large set. Prints a table with targets and saves JSON under bench/results/.
//
//   npm run bench -- storage [--quick] [--server-node-args="--cpu-prof --cpu-prof-dir=/tmp/prof"]
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { open, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import type { Digest } from '../common/digest.ts';
import { readResourceName, writeResourceName } from '../common/resource-name.ts';
import { services, type ByteStreamClient, type CapabilitiesClient, type ContentAddressableStorageClient } from '../protos/index.ts';
import {
  atLeast,
  below,
  ChunkSource,
  CLIENT_OPTIONS,
  environment,
  fmtBytes,
  fmtNum,
  GiB,
  insecure,
  KiB,
  log,
  mapLimit,
  mbps,
  MiB,
  percentile,
  phase,
  pseudoRandomBytes,
  REPO_ROOT,
  scrapeMetrics,
  removeDir,
  renderTable,
  rng,
  saveResults,
  scratchDir,
  sha256Hex,
  startServer,
  unaryCall,
  type PhaseResult,
  type Row,
} from './lib.ts';

export interface StorageBenchOptions {
  /** Smaller sizes for a smoke run (seconds instead of minutes); targets still printed. */
  quick?: boolean;
  /** Node flags for the server process (e.g. --cpu-prof). */
  serverNodeArgs?: string[];
  /** Keep the temp dir (data dir and baseline files) for inspection. */
  keep?: boolean;
}

const TARGET_WRITE_RATIO = 0.5;
const TARGET_FIND_MISSING_MS = 50;
const TARGET_RSS_BYTES = 300 * 1e6;
/** Batches of small blobs in flight at once (Bazel runs many calls in parallel). */
const BATCH_CONCURRENCY = 4;
/** Bytes a BatchUpdateBlobs entry adds to its data (digest, framing), so a request stays under the limit. */
const BATCH_ENTRY_OVERHEAD = 100;

interface PhaseSummary {
  seconds: number;
  clientCpuSeconds: number;
  serverCpuSeconds?: number;
  serverPeakRssBytes?: number;
}

function summary(p: PhaseResult<unknown>): PhaseSummary {
  return { seconds: p.seconds, clientCpuSeconds: p.clientCpu, serverCpuSeconds: p.serverCpu, serverPeakRssBytes: p.serverPeakRss };
}

function cpuNote(p: PhaseResult<unknown>): string {
  const parts = [`${fmtNum(p.seconds, 2)} s`];
  if (p.serverCpu !== undefined) parts.push(`srv cpu ${fmtNum(p.serverCpu, 2)} s`);
  parts.push(`cli cpu ${fmtNum(p.clientCpu, 2)} s`);
  if (p.serverPeakRss !== undefined) parts.push(`srv rss ${fmtNum(p.serverPeakRss / 1e6, 0)} MB`);
  return parts.join(', ');
}

// ---------------------------------------------------------------------------------------------
// Baselines

async function diskWrite(path: string, src: ChunkSource, count: number, fsync: boolean): Promise<void> {
  const fh = await open(path, 'w');
  const buf = Buffer.allocUnsafe(src.chunkSize);
  try {
    for (let i = 0; i < count; i++) await fh.write(src.fill(i, buf));
    if (fsync) await fh.sync();
  } finally {
    await fh.close();
  }
}

async function diskRead(path: string, chunkSize: number): Promise<number> {
  const fh = await open(path, 'r');
  const buf = Buffer.allocUnsafe(chunkSize);
  let total = 0;
  try {
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, chunkSize, null);
      if (bytesRead === 0) return total;
      total += bytesRead;
    }
  } finally {
    await fh.close();
  }
}

/** Flush dirty pages so one phase's writeback does not slow the next (not timed). */
function syncDisks(): void {
  try {
    execFileSync('sync');
  } catch {
    // best effort
  }
}

// ---------------------------------------------------------------------------------------------
// Clients

async function byteStreamWrite(client: ByteStreamClient, src: ChunkSource, count: number, digest: Digest): Promise<number> {
  const name = writeResourceName('', randomUUID(), digest);
  let finished = false;
  let wake: (() => void) | undefined;
  const response = new Promise<number>((resolve, reject) => {
    const call = client.Write({ deadline: Date.now() + 600_000 }, (err, res) => {
      finished = true;
      wake?.();
      if (err) reject(err);
      else resolve(Number(res!.committed_size));
    });
    void (async () => {
      for (let i = 0; i < count && !finished; i++) {
        const ok = call.write({
          resource_name: i === 0 ? name : '',
          write_offset: i * src.chunkSize,
          finish_write: i === count - 1,
          data: src.chunk(i),
        });
        if (!ok && !finished) {
          await new Promise<void>((r) => {
            wake = r;
            call.once('drain', r);
          });
          call.removeListener('drain', wake!);
          wake = undefined;
        }
      }
      call.end();
    })().catch(reject);
  });
  const committed = await response;
  if (committed !== digest.size_bytes) throw new Error(`Write committed ${committed} bytes, expected ${digest.size_bytes}`);
  return committed;
}

async function byteStreamRead(client: ByteStreamClient, digest: Digest): Promise<number> {
  const call = client.Read({ resource_name: readResourceName('', digest), read_offset: 0, read_limit: 0 }, { deadline: Date.now() + 600_000 });
  let total = 0;
  for await (const res of call as AsyncIterable<{ data: Buffer }>) total += res.data.length;
  if (total !== digest.size_bytes) throw new Error(`Read returned ${total} bytes, expected ${digest.size_bytes}`);
  return total;
}

interface SmallBlob {
  digest: Digest;
  data: Buffer;
}

function makeSmallBlobs(count: number, minSize: number, maxSize: number): SmallBlob[] {
  const random = rng(7);
  const base = pseudoRandomBytes(maxSize, 99);
  const blobs: SmallBlob[] = [];
  for (let i = 0; i < count; i++) {
    const size = minSize + Math.floor(random() * (maxSize - minSize + 1));
    const data = Buffer.from(base.subarray(0, size));
    data.writeUInt32LE(i, 0);
    data.writeUInt32LE(0x62656e63, 4); // "benc": keeps these apart from other benchmarks' blobs
    blobs.push({ digest: { hash: sha256Hex(data), size_bytes: size }, data });
  }
  return blobs;
}

/** Split into batches whose total (data + per-entry overhead) stays within `maxBytes`. */
function batches(blobs: SmallBlob[], maxBytes: number): SmallBlob[][] {
  const out: SmallBlob[][] = [];
  let cur: SmallBlob[] = [];
  let bytes = 0;
  for (const b of blobs) {
    const cost = b.data.length + BATCH_ENTRY_OVERHEAD;
    if (cur.length > 0 && bytes + cost > maxBytes) {
      out.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(b);
    bytes += cost;
  }
  if (cur.length > 0) out.push(cur);
  return out;
}

// ---------------------------------------------------------------------------------------------

export async function runStorageBench(opts: StorageBenchOptions = {}): Promise<{ rows: Row[]; results: Record<string, unknown>; file: string }> {
  const quick = opts.quick ?? false;
  const bigChunks = quick ? 128 : 1024; // x 1 MiB
  const smallChunkBlobBytes = quick ? 32 * MiB : 256 * MiB;
  const smallBlobCount = quick ? 2000 : 10_000;
  const findMissingCount = 10_000;
  const findMissingCalls = 20;

  const big = new ChunkSource(MiB, 1);
  const small = new ChunkSource(16 * KiB, 2);
  const bigBytes = bigChunks * MiB;
  const smallChunkCount = smallChunkBlobBytes / (16 * KiB);

  const env = environment();
  if (Number(env.loadavg1) > 0.5) log(`note: load average ${Number(env.loadavg1).toFixed(2)} at start; other work on this machine skews the numbers`);
  const tmp = await scratchDir('reapi-bench-storage-', bigBytes * 2 + smallChunkBlobBytes + 512 * MiB);
  const dataDir = join(tmp, 'data');
  const baselineFile = join(tmp, 'baseline.bin');
  log(`scratch dir ${tmp}; ${quick ? 'QUICK run' : 'full run'}`);

  const server = await startServer({ dataDir, nodeArgs: opts.serverNodeArgs });
  log(`server pid ${server.pid} on ${server.address}`);
  const idle = server.memory();

  const bs = new services.ByteStream(server.address, insecure(), CLIENT_OPTIONS) as unknown as ByteStreamClient;
  const cas = new services.ContentAddressableStorage(server.address, insecure(), CLIENT_OPTIONS) as unknown as ContentAddressableStorageClient;
  const caps = new services.Capabilities(server.address, insecure(), CLIENT_OPTIONS) as unknown as CapabilitiesClient;
  const clients: grpc.Client[] = [bs, cas, caps];

  try {
    // --- Baselines (client process only; the server is idle) ---
    log(`baseline: sha256 of ${fmtBytes(bigBytes)}`);
    const sha = await phase(async () => big.digest(bigChunks));
    const bigDigest = sha.value;
    const shaMBps = mbps(bigBytes, sha.seconds);

    log('baseline: disk write with fsync');
    const writeFsync = await phase(() => diskWrite(baselineFile, big, bigChunks, true));
    await unlink(baselineFile);
    syncDisks();
    log('baseline: disk write without fsync');
    const writeNoFsync = await phase(() => diskWrite(baselineFile, big, bigChunks, false));
    syncDisks();
    log('baseline: disk read');
    const read = await phase(() => diskRead(baselineFile, MiB));
    await unlink(baselineFile);
    const diskWriteMBps = mbps(bigBytes, writeNoFsync.seconds);
    const diskWriteFsyncMBps = mbps(bigBytes, writeFsync.seconds);
    const diskReadMBps = mbps(bigBytes, read.seconds);
    const writeBaseline = Math.min(shaMBps, diskWriteMBps);
    const writeBaselineName = shaMBps <= diskWriteMBps ? 'sha256' : 'disk write';

    // --- Transport ceiling: the same client against a grpc-js server that only hashes ---
    const smallDigest = small.digest(smallChunkCount);
    log('grpc-js sink: ByteStream.Write/Read with no storage behind it');
    const sink = await startServer({ dataDir, nodeArgs: ['--import', 'tsx'], command: [join(REPO_ROOT, 'bench', 'grpc-sink.ts')] });
    const sinkBs = new services.ByteStream(sink.address, insecure(), CLIENT_OPTIONS) as unknown as ByteStreamClient;
    let sinkWrite: PhaseResult<number>, sinkWrite16: PhaseResult<number>, sinkRead: PhaseResult<number>;
    try {
      sinkWrite = await phase(() => byteStreamWrite(sinkBs, big, bigChunks, bigDigest), sink.pid);
      sinkWrite16 = await phase(() => byteStreamWrite(sinkBs, small, smallChunkCount, smallDigest), sink.pid);
      sinkRead = await phase(() => byteStreamRead(sinkBs, bigDigest), sink.pid);
    } finally {
      sinkBs.close();
      await sink.stop();
    }
    const sinkWriteMBps = mbps(bigBytes, sinkWrite.seconds);
    const sinkWrite16MBps = mbps(smallChunkBlobBytes, sinkWrite16.seconds);
    const sinkReadMBps = mbps(bigBytes, sinkRead.seconds);

    // --- ByteStream, large blobs ---
    log(`ByteStream.Write ${fmtBytes(bigBytes)} in 1 MiB chunks`);
    const bsWrite = await phase(() => byteStreamWrite(bs, big, bigChunks, bigDigest), server.pid);
    syncDisks();
    log(`ByteStream.Read ${fmtBytes(bigBytes)}`);
    const bsRead = await phase(() => byteStreamRead(bs, bigDigest), server.pid);
    log(`ByteStream.Write ${fmtBytes(smallChunkBlobBytes)} in 16 KiB chunks`);
    const bsWrite16 = await phase(() => byteStreamWrite(bs, small, smallChunkCount, smallDigest), server.pid);
    syncDisks();
    log(`ByteStream.Read ${fmtBytes(smallChunkBlobBytes)}`);
    const bsRead16 = await phase(() => byteStreamRead(bs, smallDigest), server.pid);

    // --- Small blobs through the batch calls ---
    const capabilities = await unaryCall(caps.GetCapabilities.bind(caps), { instance_name: '' });
    const maxBatch = Number(capabilities.cache_capabilities?.max_batch_total_size_bytes ?? 0) || 4 * MiB;
    const blobs = makeSmallBlobs(smallBlobCount, 100, 4 * KiB);
    const blobBytes = blobs.reduce((n, b) => n + b.data.length, 0);
    const groups = batches(blobs, maxBatch);
    log(`BatchUpdateBlobs: ${blobs.length} blobs (${fmtBytes(blobBytes)}) in ${groups.length} batches`);
    const batchUpdate = await phase(
      () =>
        mapLimit(groups, BATCH_CONCURRENCY, async (group) => {
          const res = await unaryCall(cas.BatchUpdateBlobs.bind(cas), {
            instance_name: '',
            requests: group.map((b) => ({ digest: b.digest, data: b.data, compressor: 'IDENTITY' as const })),
          });
          const bad = res.responses.filter((r) => r.status?.code !== 0);
          if (bad.length) throw new Error(`BatchUpdateBlobs: ${bad.length} failed, e.g. ${bad[0]!.status?.message}`);
        }),
      server.pid,
    );
    log('BatchReadBlobs of the same blobs');
    const batchRead = await phase(
      () =>
        mapLimit(groups, BATCH_CONCURRENCY, async (group) => {
          const res = await unaryCall(cas.BatchReadBlobs.bind(cas), {
            instance_name: '',
            digests: group.map((b) => b.digest),
            acceptable_compressors: ['IDENTITY'],
          });
          if (res.responses.length !== group.length) throw new Error(`BatchReadBlobs: ${res.responses.length} responses for ${group.length}`);
          res.responses.forEach((r, i) => {
            if (r.status?.code !== 0) throw new Error(`BatchReadBlobs: ${r.status?.message}`);
            if (!r.data.equals(group[i]!.data)) throw new Error(`BatchReadBlobs: wrong data for ${r.digest?.hash}`);
          });
        }),
      server.pid,
    );

    // --- FindMissingBlobs: half present ---
    const present = blobs.slice(0, Math.min(blobs.length, findMissingCount / 2)).map((b) => b.digest);
    const absent = Array.from({ length: findMissingCount - present.length }, (_, i) => {
      const data = Buffer.from(`absent blob ${i} ${randomUUID()}`);
      return { hash: sha256Hex(data), size_bytes: data.length };
    });
    const random = rng(3);
    const probe = [...present, ...absent].sort(() => random() - 0.5);
    const findMissing = () => unaryCall(cas.FindMissingBlobs.bind(cas), { instance_name: '', blob_digests: probe });
    for (let i = 0; i < 2; i++) await findMissing(); // warm up (JIT, connection)
    log(`FindMissingBlobs of ${probe.length} digests x ${findMissingCalls}`);
    const latencies: number[] = [];
    const fm = await phase(async () => {
      for (let i = 0; i < findMissingCalls; i++) {
        const t0 = performance.now();
        const res = await findMissing();
        latencies.push(performance.now() - t0);
        if (res.missing_blob_digests.length !== absent.length) {
          throw new Error(`FindMissingBlobs said ${res.missing_blob_digests.length} missing, expected ${absent.length}`);
        }
      }
    }, server.pid);
    const p50 = percentile(latencies, 50);
    const p95 = percentile(latencies, 95);

    const end = server.memory();
    const heap = await scrapeMetrics(server.httpPort, 'nodejs_').catch(() => ({}) as Record<string, number>);
    const heapUsed = heap['nodejs_heap_size_used_bytes'];
    const heapTotal = heap['nodejs_heap_size_total_bytes'];
    const external = heap['nodejs_external_memory_bytes'];

    // --- Report ---
    const wRatio = (mb: number) => mb / writeBaseline;
    const rRatio = (mb: number) => mb / diskReadMBps;
    const bsWriteMBps = mbps(bigBytes, bsWrite.seconds);
    const bsReadMBps = mbps(bigBytes, bsRead.seconds);
    const bsWrite16MBps = mbps(smallChunkBlobBytes, bsWrite16.seconds);
    const bsRead16MBps = mbps(smallChunkBlobBytes, bsRead16.seconds);
    const writeTarget = `>= ${TARGET_WRITE_RATIO}x`;
    const targets = {
      byteStreamWrite1MiB: atLeast(wRatio(bsWriteMBps), TARGET_WRITE_RATIO, writeTarget),
      byteStreamWrite16KiB: atLeast(wRatio(bsWrite16MBps), TARGET_WRITE_RATIO, writeTarget),
      findMissingP50: below(p50, TARGET_FIND_MISSING_MS, `< ${TARGET_FIND_MISSING_MS} ms`),
      findMissingP95: below(p95, TARGET_FIND_MISSING_MS, `< ${TARGET_FIND_MISSING_MS} ms`),
      serverPeakRss: below(end.hwmBytes, TARGET_RSS_BYTES, `< ${TARGET_RSS_BYTES / 1e6} MB`),
    };
    const rows: Row[] = [
      { name: 'Baselines (client process)', value: '' },
      { name: '  sha256 (node, 1 MiB chunks)', value: `${fmtNum(shaMBps, 0)} MB/s`, note: cpuNote(sha) },
      { name: '  disk write, no fsync', value: `${fmtNum(diskWriteMBps, 0)} MB/s`, note: cpuNote(writeNoFsync) },
      { name: '  disk write + fsync', value: `${fmtNum(diskWriteFsyncMBps, 0)} MB/s`, note: cpuNote(writeFsync) },
      { name: '  disk read (page cache)', value: `${fmtNum(diskReadMBps, 0)} MB/s`, note: cpuNote(read) },
      { name: `  write baseline = min(sha256, disk write) = ${writeBaselineName}`, value: `${fmtNum(writeBaseline, 0)} MB/s` },
      { name: 'Transport ceiling: same client, grpc-js server that only hashes (bench/grpc-sink.ts)', value: '' },
      { name: `  Write ${fmtBytes(bigBytes)}, 1 MiB chunks`, value: `${fmtNum(sinkWriteMBps, 0)} MB/s`, ratio: `${fmtNum(wRatio(sinkWriteMBps), 2)}x`, note: cpuNote(sinkWrite) },
      { name: `  Write ${fmtBytes(smallChunkBlobBytes)}, 16 KiB chunks`, value: `${fmtNum(sinkWrite16MBps, 0)} MB/s`, ratio: `${fmtNum(wRatio(sinkWrite16MBps), 2)}x`, note: cpuNote(sinkWrite16) },
      { name: `  Read ${fmtBytes(bigBytes)} (from memory)`, value: `${fmtNum(sinkReadMBps, 0)} MB/s`, ratio: `${fmtNum(rRatio(sinkReadMBps), 2)}x`, note: cpuNote(sinkRead) },
      { name: `ByteStream ${fmtBytes(bigBytes)} blob, 1 MiB chunks`, value: '' },
      { name: '  Write', value: `${fmtNum(bsWriteMBps, 0)} MB/s`, ratio: `${fmtNum(wRatio(bsWriteMBps), 2)}x`, target: targets.byteStreamWrite1MiB, note: `${fmtNum(bsWriteMBps / sinkWriteMBps, 2)}x sink; ${cpuNote(bsWrite)}` },
      { name: '  Read', value: `${fmtNum(bsReadMBps, 0)} MB/s`, ratio: `${fmtNum(rRatio(bsReadMBps), 2)}x`, note: `vs disk read; ${fmtNum(bsReadMBps / sinkReadMBps, 2)}x sink; ${cpuNote(bsRead)}` },
      { name: `ByteStream ${fmtBytes(smallChunkBlobBytes)} blob, 16 KiB chunks (Bazel)`, value: '' },
      { name: '  Write', value: `${fmtNum(bsWrite16MBps, 0)} MB/s`, ratio: `${fmtNum(wRatio(bsWrite16MBps), 2)}x`, target: targets.byteStreamWrite16KiB, note: `${fmtNum(bsWrite16MBps / sinkWrite16MBps, 2)}x sink; ${cpuNote(bsWrite16)}` },
      { name: '  Read', value: `${fmtNum(bsRead16MBps, 0)} MB/s`, ratio: `${fmtNum(rRatio(bsRead16MBps), 2)}x`, note: `vs disk read; ${cpuNote(bsRead16)}` },
      { name: `${blobs.length} small blobs (100 B..4 KiB, ${fmtBytes(blobBytes)}), ${groups.length} batches <= ${fmtBytes(maxBatch)}, ${BATCH_CONCURRENCY} in flight`, value: '' },
      { name: '  BatchUpdateBlobs', value: `${fmtNum(blobs.length / batchUpdate.seconds, 0)} blobs/s`, note: cpuNote(batchUpdate) },
      { name: '  BatchReadBlobs', value: `${fmtNum(blobs.length / batchRead.seconds, 0)} blobs/s`, note: cpuNote(batchRead) },
      { name: `FindMissingBlobs, ${probe.length} digests (half present), ${findMissingCalls} calls`, value: '' },
      { name: '  p50', value: `${fmtNum(p50, 1)} ms`, target: targets.findMissingP50 },
      { name: '  p95', value: `${fmtNum(p95, 1)} ms`, target: targets.findMissingP95, note: cpuNote(fm) },
      { name: 'Server memory', value: '' },
      { name: '  peak RSS (VmHWM)', value: `${fmtNum(end.hwmBytes / 1e6, 0)} MB`, target: targets.serverPeakRss },
      { name: '  RSS now (VmRSS)', value: `${fmtNum(end.rssBytes / 1e6, 0)} MB`, note: `idle at start ${fmtNum(idle.rssBytes / 1e6, 0)} MB; V8 heap used/total ${fmtNum((heapUsed ?? NaN) / 1e6, 0)}/${fmtNum((heapTotal ?? NaN) / 1e6, 0)} MB, external ${fmtNum((external ?? NaN) / 1e6, 0)} MB` },
    ];

    const results = {
      benchmark: 'storage',
      date: new Date().toISOString(),
      quick,
      environment: env,
      serverNodeArgs: opts.serverNodeArgs ?? [],
      baselines: {
        sha256MBps: shaMBps,
        diskWriteMBps,
        diskWriteFsyncMBps,
        diskReadMBps,
        writeBaselineMBps: writeBaseline,
        writeBaselineIs: writeBaselineName,
        bytes: bigBytes,
        phases: { sha256: summary(sha), diskWrite: summary(writeNoFsync), diskWriteFsync: summary(writeFsync), diskRead: summary(read) },
      },
      grpcSink: {
        write1MiBMBps: sinkWriteMBps,
        write16KiBMBps: sinkWrite16MBps,
        readMBps: sinkReadMBps,
        write1MiB: summary(sinkWrite),
        write16KiB: summary(sinkWrite16),
        read: summary(sinkRead),
      },
      byteStream: {
        chunk1MiB: {
          bytes: bigBytes,
          writeMBps: bsWriteMBps,
          writeRatio: wRatio(bsWriteMBps),
          writeVsSink: bsWriteMBps / sinkWriteMBps,
          readMBps: bsReadMBps,
          readRatio: rRatio(bsReadMBps),
          readVsSink: bsReadMBps / sinkReadMBps,
          write: summary(bsWrite),
          read: summary(bsRead),
        },
        chunk16KiB: {
          bytes: smallChunkBlobBytes,
          writeMBps: bsWrite16MBps,
          writeRatio: wRatio(bsWrite16MBps),
          writeVsSink: bsWrite16MBps / sinkWrite16MBps,
          readMBps: bsRead16MBps,
          readRatio: rRatio(bsRead16MBps),
          write: summary(bsWrite16),
          read: summary(bsRead16),
        },
      },
      smallBlobs: {
        count: blobs.length,
        bytes: blobBytes,
        batches: groups.length,
        maxBatchTotalSizeBytes: maxBatch,
        concurrency: BATCH_CONCURRENCY,
        update: { blobsPerSecond: blobs.length / batchUpdate.seconds, ...summary(batchUpdate) },
        read: { blobsPerSecond: blobs.length / batchRead.seconds, ...summary(batchRead) },
      },
      findMissingBlobs: { digests: probe.length, present: present.length, calls: findMissingCalls, p50Ms: p50, p95Ms: p95, latenciesMs: latencies, ...summary(fm) },
      serverMemory: { idleRssBytes: idle.rssBytes, peakRssBytes: end.hwmBytes, rssBytes: end.rssBytes, heapUsedBytes: heapUsed, heapTotalBytes: heapTotal, externalBytes: external },
      targets,
    };
    const file = await saveResults('storage', results);
    return { rows, results, file };
  } finally {
    for (const c of clients) c.close();
    await server.stop();
    if (opts.keep) log(`kept ${tmp}`);
    else await removeDir(tmp);
  }
}

export async function main(args: string[] = []): Promise<void> {
  const nodeArgs = args.find((a) => a.startsWith('--server-node-args='))?.slice('--server-node-args='.length) ?? process.env.BENCH_SERVER_NODE_ARGS;
  const { rows, file } = await runStorageBench({
    quick: args.includes('--quick'),
    keep: args.includes('--keep'),
    serverNodeArgs: nodeArgs ? nodeArgs.split(/\s+/).filter(Boolean) : undefined,
  });
  process.stdout.write(`\n${renderTable('reapi storage benchmark (MB = 10^6 bytes)', rows)}\nresults: ${file}\n`);
}
