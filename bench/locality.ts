// Locality benchmark: what routing jobs to the worker that already holds their inputs saves.
// A fleet of real processes (redis, `reapi cas`, two `reapi worker`s with --concurrency 1 and
// their own work dirs) and two `reapi scheduler`s on the same Redis and workers: one with
// locality on (the default), one with it off. The same workload goes through each, alternating:
// P "packages", each an input tree with its own ~4 MiB of random files, and A actions per
// package (different argv, same inputs: `sha256sum` of the files and an index), submitted
// interleaved (package 0..P-1, then again) with a few in flight. Every run uses new packages, so
// both modes start with cold worker caches.
// Reports bytes fetched from the CAS per action (ResourceUsage.input_fetched_bytes of each
// result, cross-checked with the workers' reapi_worker_input_cache_bytes_total{result="miss"}),
// wall time, and how many workers each package's actions ran on.
//
//   npm run bench -- locality [--quick] [--keep]
import { randomBytes } from 'node:crypto';
import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Digest } from '../common/digest.ts';
import { unpackAny, type MessageOutput } from '../protos/index.ts';
import { buildTree, connectExec, execute, prepareAction, uploadBlobs, type Blobs, type ExecClients } from '../test/support/execution.ts';
import { startReapi, type ReapiProcess } from '../test/support/reapi-process.ts';
import { startRedis, type TestRedis } from '../test/support/redis.ts';
import {
  below,
  environment,
  fmtBytes,
  fmtNum,
  log,
  mapLimit,
  MiB,
  percentile,
  removeDir,
  renderTable,
  saveResults,
  scratchDir,
  scrapeMetrics,
  type Row,
} from './lib.ts';

export interface LocalityBenchOptions {
  quick?: boolean;
  keep?: boolean;
}

const PACKAGES = 8;
const ACTIONS_PER_PACKAGE = 10;
const FILES_PER_PACKAGE = 16;
const FILE_BYTES = 256 * 1024; // 16 x 256 KiB = 4 MiB per package
const IN_FLIGHT = 4;
/** Locality on should fetch at most this fraction of what it fetches off. */
const TARGET_FETCH_RATIO = 0.8;

type ActionResultOut = MessageOutput<'ActionResult'>;

interface ActionSample {
  pkg: number;
  index: number;
  worker: string;
  fetchedBytes: number;
  latencyMs: number;
}

interface RunResult {
  mode: 'on' | 'off';
  rep: number;
  seconds: number;
  samples: ActionSample[];
  fetchedBytes: number;
  /** Sum over both workers of reapi_worker_input_cache_bytes_total{result="miss"} during the run. */
  metricMissBytes: number;
  /** Mean number of distinct workers a package's actions ran on. */
  workersPerPackage: number;
}

function fetchedOf(r: ActionResultOut): number {
  for (const any of r.execution_metadata?.auxiliary_metadata ?? []) {
    if (any.type_url.endsWith('/reapi.v1.ResourceUsage')) return Number(unpackAny(any, 'ResourceUsage').input_fetched_bytes);
  }
  throw new Error('no ResourceUsage in the result (is the worker new enough?)');
}

async function missBytes(ports: number[]): Promise<number> {
  let total = 0;
  for (const p of ports) total += (await scrapeMetrics(p, 'reapi_worker_input_cache_bytes_total'))['reapi_worker_input_cache_bytes_total{result="miss"}'] ?? 0;
  return total;
}

/** New packages (random contents), uploaded; returns each package's input root. */
async function uploadPackages(c: ExecClients, count: number): Promise<Digest[]> {
  const roots: Digest[] = [];
  for (let p = 0; p < count; p++) {
    const blobs: Blobs = new Map();
    const files = Object.fromEntries(Array.from({ length: FILES_PER_PACKAGE }, (_, i) => [`f${String(i).padStart(2, '0')}`, randomBytes(FILE_BYTES)]));
    roots.push(buildTree({ src: files, 'BUILD': `package ${p}\n` }, blobs));
    await uploadBlobs(c, blobs.values());
  }
  return roots;
}

