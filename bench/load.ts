// Load benchmark: N concurrent Bazel-like clients, each executing M distinct short actions through
// a fleet on this machine (redis, 3 storage nodes with every blob on 2, 2 schedulers, 2 workers),
// half of the clients on each scheduler. Prints actions/s, client latency p50/p99 and the p50/p99
// of every stage (from each result's ExecutedActionMetadata), and checks nothing was lost: every
// action answered with its own output.
//
//   npm run bench -- load [--quick] [--keep] [--clients=N] [--actions=M]
import { randomUUID } from 'node:crypto';
import { chmod, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { connectExec, execute, stdoutOf, uploadAction, type ExecClients, type PreparedAction } from '../clients/remote-execution.ts';
import { startReapi, type ReapiProcess } from '../test/support/reapi-process.ts';
import { startRedis } from '../test/support/redis.ts';
import { fmtNum, log, mapLimit, percentile, removeDir, renderTable, saveResults, scratchDir, type Row } from './lib.ts';

type Ts = { seconds?: number | string | null; nanos?: number | null } | null | undefined;
const ms = (t: Ts) => (t ? Number(t.seconds ?? 0) * 1000 + (t.nanos ?? 0) / 1e6 : NaN);

const STAGES = ['queued', 'input_fetch', 'execution', 'output_upload'] as const;

function intFlag(args: string[], name: string, fallback: number): number {
  const v = args.find((a) => a.startsWith(`--${name}=`))?.split('=')[1];
  return v === undefined ? fallback : Math.max(1, Number(v));
}

export async function main(args: string[]): Promise<void> {
  const quick = args.includes('--quick');
  const clients = intFlag(args, 'clients', quick ? 4 : 8);
  const perClient = intFlag(args, 'actions', quick ? 25 : 100);
  const keep = args.includes('--keep');
  const base = await scratchDir('reapi-bench-load', 256 * 1024 * 1024);
  await chmod(base, 0o755); // the sandbox user traverses it to reach the workers' exec roots
  const procs: ReapiProcess[] = [];
  const redis = await startRedis();
  const conns: ExecClients[] = [];
  try {
    const log0 = ['--log-level', 'warn'];
    const nodes: ReapiProcess[] = [];
    for (let i = 0; i < 3; i++) nodes.push(await startReapi(['cas', '--data-dir', join(base, `cas${i}`), ...log0]));
    procs.push(...nodes);
    const cas = nodes.map((n) => `127.0.0.1:${n.grpcPort}`).join(',');
    const fleet = ['--redis', redis.url, '--cas', cas, '--replicas', '2', ...log0];
    const schedulers = [await startReapi(['scheduler', ...fleet]), await startReapi(['scheduler', ...fleet])];
    procs.push(...schedulers);
    for (let i = 0; i < 2; i++) {
      const workDir = join(base, `w${i}`);
      await mkdir(workDir, { recursive: true });
      await chmod(workDir, 0o755);
      procs.push(await startReapi(['worker', ...fleet, '--data-dir', join(base, `w${i}-data`), '--work-dir', workDir, '--concurrency', '2']));
    }
    log(`fleet up: 3 storage nodes (replicas 2), 2 schedulers, 2 workers; ${clients} clients x ${perClient} actions`);

    const run = randomUUID().slice(0, 8);
    const prepared: Array<{ c: ExecClients; actions: PreparedAction[] }> = [];
    for (let k = 0; k < clients; k++) {
      const c = connectExec(schedulers[k % 2]!.endpoint, '');
      conns.push(c);
      const actions: PreparedAction[] = [];
      for (let i = 0; i < perClient; i++) actions.push(await uploadAction(c, { argv: ['/bin/sh', '-c', `echo ${run}-${k}-${i}`], salt: `${run}-${k}-${i}` }));
      prepared.push({ c, actions });
    }
    const latency: number[] = [];
    const stages: Record<(typeof STAGES)[number], number[]> = { queued: [], input_fetch: [], execution: [], output_upload: [] };
    let lost = 0;
    const t0 = performance.now();
    // Each client runs its actions one after another, as a build's critical path would, 4 at a time.
    await Promise.all(
      prepared.map(({ c, actions }, k) =>
        mapLimit(actions, 4, async (a, i) => {
          const s = performance.now();
          const out = await execute(c, a.actionDigest, { skipCacheLookup: true });
          latency.push(performance.now() - s);
          const r = out.response.result;
          const text = r ? (await stdoutOf(c, r as Parameters<typeof stdoutOf>[1])).trim() : '';
          if ((out.response.status?.code ?? 0) !== 0 || text !== `${run}-${k}-${i}`) {
            if (lost++ === 0) log(`first lost action: status ${JSON.stringify(out.response.status)}, stdout "${text}", expected "${run}-${k}-${i}"`);
          }
          const m = r?.execution_metadata;
          if (m) {
            stages.queued.push(ms(m.worker_start_timestamp) - ms(m.queued_timestamp));
            stages.input_fetch.push(ms(m.input_fetch_completed_timestamp) - ms(m.input_fetch_start_timestamp));
            stages.execution.push(ms(m.execution_completed_timestamp) - ms(m.execution_start_timestamp));
            stages.output_upload.push(ms(m.output_upload_completed_timestamp) - ms(m.output_upload_start_timestamp));
          }
        }),
      ),
    );
    const seconds = (performance.now() - t0) / 1000;
    const total = clients * perClient;
    const rows: Row[] = [
      { name: `${clients} clients x ${perClient} distinct actions (4 in flight each), 2 schedulers, 2 workers x 2 slots`, value: '' },
      { name: '  throughput', value: `${fmtNum(total / seconds, 1)} /s`, note: `${total} actions in ${fmtNum(seconds, 1)} s` },
      { name: '  lost or wrong', value: String(lost), target: { verdict: lost === 0 ? 'PASS' : 'MISS', text: '= 0' } },
      { name: '  client latency', value: `${fmtNum(percentile(latency, 50))} ms`, note: `p99 ${fmtNum(percentile(latency, 99))} ms` },
      { name: 'Stages (p50 / p99, ms)', value: '' },
      ...STAGES.map((s) => ({ name: `  ${s}`, value: `${fmtNum(percentile(stages[s], 50))} ms`, note: `p99 ${fmtNum(percentile(stages[s], 99))} ms` })),
    ];
    process.stdout.write(`\n${renderTable('reapi load benchmark', rows)}\n`);
    const file = await saveResults('load', { clients, perClient, seconds, lost, latency, stages });
    process.stdout.write(`results: ${file}\n`);
    if (lost > 0) throw new Error(`${lost} of ${total} actions were lost or answered wrongly`);
  } finally {
    for (const c of conns) c.close();
    for (const p of procs.reverse()) await p.stop().catch(() => p.kill());
    await redis.stop();
    if (!keep) await removeDir(base);
  }
}
