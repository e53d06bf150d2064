// TLS benchmark: what TLS costs, against the same server without it, in one run. Two `reapi serve`
// children (plaintext and TLS with a CA made here), measured alternately:
//   1. no-op action latency (Execute to done, skip_cache_lookup), sequential;
//   2. ByteStream write and read of one large blob in 1 MiB chunks (Bazel-sized 16 KiB chunks too).
//
//   npm run bench -- tls [--quick] [--keep]
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { byteStreamReadEach, byteStreamWrite } from '../clients/grpc-calls.ts';
import { connectExec, run, type ExecClients } from '../clients/remote-execution.ts';
import { digestOf } from '../common/digest.ts';
import { readResourceName, writeResourceName } from '../common/resource-name.ts';
import { makeTestPki } from '../test/support/tls.ts';
import { fmtNum, log, MiB, mbps, now, percentile, pseudoRandomBytes, removeDir, renderTable, saveResults, scratchDir, startServer, type Row, type ServerHandle } from './lib.ts';

interface Side {
  name: 'plaintext' | 'TLS';
  server: ServerHandle;
  c: ExecClients;
  latencies: number[];
  writes: number[];
  reads: number[];
  smallWrites: number[];
}

async function noop(c: ExecClients): Promise<number> {
  const t0 = now();
  const out = await run(c, { argv: ['/bin/true'] }, { skipCacheLookup: true });
  if (out.response.status?.code) throw new Error(`no-op failed: ${out.response.status.message}`);
  return (now() - t0) * 1000;
}

/** Write then read `data` under a fresh digest (a salt makes every round new); MB/s each way. */
async function transfer(c: ExecClients, data: Buffer, chunkSize: number): Promise<{ write: number; read: number }> {
  const salted = Buffer.concat([data, Buffer.from(randomUUID())]);
  const digest = digestOf(salted);
  const t0 = now();
  await byteStreamWrite(c.byteStream, writeResourceName('', randomUUID(), digest), salted, { chunkSize });
  const t1 = now();
  await byteStreamReadEach(c.byteStream, readResourceName('', digest), () => {});
  const t2 = now();
  return { write: mbps(salted.length, t1 - t0), read: mbps(salted.length, t2 - t1) };
}

export async function main(args: string[]): Promise<void> {
  const quick = args.includes('--quick');
  const keep = args.includes('--keep');
  const rounds = quick ? 3 : 5;
  const noops = quick ? 20 : 50;
  const blob = pseudoRandomBytes((quick ? 64 : 128) * MiB);
  const small = pseudoRandomBytes(32 * MiB, 7);
  const base = await scratchDir('reapi-bench-tls', 4 * blob.length);
  const pki = makeTestPki();
  const sides: Side[] = [];
  try {
    for (const name of ['plaintext', 'TLS'] as const) {
      const tls = name === 'TLS' ? ['--tls-cert', pki.server.cert, '--tls-key', pki.server.key] : [];
      const server = await startServer({ dataDir: join(base, name), args: ['--concurrency', '2', ...tls] });
      const c = connectExec(`${name === 'TLS' ? 'grpcs' : 'grpc'}://127.0.0.1:${server.grpcPort}`, '', name === 'TLS' ? { ca: pki.ca } : {});
      sides.push({ name, server, c, latencies: [], writes: [], reads: [], smallWrites: [] });
    }
    log(`warm-up, then ${noops} no-op Executes and ${rounds} blob round trips per side, alternating`);
    for (const s of sides) for (let i = 0; i < 3; i++) await noop(s.c);
    for (let i = 0; i < noops; i++) for (const s of sides) s.latencies.push(await noop(s.c));
    for (let r = 0; r < rounds; r++) {
      for (const s of sides) {
        const big = await transfer(s.c, blob, MiB);
        s.writes.push(big.write);
        s.reads.push(big.read);
        s.smallWrites.push((await transfer(s.c, small, 16 * 1024)).write);
      }
    }
    const [plain, tls] = sides as [Side, Side];
    const med = (v: number[]) => percentile(v, 50);
    const rows: Row[] = [
      { name: `No-op action, Execute to done, skip_cache_lookup, ${noops} sequential`, value: '' },
      ...sides.map((s) => ({ name: `  ${s.name}`, value: `${fmtNum(med(s.latencies))} ms`, ratio: s === tls ? `${fmtNum(med(tls.latencies) / med(plain.latencies), 2)}x` : '', note: `p95 ${fmtNum(percentile(s.latencies, 95))} ms` })),
      { name: `ByteStream ${fmtNum(blob.length / MiB, 0)} MiB, 1 MiB chunks (median of ${rounds})`, value: '' },
      ...sides.flatMap((s) => [
        { name: `  ${s.name} write`, value: `${fmtNum(med(s.writes), 0)} MB/s`, ratio: s === tls ? `${fmtNum(med(tls.writes) / med(plain.writes), 2)}x` : '' },
        { name: `  ${s.name} read`, value: `${fmtNum(med(s.reads), 0)} MB/s`, ratio: s === tls ? `${fmtNum(med(tls.reads) / med(plain.reads), 2)}x` : '' },
      ]),
      { name: `ByteStream 32 MiB, 16 KiB chunks (Bazel), write (median of ${rounds})`, value: '' },
      ...sides.map((s) => ({ name: `  ${s.name}`, value: `${fmtNum(med(s.smallWrites), 0)} MB/s`, ratio: s === tls ? `${fmtNum(med(tls.smallWrites) / med(plain.smallWrites), 2)}x` : '' })),
    ];
    process.stdout.write(`\n${renderTable('reapi TLS benchmark (ratio: TLS / plaintext)', rows)}\n`);
    const file = await saveResults('tls', { quick, sides: sides.map((s) => ({ name: s.name, latenciesMs: s.latencies, writeMBps: s.writes, readMBps: s.reads, smallWriteMBps: s.smallWrites })) });
    process.stdout.write(`results: ${file}\n`);
  } finally {
    for (const s of sides) {
      s.c.close();
      await s.server.stop();
    }
    if (!keep) {
      await removeDir(base);
      await removeDir(pki.dir);
    }
  }
}