async function runWorkload(mode: 'on' | 'off', rep: number, address: string, workerPorts: number[], salt: string): Promise<RunResult> {
  const c = connectExec(address, '');
  try {
    const roots = await uploadPackages(c, PACKAGES);
    const actions: Array<{ pkg: number; index: number; digest: Digest }> = [];
    const blobs: Blobs = new Map();
    // interleaved: every package's action 0, then every package's action 1, ...
    for (let i = 0; i < ACTIONS_PER_PACKAGE; i++) {
      for (let p = 0; p < PACKAGES; p++) {
        const a = prepareAction({ argv: ['/bin/sh', '-c', `sha256sum src/* | sha256sum; echo ${p}.${i}`], inputRoot: roots[p]!, salt: `${salt}-${mode}-${rep}-${p}-${i}` });
        for (const [h, d] of a.blobs) blobs.set(h, d);
        actions.push({ pkg: p, index: i, digest: a.actionDigest });
      }
    }
    await uploadBlobs(c, blobs.values());
    const miss0 = await missBytes(workerPorts);
    const samples: ActionSample[] = [];
    const t0 = performance.now();
    await mapLimit(actions, IN_FLIGHT, async (a) => {
      const s = performance.now();
      const outcome = await execute(c, a.digest, { skipCacheLookup: true, deadlineMs: 120_000 });
      const st = outcome.response.status;
      if (st && st.code !== 0) throw new Error(`Execute answered status ${st.code}: ${st.message}`);
      const r = outcome.response.result;
      if (!r || r.exit_code !== 0) throw new Error(`action failed (exit ${r?.exit_code})`);
      samples.push({ pkg: a.pkg, index: a.index, worker: r.execution_metadata?.worker ?? '?', fetchedBytes: fetchedOf(r), latencyMs: performance.now() - s });
    });
    const seconds = (performance.now() - t0) / 1000;
    // the workers' counters are collected on scrape: read after the last result is in
    const metricMissBytes = (await missBytes(workerPorts)) - miss0;
    const perPackage = Array.from({ length: PACKAGES }, (_, p) => new Set(samples.filter((s) => s.pkg === p).map((s) => s.worker)).size);
    return {
      mode,
      rep,
      seconds,
      samples,
      fetchedBytes: samples.reduce((n, s) => n + s.fetchedBytes, 0),
      metricMissBytes,
      workersPerPackage: perPackage.reduce((a, b) => a + b, 0) / PACKAGES,
    };
  } finally {
    c.close();
  }
}

interface ModeSummary {
  runs: number;
  actions: number;
  fetchedBytes: number;
  fetchedPerAction: number;
  metricMissBytes: number;
  seconds: number;
  latencyP50Ms: number;
  latencyP95Ms: number;
  workersPerPackage: number;
}

function summarize(runs: RunResult[]): ModeSummary {
  const samples = runs.flatMap((r) => r.samples);
  const fetched = runs.reduce((n, r) => n + r.fetchedBytes, 0);
  return {
    runs: runs.length,
    actions: samples.length,
    fetchedBytes: fetched,
    fetchedPerAction: fetched / samples.length,
    metricMissBytes: runs.reduce((n, r) => n + r.metricMissBytes, 0),
    seconds: runs.reduce((n, r) => n + r.seconds, 0),
    latencyP50Ms: percentile(samples.map((s) => s.latencyMs), 50),
    latencyP95Ms: percentile(samples.map((s) => s.latencyMs), 95),
    workersPerPackage: runs.reduce((n, r) => n + r.workersPerPackage, 0) / runs.length,
  };
}

