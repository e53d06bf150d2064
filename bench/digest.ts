// Digest functions on the write path: BLAKE3 vs SHA-256, each next to its raw hash speed on this
// machine, measured in one run. One `reapi serve --no-execution` child; per function and round:
//   1. raw hash of the blob in this process (the ceiling the server's hashing cannot beat);
//   2. ByteStream.Write of the blob in 1 MiB chunks, then in 16 KiB chunks (Bazel's), named with
//      the function (`blobs/blake3/...`), and a read back;
// the functions alternate round by round, so machine noise hits both alike.
//
//   npm run bench -- digest [--quick] [--keep]
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { byteStreamReadEach, byteStreamWrite } from '../clients/grpc-calls.ts';
import { connectExec, type ExecClients } from '../clients/remote-execution.ts';
import { BLAKE3, SHA256, type DigestFunction } from '../common/digest-function.ts';
import { readResourceName, writeResourceName } from '../common/resource-name.ts';
import { fmtNum, log, MiB, mbps, now, percentile, pseudoRandomBytes, removeDir, renderTable, saveResults, scratchDir, startServer, type Row } from './lib.ts';

interface Side {
  fn: DigestFunction;
  raw: number[];
  writes: number[];
  smallWrites: number[];
  reads: number[];
}

function rawHash(fn: DigestFunction, data: Buffer): number {
  const t0 = now();
  fn.hash(data);
  return mbps(data.length, now() - t0);
}

async function write(c: ExecClients, fn: DigestFunction, data: Buffer, chunkSize: number): Promise<{ write: number; read: number }> {
  const salted = Buffer.concat([data, Buffer.from(randomUUID())]);
  const digest = fn.digestOf(salted);
  const t0 = now();
  await byteStreamWrite(c.byteStream, writeResourceName('', randomUUID(), digest, 'identity', fn), salted, { chunkSize });
  const t1 = now();
  await byteStreamReadEach(c.byteStream, readResourceName('', digest, 'identity', fn), () => {});
  return { write: mbps(salted.length, t1 - t0), read: mbps(salted.length, now() - t1) };
}

export async function main(args: string[]): Promise<void> {
  const quick = args.includes('--quick');
  const keep = args.includes('--keep');
  const rounds = quick ? 3 : 5;
  const blob = pseudoRandomBytes((quick ? 64 : 256) * MiB);
  const small = pseudoRandomBytes(32 * MiB, 5);
  const base = await scratchDir('reapi-bench-digest', 8 * blob.length);
  const server = await startServer({ dataDir: join(base, 'data'), args: ['--no-execution', '--max-cas-bytes', String(16 * blob.length)] });
  const c = connectExec(`127.0.0.1:${server.grpcPort}`, '');
  const sides: Side[] = [SHA256, BLAKE3].map((fn) => ({ fn, raw: [], writes: [], smallWrites: [], reads: [] }));
  try {
    log(`${rounds} rounds per function, alternating: raw hash and ByteStream writes of ${blob.length / MiB} MiB (1 MiB chunks) and 32 MiB (16 KiB chunks)`);
    for (const s of sides) await write(c, s.fn, small, MiB); // warm-up
    for (let r = 0; r < rounds; r++) {
      for (const s of sides) {
        s.raw.push(rawHash(s.fn, blob));
        const big = await write(c, s.fn, blob, MiB);
        s.writes.push(big.write);
        s.reads.push(big.read);
        s.smallWrites.push((await write(c, s.fn, small, 16 * 1024)).write);
      }
    }
    const med = (v: number[]) => percentile(v, 50);
    const [sha, b3] = sides as [Side, Side];
    const rows: Row[] = [];
    for (const s of sides) {
      rows.push({ name: `${s.fn.name}`, value: '' });
      rows.push({ name: '  raw hash in process', value: `${fmtNum(med(s.raw), 0)} MB/s`, ratio: s === b3 ? `${fmtNum(med(b3.raw) / med(sha.raw), 2)}x SHA-256` : '' });
      rows.push({ name: '  ByteStream write, 1 MiB chunks', value: `${fmtNum(med(s.writes), 0)} MB/s`, ratio: `${fmtNum(med(s.writes) / med(s.raw), 2)}x raw hash`, note: s === b3 ? `${fmtNum(med(b3.writes) / med(sha.writes), 2)}x SHA-256` : '' });
      rows.push({ name: '  ByteStream write, 16 KiB chunks', value: `${fmtNum(med(s.smallWrites), 0)} MB/s`, ratio: `${fmtNum(med(s.smallWrites) / med(s.raw), 2)}x raw hash`, note: s === b3 ? `${fmtNum(med(b3.smallWrites) / med(sha.smallWrites), 2)}x SHA-256` : '' });
      rows.push({ name: '  ByteStream read (whole blob checked)', value: `${fmtNum(med(s.reads), 0)} MB/s`, note: s === b3 ? `${fmtNum(med(b3.reads) / med(sha.reads), 2)}x SHA-256` : '' });
    }
    process.stdout.write(`\n${renderTable(`reapi digest functions (median of ${rounds})`, rows)}\n`);
    const file = await saveResults('digest', { quick, sides: sides.map((s) => ({ fn: s.fn.name, rawMBps: s.raw, writeMBps: s.writes, smallWriteMBps: s.smallWrites, readMBps: s.reads })) });
    process.stdout.write(`results: ${file}\n`);
  } finally {
    c.close();
    await server.stop();
    if (!keep) await removeDir(base);
  }
}