export async function runLocalityBench(opts: LocalityBenchOptions = {}): Promise<{ rows: Row[]; results: unknown; file: string }> {
  const reps = opts.quick ? 1 : 2;
  const started = performance.now();
  const env = environment();
  if (Number(env.loadavg1) > 0.5) log(`note: load average ${Number(env.loadavg1).toFixed(2)} at start; other work on this machine skews the timings`);
  const packageBytes = FILES_PER_PACKAGE * FILE_BYTES;
  const tmp = await scratchDir('reapi-bench-locality-', reps * 2 * PACKAGES * packageBytes * 3 + 256 * MiB);
  await chmod(tmp, 0o711); // the sandbox user must traverse it to reach the workers' exec roots
  log(`scratch dir ${tmp}; ${opts.quick ? 'QUICK run' : 'full run'}`);
  const procs: ReapiProcess[] = [];
  let redis: TestRedis | undefined;
  try {
    redis = await startRedis();
    const logLevel = ['--log-level', 'warn'];
    const cas = await startReapi(['cas', '--data-dir', join(tmp, 'cas'), ...logLevel]);
    procs.push(cas);
    const casAddr = `127.0.0.1:${cas.grpcPort}`;
    // Locality off: a scheduler with config `execution.locality: false`.
    const offFile = join(tmp, 'locality-off.json');
    await writeFile(offFile, JSON.stringify({ execution: { locality: false } }));
    const offArgs = ['--config', offFile];
    const offHow = '--config (execution.locality: false)';
    const schedOn = await startReapi(['scheduler', '--redis', redis.url, '--cas', casAddr, '--data-dir', join(tmp, 'sched-on'), ...logLevel]);
    procs.push(schedOn);
    const schedOff = await startReapi(['scheduler', '--redis', redis.url, '--cas', casAddr, '--data-dir', join(tmp, 'sched-off'), ...offArgs, ...logLevel]);
    procs.push(schedOff);
    const workers: ReapiProcess[] = [];
    for (let i = 1; i <= 2; i++) {
      const w = await startReapi([
        'worker', '--redis', redis.url, '--cas', casAddr,
        '--data-dir', join(tmp, `w${i}-data`), '--work-dir', join(tmp, `w${i}`),
        '--concurrency', '1', ...logLevel,
      ]);
      procs.push(w);
      workers.push(w);
    }
    const workerPorts = workers.map((w) => w.httpPort);
    const address = { on: `127.0.0.1:${schedOn.grpcPort}`, off: `127.0.0.1:${schedOff.grpcPort}` };
    log(`fleet up: cas, scheduler on (pid ${schedOn.child.pid}), scheduler off (pid ${schedOff.child.pid}; ${offHow}), 2 workers --concurrency 1`);

    // Warm up (connections, JIT, worker registration, sandbox) through both schedulers; not counted.
    const salt = `${process.pid}-${Date.now()}`;
    for (const mode of ['off', 'on'] as const) {
      const c = connectExec(address[mode], '');
      const p = prepareAction({ argv: ['/bin/true'], salt: `${salt}-warmup-${mode}` });
      await uploadBlobs(c, p.blobs.values());
      await mapLimit([0, 1, 2, 3], 2, () => execute(c, p.actionDigest, { skipCacheLookup: true, deadlineMs: 60_000 }));
      c.close();
    }

    const runs: RunResult[] = [];
    for (let rep = 0; rep < reps; rep++) {
      // alternate which mode goes first, so drift on the machine hits both alike
      const order = rep % 2 === 0 ? (['off', 'on'] as const) : (['on', 'off'] as const);
      for (const mode of order) {
        log(`rep ${rep + 1}/${reps}: locality ${mode}, ${PACKAGES} packages x ${ACTIONS_PER_PACKAGE} actions, ${IN_FLIGHT} in flight`);
        const r = await runWorkload(mode, rep, address[mode], workerPorts, salt);
        log(
          `  ${fmtNum(r.seconds, 1)} s, fetched ${fmtBytes(r.fetchedBytes)} (${fmtBytes(r.fetchedBytes / r.samples.length)}/action; ` +
            `workers' miss counter ${fmtBytes(r.metricMissBytes)}), ${fmtNum(r.workersPerPackage, 2)} workers per package`,
        );
        runs.push(r);
      }
    }

    const on = summarize(runs.filter((r) => r.mode === 'on'));
    const off = summarize(runs.filter((r) => r.mode === 'off'));
    const ratio = on.fetchedPerAction / off.fetchedPerAction;
    const idealPerAction = packageBytes / ACTIONS_PER_PACKAGE;
    const targets = { fetchRatio: below(ratio, TARGET_FETCH_RATIO, `< ${TARGET_FETCH_RATIO}x off`) };
    const note = (s: ModeSummary) =>
      `total ${fmtBytes(s.fetchedBytes)} over ${s.actions} actions (workers' miss counter ${fmtBytes(s.metricMissBytes)}); ` +
      `${fmtNum(s.workersPerPackage, 2)} workers per package`;
    const rows: Row[] = [
      {
        name: `${PACKAGES} packages x ${fmtBytes(packageBytes)}, ${ACTIONS_PER_PACKAGE} actions each, interleaved, ${IN_FLIGHT} in flight, 2 workers --concurrency 1; ${reps} run(s) per mode`,
        value: '',
      },
      { name: '  fetched from the CAS per action, locality off', value: fmtBytes(off.fetchedPerAction), ratio: '1.00x', note: note(off) },
      { name: '  fetched from the CAS per action, locality on', value: fmtBytes(on.fetchedPerAction), ratio: `${fmtNum(ratio, 2)}x`, target: targets.fetchRatio, note: note(on) },
      { name: '  (each package fetched once by one worker)', value: fmtBytes(idealPerAction), ratio: `${fmtNum(idealPerAction / off.fetchedPerAction, 2)}x` },
      { name: '  wall time, locality off', value: `${fmtNum(off.seconds / off.runs, 2)} s`, ratio: '1.00x', note: `per run; latency p50 ${fmtNum(off.latencyP50Ms, 0)} ms, p95 ${fmtNum(off.latencyP95Ms, 0)} ms` },
      {
        name: '  wall time, locality on',
        value: `${fmtNum(on.seconds / on.runs, 2)} s`,
        ratio: `${fmtNum(on.seconds / off.seconds, 2)}x`,
        note: `per run; latency p50 ${fmtNum(on.latencyP50Ms, 0)} ms, p95 ${fmtNum(on.latencyP95Ms, 0)} ms`,
      },
    ];
    const totalSeconds = (performance.now() - started) / 1000;
    rows.push({ name: `total benchmark time ${fmtNum(totalSeconds, 0)} s; locality off via ${offHow}`, value: '' });
    const results = {
      benchmark: 'locality',
      date: new Date().toISOString(),
      quick: !!opts.quick,
      environment: env,
      totalSeconds,
      workload: { packages: PACKAGES, actionsPerPackage: ACTIONS_PER_PACKAGE, packageBytes, inFlight: IN_FLIGHT, workers: 2, workerConcurrency: 1, reps },
      localityOffVia: offHow,
      on,
      off,
      fetchRatio: ratio,
      idealFetchedPerAction: idealPerAction,
      runs: runs.map(({ samples, ...r }) => ({ ...r, perAction: samples })),
      targets,
    };
    const file = await saveResults('locality', results);
    return { rows, results, file };
  } finally {
    for (const p of procs.reverse()) await p.stop().catch(() => p.kill());
    await redis?.stop();
    if (opts.keep) log(`kept ${tmp}`);
    else await removeDir(tmp);
  }
}

export async function main(args: string[] = []): Promise<void> {
  const { rows, file } = await runLocalityBench({ quick: args.includes('--quick'), keep: args.includes('--keep') });
  process.stdout.write(`\n${renderTable('reapi locality benchmark', rows)}\nresults: ${file}\n`);
}
