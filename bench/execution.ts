// Execution benchmark (one file: its sections share one scratch setup and print one table): what
// remote execution costs on top of the sandbox, measured against
// baselines taken in the same run (spawn('true'), a raw `bwrap --unshare-all ... true`, and the
// worker's own BwrapRunner called in this process):
//   1. no-op action latency (Execute to done, skip_cache_lookup) against `reapi serve`, with a
//      per-stage breakdown from ExecutedActionMetadata;
//   2. throughput of short distinct actions: `reapi serve` (in-process queue) and a fleet of real
//      processes (redis, `reapi cas`, `reapi scheduler`, 1 then 2 `reapi worker`s);
//   3. real Bazel (bazel-bootstrap 4.2.3) on test/e2e/workspace: cold remote build vs a local
//      linux-sandbox build, and a cached rebuild with --remote_cache vs --disk_cache.
// Prints a table with ratios and targets and saves JSON under bench/results/.
//
//   npm run bench -- execution [--quick] [--keep] [--no-bazel] [--worker-concurrency=N]
//                              [--server-node-args="--cpu-prof --cpu-prof-dir=/tmp/prof"]
import { spawn } from 'node:child_process';
import { chmod, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseConfig } from '../common/config.ts';
import type { Digest } from '../common/digest.ts';
import type { MessageOutput } from '../protos/index.ts';
import { BwrapRunner } from '../worker/runners/bwrap-runner.ts';
import { allRemoteCacheHits, bazelAvailable, createBazel, parseProcessSummary, remoteFlags, type Bazel, type RunResult } from '../test/e2e/bazel.ts';
import {
  connectExec,
  execute,
  prepareAction,
  uploadBlobs,
  type ActionSpec,
  type ExecClients,
  type PreparedAction,
} from '../test/support/execution.ts';
import { startReapi, type ReapiProcess } from '../test/support/reapi-process.ts';
import { startRedis, type TestRedis } from '../test/support/redis.ts';
import {
  below,
  environment,
  fmtNum,
  log,
  mapLimit,
  MiB,
  percentile,
  procCpuSeconds,
  removeDir,
  renderTable,
  saveResults,
  scratchDir,
  scrapeMetrics,
  startServer,
  type Row,
  type ServerHandle,
} from './lib.ts';

export interface ExecutionBenchOptions {
  quick?: boolean;
  keep?: boolean;
  /** Skip the Bazel section (e.g. no bazel installed). */
  bazel?: boolean;
  /** --concurrency of each `reapi worker` and of `reapi serve` in the throughput section. */
  workerConcurrency?: number;
  serverNodeArgs?: string[];
}

const TARGET_NOOP_RATIO = 3;
const TARGET_COLD_RATIO = 1.5;
const TARGET_WARM_RATIO = 1.2;
/** Flags of the raw bwrap baseline: an unprivileged bwrap with the same namespaces as a run. */
function rawBwrapArgs(execRoot: string): string[] {
  return [
    '--ro-bind', '/usr', '/usr',
    '--symlink', 'usr/bin', '/bin',
    '--symlink', 'usr/lib', '/lib',
    '--symlink', 'usr/lib64', '/lib64',
    '--proc', '/proc',
    '--dev', '/dev',
    '--tmpfs', '/tmp',
    '--bind', execRoot, '/work',
    '--chdir', '/work',
    '--unshare-all', '--die-with-parent', '--new-session',
    '--hostname', 'action',
    '--clearenv', '--setenv', 'PATH', '/usr/bin:/bin',
    'true',
  ];
}

// ---------------------------------------------------------------------------------------------
// Small helpers

interface Stats {
  n: number;
  p50: number;
  p95: number;
  mean: number;
  min: number;
  max: number;
}

function stats(values: number[]): Stats {
  return {
    n: values.length,
    p50: percentile(values, 50),
    p95: percentile(values, 95),
    mean: values.reduce((a, b) => a + b, 0) / (values.length || 1),
    min: Math.min(...values),
    max: Math.max(...values),
  };
}

const median = (values: number[]): number => percentile(values, 50);

function spawnWait(cmd: string, args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: 'ignore' });
    child.once('error', reject);
    child.once('exit', (code, signal) => (code === 0 ? resolve(0) : reject(new Error(`${cmd} exited with ${code ?? signal}`))));
  });
}

type Ts = { seconds?: number | string | { toString(): string } | null; nanos?: number | null } | null | undefined;
function tsMs(t: Ts): number {
  if (!t) return NaN;
  return Number(String(t.seconds ?? 0)) * 1000 + (t.nanos ?? 0) / 1e6;
}

type ActionResultOut = MessageOutput<'ActionResult'>;

/** Stage durations (ms) of one execution from ExecutedActionMetadata plus the client's view. */
interface StageTimes {
  /** queued -> worker_start: waiting in the queue and the hand-off to the worker. */
  queued: number;
  /** worker_start -> input_fetch_start: markExecuting + loading Action/Command. */
  load: number;
  /** input fetch (materialise inputs, create output parents). */
  inputFetch: number;
  /** input_fetch_completed -> execution_start (runner setup before startedAt: ~0). */
  preExec: number;
  /** execution_start -> execution_completed: BwrapRunner.run (chown, cgroup, spawn, accounting). */
  execution: number;
  /** execution_completed -> output_upload_start: after the runner's completedAt (cgroup destroy). */
  postExec: number;
  /** output collection and upload (stdout/stderr). */
  outputUpload: number;
  /** Execute call start (client) -> queued (server): request, action load, cache lookup, submit. */
  beforeQueue: number;
  /** worker_completed -> done at the client: AC write, exec root removal, operation stream. */
  afterWorker: number;
}

function stageTimes(r: ActionResultOut, clientStart: number, clientEnd: number): StageTimes {
  const m = r.execution_metadata!;
  const q = tsMs(m.queued_timestamp);
  const ws = tsMs(m.worker_start_timestamp);
  const fs = tsMs(m.input_fetch_start_timestamp);
  const fe = tsMs(m.input_fetch_completed_timestamp);
  const es = tsMs(m.execution_start_timestamp);
  const ee = tsMs(m.execution_completed_timestamp);
  const us = tsMs(m.output_upload_start_timestamp);
  const ue = tsMs(m.output_upload_completed_timestamp);
  const wc = tsMs(m.worker_completed_timestamp);
  return {
    beforeQueue: q - clientStart,
    queued: ws - q,
    load: fs - ws,
    inputFetch: fe - fs,
    preExec: es - fe,
    execution: ee - es,
    postExec: us - ee,
    outputUpload: ue - us,
    afterWorker: clientEnd - wc,
  };
}

async function executeOk(c: ExecClients, digest: Digest, skipCacheLookup: boolean): Promise<ActionResultOut> {
  const outcome = await execute(c, digest, { skipCacheLookup, deadlineMs: 120_000 });
  const st = outcome.response.status;
  if (st && st.code !== 0) throw new Error(`Execute answered status ${st.code}: ${st.message}`);
  const result = outcome.response.result;
  if (!result) throw new Error('ExecuteResponse without a result');
  if (result.exit_code !== 0) throw new Error(`action exited with ${result.exit_code}`);
  return result;
}

/** Prepare many actions and upload all their blobs in a few batches (not timed). */
async function uploadAll(c: ExecClients, specs: ActionSpec[]): Promise<PreparedAction[]> {
  const prepared = specs.map((s) => prepareAction(s));
  const blobs = new Map<string, Buffer>();
  for (const p of prepared) for (const [h, d] of p.blobs) blobs.set(h, d);
  await uploadBlobs(c, blobs.values());
  return prepared;
}

/** Sum and count of each stage of reapi_execution_stage_duration_seconds. */
async function stageMetrics(httpPort: number): Promise<Record<string, { sum: number; count: number; meanMs: number }>> {
  const m = await scrapeMetrics(httpPort, 'reapi_execution_stage_duration_seconds');
  const out: Record<string, { sum: number; count: number; meanMs: number }> = {};
  for (const [k, v] of Object.entries(m)) {
    const mm = /^reapi_execution_stage_duration_seconds_(sum|count)\{stage="([^"]+)"\}$/.exec(k);
    if (!mm) continue;
    const e = (out[mm[2]!] ??= { sum: 0, count: 0, meanMs: 0 });
    if (mm[1] === 'sum') e.sum = v;
    else e.count = v;
  }
  for (const e of Object.values(out)) e.meanMs = e.count ? (e.sum / e.count) * 1000 : NaN;
  return out;
}

function diffStages(
  a: Record<string, { sum: number; count: number }>,
  b: Record<string, { sum: number; count: number }>,
): Record<string, { count: number; meanMs: number }> {
  const out: Record<string, { count: number; meanMs: number }> = {};
  for (const [k, v] of Object.entries(b)) {
    const count = v.count - (a[k]?.count ?? 0);
    const sum = v.sum - (a[k]?.sum ?? 0);
    out[k] = { count, meanMs: count ? (sum / count) * 1000 : NaN };
  }
  return out;
}

function fmtStages(s: Record<string, { meanMs: number }>): string {
  return ['queued', 'input_fetch', 'execution', 'output_upload']
    .filter((k) => s[k])
    .map((k) => `${k} ${fmtNum(s[k]!.meanMs, 1)}`)
    .join(', ');
}

// ---------------------------------------------------------------------------------------------
// Throughput

interface ThroughputResult {
  label: string;
  actions: number;
  inFlight: number;
  seconds: number;
  actionsPerSecond: number;
  latencyP50Ms: number;
  latencyP95Ms: number;
  /** Mean worker_start -> worker_completed (ExecutedActionMetadata). */
  workerMsMean: number;
  /** Execution slots (workers x concurrency) x wall time / actions: how long each action held a slot. */
  slotMs: number;
  /** CPU seconds per process during the timed phase. */
  cpuSeconds: Record<string, number>;
  stages: Record<string, { count: number; meanMs: number }>;
}

async function throughput(
  label: string,
  address: string,
  count: number,
  inFlight: number,
  pids: Record<string, number>,
  metricsPorts: number[],
  slots: number,
): Promise<ThroughputResult> {
  const c = connectExec(address, '');
  try {
    const salt = `${label}-${Date.now()}`;
    const specs: ActionSpec[] = Array.from({ length: count + 8 }, (_, i) => ({ argv: ['/bin/sh', '-c', `echo ${i}`], salt: `${salt}-${i}` }));
    const prepared = await uploadAll(c, specs);
    // Warm up (connections, JIT, worker registration) with the first 8; not timed.
    await mapLimit(prepared.slice(0, 8), inFlight, (p) => executeOk(c, p.actionDigest, false));
    const before = await Promise.all(metricsPorts.map((p) => stageMetrics(p)));
    const cpu0 = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, procCpuSeconds(pid)]));
    const lat: number[] = [];
    const workerMs: number[] = [];
    const t0 = performance.now();
    await mapLimit(prepared.slice(8), inFlight, async (p) => {
      const s = performance.now();
      const r = await executeOk(c, p.actionDigest, false);
      lat.push(performance.now() - s);
      const m = r.execution_metadata!;
      workerMs.push(tsMs(m.worker_completed_timestamp) - tsMs(m.worker_start_timestamp));
    });
    const seconds = (performance.now() - t0) / 1000;
    const cpuSeconds = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, procCpuSeconds(pid) - cpu0[k]!]));
    const after = await Promise.all(metricsPorts.map((p) => stageMetrics(p)));
    // Merge the stage histograms of all worker processes.
    const merged: Record<string, { count: number; meanMs: number }> = {};
    const acc: Record<string, { count: number; sumMs: number }> = {};
    after.forEach((a, i) => {
      for (const [k, v] of Object.entries(diffStages(before[i]!, a))) {
        const e = (acc[k] ??= { count: 0, sumMs: 0 });
        e.count += v.count;
        if (v.count) e.sumMs += v.meanMs * v.count;
      }
    });
    for (const [k, v] of Object.entries(acc)) merged[k] = { count: v.count, meanMs: v.count ? v.sumMs / v.count : NaN };
    return {
      label,
      actions: count,
      inFlight,
      seconds,
      actionsPerSecond: count / seconds,
      latencyP50Ms: percentile(lat, 50),
      latencyP95Ms: percentile(lat, 95),
      workerMsMean: workerMs.reduce((a, b) => a + b, 0) / workerMs.length,
      slotMs: (slots * 1000 * seconds) / count,
      cpuSeconds,
      stages: merged,
    };
  } finally {
    c.close();
  }
}

function cpuNote(t: ThroughputResult): string {
  const cpu = Object.entries(t.cpuSeconds)
    .map(([k, v]) => `${k} ${fmtNum(v / t.seconds, 2)}`)
    .join(', ');
  return `cpu/wall ${cpu}; slot held ${fmtNum(t.slotMs, 0)} ms/action, worker_start->completed ${fmtNum(t.workerMsMean, 0)} ms; stage means ms: ${fmtStages(t.stages)}`;
}

// ---------------------------------------------------------------------------------------------
// Bazel

interface BazelRun {
  ms: number;
  summary: string;
  elapsed?: string;
  criticalPath?: string;
}

const BAZEL_COMMON = ['--incompatible_strict_action_env', '--test_output=errors'];

function checkBazel(what: string, r: RunResult): BazelRun {
  if (r.code !== 0) throw new Error(`bazel ${what} exited with ${r.code}:\n${r.stderr.slice(-3000)}`);
  const s = parseProcessSummary(r.stderr);
  const crit = /Elapsed time: ([\d.]+)s, Critical Path: ([\d.]+)s/.exec(r.stderr);
  return { ms: r.durationMs, summary: s?.line ?? '?', elapsed: crit?.[1], criticalPath: crit?.[2] };
}

/** A fresh output root with its server up (`bazel info`), so the build's time excludes startup. */
async function freshBazel(): Promise<Bazel> {
  const b = await createBazel();
  await b.info('output_base');
  return b;
}

interface BazelResults {
  localStrategy: string;
  localStrategyNote: string;
  coldLocal: BazelRun[];
  coldRemote: BazelRun[];
  diskCacheFill: BazelRun;
  remoteFirstRebuild: BazelRun;
  warmDisk: BazelRun[];
  warmRemote: BazelRun[];
  coldRemoteStages: Array<Record<string, { count: number; meanMs: number }>>;
  coldRemoteServerCpuSeconds: number[];
}

/**
 * Cold builds alternate local and remote (each on a fresh output base, remote on a fresh reapi
 * serve data dir), and so do the warm rebuilds, so drifting load from other work on the machine
 * hits both sides alike. Before the timed warm rebuilds each side does one untimed rebuild with
 * the warm options (local: the --disk_cache fill; remote: the first --remote_cache rebuild), so
 * neither timed side pays Bazel's re-analysis after an option change.
 */
async function bazelSection(tmp: string, reps: number, serverNodeArgs: string[] | undefined): Promise<BazelResults> {
  let localStrategy = 'linux-sandbox';
  let localStrategyNote = '';
  const coldLocal: BazelRun[] = [];
  const coldRemote: BazelRun[] = [];
  const coldRemoteStages: BazelResults['coldRemoteStages'] = [];
  const coldRemoteServerCpuSeconds: number[] = [];
  const warmDisk: BazelRun[] = [];
  const warmRemote: BazelRun[] = [];
  const diskCache = join(tmp, 'disk-cache');
  const strat = () => (localStrategy === 'default' ? [] : [`--spawn_strategy=${localStrategy}`]);
  let local: Bazel | undefined;
  let remote: Bazel | undefined;
  let server: ServerHandle | undefined;
  try {
    for (let i = 0; i < reps; i++) {
      // --- cold local ---
      local = await freshBazel();
      log(`bazel: cold local build ${i + 1}/${reps} (${localStrategy})`);
      let r = await local.run(['test', '//...', ...strat(), ...BAZEL_COMMON]);
      if (r.code !== 0 && localStrategy === 'linux-sandbox' && i === 0) {
        localStrategyNote = `linux-sandbox failed as ${process.getuid?.() === 0 ? 'root' : 'this user'} (exit ${r.code}: ${/ERROR: [^\n]*/.exec(r.stderr)?.[0] ?? ''}); default strategy used`;
        log(localStrategyNote);
        localStrategy = 'default';
        await local.clean({ expunge: true });
        await local.info('output_base');
        r = await local.run(['test', '//...', ...BAZEL_COMMON]);
      }
      coldLocal.push(checkBazel('cold local', r));
      if (i < reps - 1) {
        await local.dispose();
        local = undefined;
      }
      // --- cold remote ---
      server = await startServer({ dataDir: join(tmp, `bazel-serve-${i}`), nodeArgs: serverNodeArgs });
      remote = await freshBazel();
      log(`bazel: cold remote build ${i + 1}/${reps} (reapi serve pid ${server.pid})`);
      const cpu0 = server.cpuSeconds();
      const st0 = await stageMetrics(server.httpPort);
      coldRemote.push(checkBazel('cold remote', await remote.run(['test', '//...', ...remoteFlags(server.address, 'executor')])));
      coldRemoteServerCpuSeconds.push(server.cpuSeconds() - cpu0);
      coldRemoteStages.push(diffStages(st0, await stageMetrics(server.httpPort)));
      if (i < reps - 1) {
        await remote.dispose();
        remote = undefined;
        await server.stop();
        server = undefined;
      }
    }
    // --- warm: one untimed rebuild with the warm options on each side, then alternate ---
    const warmLocal = () => local!.run(['test', '//...', ...strat(), `--disk_cache=${diskCache}`, ...BAZEL_COMMON]);
    const warmRem = () => remote!.run(['test', '//...', ...remoteFlags(server!.address, 'cache')]);
    await local!.clean();
    log('bazel: filling --disk_cache (untimed)');
    const diskCacheFill = checkBazel('disk cache fill', await warmLocal());
    await remote!.clean();
    log('bazel: first --remote_cache rebuild (untimed: options changed)');
    const remoteFirst = checkBazel('first remote cache rebuild', await warmRem());
    for (let j = 0; j < reps; j++) {
      await local!.clean();
      log(`bazel: warm --disk_cache rebuild ${j + 1}/${reps}`);
      warmDisk.push(checkBazel('warm disk cache', await warmLocal()));
      await remote!.clean();
      log(`bazel: warm --remote_cache rebuild ${j + 1}/${reps}`);
      const r = await warmRem();
      const run = checkBazel('warm remote cache', r);
      const s = parseProcessSummary(r.stderr);
      if (!s || !allRemoteCacheHits(s)) log(`warning: warm remote rebuild was not all cache hits: ${run.summary}`);
      warmRemote.push(run);
    }
    return { localStrategy, localStrategyNote, coldLocal, coldRemote, diskCacheFill, remoteFirstRebuild: remoteFirst, warmDisk, warmRemote, coldRemoteStages, coldRemoteServerCpuSeconds };
  } finally {
    await local?.dispose();
    await remote?.dispose();
    await server?.stop();
  }
}

// ---------------------------------------------------------------------------------------------

export async function runExecutionBench(opts: ExecutionBenchOptions = {}): Promise<{ rows: Row[]; results: Record<string, unknown>; file: string }> {
  const quick = opts.quick ?? false;
  const baselineRuns = quick ? 20 : 50;
  const noopRuns = quick ? 20 : 50;
  const tputActions = quick ? 60 : 200;
  const inFlight = 16;
  const conc = opts.workerConcurrency ?? 2;
  const bazelReps = quick ? 1 : 3;
  const withBazel = (opts.bazel ?? true) && bazelAvailable();
  const started = performance.now();

  const env = environment();
  if (Number(env.loadavg1) > 0.5) log(`note: load average ${Number(env.loadavg1).toFixed(2)} at start; other work on this machine skews the numbers`);
  const tmp = await scratchDir('reapi-bench-exec-', 512 * MiB);
  // mkdtemp makes it 0700: the sandbox user must traverse it to reach exec roots and work dirs.
  await chmod(tmp, 0o711);
  log(`scratch dir ${tmp}; ${quick ? 'QUICK run' : 'full run'}`);
  const cleanup: Array<() => Promise<void>> = [];

  try {
    // --- 1+2. Baselines and no-op latency, interleaved: iteration i runs spawn('true'), raw bwrap,
    // BwrapRunner.run and one no-op Execute back to back, so load from other work on the machine
    // hits all four alike and the ratios stay meaningful.
    const server: ServerHandle = await startServer({ dataDir: join(tmp, 'serve-data'), nodeArgs: opts.serverNodeArgs, args: ['--concurrency', String(conc)] });
    cleanup.push(() => server.stop());
    log(`reapi serve pid ${server.pid} on ${server.address}`);
    const c = connectExec(server.address, '');
    cleanup.push(async () => c.close());
    const rawRoot = join(tmp, 'raw-root');
    await mkdir(rawRoot);
    const defaults = parseConfig({});
    const runner = new BwrapRunner({ stateDir: join(tmp, 'runner-state') });
    await mkdir(join(tmp, 'runner-state'));
    await runner.ready();
    const runId = `${process.pid}-${Date.now()}`;
    const warmup = 5;
    const noopSpecs: ActionSpec[] = Array.from({ length: noopRuns + warmup }, (_, i) => ({ argv: ['/bin/true'], salt: `noop-${runId}-${i}` }));
    const noopPrepared = await uploadAll(c, noopSpecs);
    const loops = Math.max(baselineRuns, noopRuns);
    log(`interleaved x ${loops}: spawn('true'), raw bwrap, BwrapRunner.run(/bin/true), no-op Execute (skip_cache_lookup)`);
    const spawnMs: number[] = [];
    const bwrapMs: number[] = [];
    const runnerMs: number[] = [];
    const noopMs: number[] = [];
    const noopStages: StageTimes[] = [];
    const noopWorkerMs: number[] = [];
    let noopServerCpu = 0;
    let stBefore: Awaited<ReturnType<typeof stageMetrics>> = {};
    const timed = async (out: number[], keep: boolean, fn: () => Promise<unknown>) => {
      const t0 = performance.now();
      await fn();
      if (keep) out.push(performance.now() - t0);
    };
    for (let i = 0; i < loops + warmup; i++) {
      if (i === warmup) stBefore = await stageMetrics(server.httpPort);
      const keep = i >= warmup;
      if (i < baselineRuns + warmup) {
        await timed(spawnMs, keep, () => spawnWait('true', []));
        await timed(bwrapMs, keep, () => spawnWait('bwrap', rawBwrapArgs(rawRoot)));
        const execRoot = join(tmp, `runner-root-${i}`);
        await mkdir(execRoot, { mode: 0o755 });
        await timed(runnerMs, keep, async () => {
          const out = await runner.run(
            { execRoot, argv: ['/bin/true'], env: {}, workingDirectory: '', timeoutMs: 60_000, limits: defaults.worker.limits, maxOutputBytes: defaults.worker.maxOutputBytes },
            new AbortController().signal,
          );
          if (out.exitCode !== 0 || out.failure) throw new Error(`BwrapRunner: exit ${out.exitCode} ${out.failure?.message ?? ''}`);
        });
        await rm(execRoot, { recursive: true, force: true });
      }
      if (i < noopRuns + warmup) {
        const cpu0 = server.cpuSeconds();
        const t0 = Date.now();
        const p0 = performance.now();
        const r = await executeOk(c, noopPrepared[i]!.actionDigest, true);
        const p1 = performance.now();
        const t1 = Date.now();
        if (keep) {
          noopMs.push(p1 - p0);
          noopServerCpu += server.cpuSeconds() - cpu0;
          noopStages.push(stageTimes(r, t0, t1));
          const m = r.execution_metadata!;
          noopWorkerMs.push(tsMs(m.worker_completed_timestamp) - tsMs(m.worker_start_timestamp));
        }
      }
    }
    await runner.dispose();
    const noopMetricStages = diffStages(stBefore, await stageMetrics(server.httpPort));
    const spawnS = stats(spawnMs);
    const bwrapS = stats(bwrapMs);
    const runnerS = stats(runnerMs);
    const noopS = stats(noopMs);
    const stageMedians = Object.fromEntries(
      (Object.keys(noopStages[0] ?? {}) as Array<keyof StageTimes>).map((k) => [k, median(noopStages.map((s) => s[k]))]),
    ) as Record<keyof StageTimes, number>;
    const serveRssMB = server.memory().rssBytes / 1e6;

    // --- 3. Throughput ---
    log(`throughput: reapi serve (in-process queue, --concurrency ${conc}), ${tputActions} actions, ${inFlight} in flight`);
    const tServe = await throughput('serve', server.address, tputActions, inFlight, { serve: server.pid }, [server.httpPort], conc);
    c.close();
    await server.stop();

    log('throughput: fleet (redis, reapi cas, reapi scheduler, reapi worker)');
    const redis: TestRedis = await startRedis();
    cleanup.push(() => redis.stop());
    const procs: ReapiProcess[] = [];
    cleanup.push(async () => {
      for (const p of procs.reverse()) await p.stop().catch(() => p.kill());
    });
    const logLevel = ['--log-level', 'warn'];
    const cas = await startReapi(['cas', '--data-dir', join(tmp, 'fleet-cas'), ...logLevel]);
    procs.push(cas);
    const casAddr = `127.0.0.1:${cas.grpcPort}`;
    const scheduler = await startReapi(['scheduler', '--redis', redis.url, '--cas', casAddr, '--data-dir', join(tmp, 'fleet-sched'), ...logLevel]);
    procs.push(scheduler);
    const startFleetWorker = async (n: number) => {
      const w = await startReapi([
        'worker', '--redis', redis.url, '--cas', casAddr,
        '--data-dir', join(tmp, `fleet-w${n}-data`), '--work-dir', join(tmp, `fleet-w${n}`),
        '--concurrency', String(conc), ...logLevel,
      ]);
      procs.push(w);
      return w;
    };
    const w1 = await startFleetWorker(1);
    const schedAddr = `127.0.0.1:${scheduler.grpcPort}`;
    const fleetPids = (ws: ReapiProcess[]) => ({
      scheduler: scheduler.child.pid!,
      cas: cas.child.pid!,
      ...Object.fromEntries(ws.map((w, i) => [`worker${i + 1}`, w.child.pid!])),
    });
    log(`throughput: fleet with 1 worker (--concurrency ${conc})`);
    const tFleet1 = await throughput('fleet1', schedAddr, tputActions, inFlight, fleetPids([w1]), [w1.httpPort], conc);
    const w2 = await startFleetWorker(2);
    log(`throughput: fleet with 2 workers (--concurrency ${conc} each)`);
    const tFleet2 = await throughput('fleet2', schedAddr, tputActions, inFlight, fleetPids([w1, w2]), [w1.httpPort, w2.httpPort], 2 * conc);
    for (const p of procs.splice(0).reverse()) await p.stop();
    await redis.stop();

    // --- 4. Bazel ---
    let bz: BazelResults | undefined;
    if (withBazel) bz = await bazelSection(tmp, bazelReps, opts.serverNodeArgs);
    else log('bazel: skipped (--no-bazel or bazel not installed)');

    // --- Report ---
    const noopRatio = noopS.p50 / bwrapS.p50;
    const ms = (s: Stats) => `${fmtNum(s.p50, 1)} ms`;
    const p95 = (s: Stats) => `p95 ${fmtNum(s.p95, 1)} ms`;
    const targets: Record<string, ReturnType<typeof below>> = {
      noopLatency: below(noopRatio, TARGET_NOOP_RATIO, `< ${TARGET_NOOP_RATIO}x bwrap`),
    };
    const rows: Row[] = [
      { name: `Baselines, ${baselineRuns} sequential runs interleaved with the no-op Executes (median)`, value: '' },
      { name: "  spawn('true')", value: ms(spawnS), ratio: `${fmtNum(spawnS.p50 / bwrapS.p50, 2)}x`, note: p95(spawnS) },
      { name: '  raw bwrap --unshare-all ... true', value: ms(bwrapS), ratio: '1.00x', note: p95(bwrapS) },
      { name: '  BwrapRunner.run(/bin/true), in-process', value: ms(runnerS), ratio: `${fmtNum(runnerS.p50 / bwrapS.p50, 2)}x`, note: `${p95(runnerS)}; setpriv+cgroups+chown+cleanup` },
      { name: `No-op action, Execute to done, skip_cache_lookup, ${noopRuns} sequential, reapi serve`, value: '' },
      { name: '  latency', value: ms(noopS), ratio: `${fmtNum(noopRatio, 2)}x`, target: targets.noopLatency, note: `${p95(noopS)}; serve cpu ${fmtNum((noopServerCpu / noopRuns) * 1000, 1)} ms/action (node process only), rss ${fmtNum(serveRssMB, 0)} MB` },
      { name: '  worker_start -> worker_completed', value: `${fmtNum(median(noopWorkerMs), 1)} ms`, ratio: `${fmtNum(median(noopWorkerMs) / bwrapS.p50, 2)}x` },
      {
        name: '  stage medians (ms)',
        value: '',
        ratio: ' ',
        note: (Object.entries(stageMedians) as Array<[string, number]>).map(([k, v]) => `${k} ${fmtNum(v, 0)}`).join(', '),
      },
      { name: `Throughput, ${tputActions} distinct sh -c 'echo N', ${inFlight} in flight, --concurrency ${conc} per worker`, value: '' },
      { name: '  reapi serve (in-process queue)', value: `${fmtNum(tServe.actionsPerSecond, 1)} /s`, note: cpuNote(tServe) },
      { name: '  fleet, 1 worker', value: `${fmtNum(tFleet1.actionsPerSecond, 1)} /s`, ratio: `${fmtNum(tFleet1.actionsPerSecond / tServe.actionsPerSecond, 2)}x`, note: cpuNote(tFleet1) },
      { name: '  fleet, 2 workers', value: `${fmtNum(tFleet2.actionsPerSecond, 1)} /s`, ratio: `${fmtNum(tFleet2.actionsPerSecond / tServe.actionsPerSecond, 2)}x`, note: cpuNote(tFleet2) },
      { name: '  (sequential raw bwrap rate, for scale)', value: `${fmtNum(1000 / bwrapS.p50, 1)} /s` },
    ];
    if (bz) {
      const med = (runs: BazelRun[]) => median(runs.map((r) => r.ms));
      const note = (runs: BazelRun[]) => `${runs.map((r) => fmtNum(r.ms / 1000, 2)).join(' / ')} s; crit ${runs.map((r) => r.criticalPath ?? '?').join('/')} s; ${runs.at(-1)?.summary ?? ''}`;
      const coldRatio = med(bz.coldRemote) / med(bz.coldLocal);
      const warmRatio = med(bz.warmRemote) / med(bz.warmDisk);
      targets.bazelCold = below(coldRatio, TARGET_COLD_RATIO, `< ${TARGET_COLD_RATIO}x local`);
      targets.bazelWarm = below(warmRatio, TARGET_WARM_RATIO, `< ${TARGET_WARM_RATIO}x disk`);
      rows.push(
        { name: `Bazel 4.2.3 bazel test //... (test/e2e/workspace), median of ${bazelReps}, server up before`, value: '' },
        { name: `  cold local (${bz.localStrategy})`, value: `${fmtNum(med(bz.coldLocal) / 1000, 2)} s`, ratio: '1.00x', note: note(bz.coldLocal) + (bz.localStrategyNote ? `; ${bz.localStrategyNote}` : '') },
        { name: '  cold remote (--remote_executor, reapi serve)', value: `${fmtNum(med(bz.coldRemote) / 1000, 2)} s`, ratio: `${fmtNum(coldRatio, 2)}x`, target: targets.bazelCold, note: `${note(bz.coldRemote)}; srv cpu ${bz.coldRemoteServerCpuSeconds.map((s) => fmtNum(s, 1)).join('/')} s; stage means ms: ${fmtStages(bz.coldRemoteStages.at(-1) ?? {})}` },
        { name: '  warm local (clean + --disk_cache)', value: `${fmtNum(med(bz.warmDisk) / 1000, 2)} s`, ratio: '1.00x', note: `${note(bz.warmDisk)}; fill ${fmtNum(bz.diskCacheFill.ms / 1000, 2)} s` },
        { name: '  warm remote (clean + --remote_cache)', value: `${fmtNum(med(bz.warmRemote) / 1000, 2)} s`, ratio: `${fmtNum(warmRatio, 2)}x`, target: targets.bazelWarm, note: `${note(bz.warmRemote)}; first (untimed) ${fmtNum(bz.remoteFirstRebuild.ms / 1000, 2)} s` },
      );
    }
    const totalSeconds = (performance.now() - started) / 1000;
    const results = {
      benchmark: 'execution',
      date: new Date().toISOString(),
      quick,
      environment: env,
      serverNodeArgs: opts.serverNodeArgs ?? [],
      totalSeconds,
      baselines: { spawnTrue: { ...spawnS, samplesMs: spawnMs }, rawBwrap: { ...bwrapS, samplesMs: bwrapMs }, bwrapRunner: { ...runnerS, samplesMs: runnerMs } },
      noop: {
        runs: noopRuns,
        ...noopS,
        ratioToRawBwrap: noopRatio,
        samplesMs: noopMs,
        workerMsMedian: median(noopWorkerMs),
        stageMediansMs: stageMedians,
        stagesFromMetrics: noopMetricStages,
        serverCpuSecondsPerAction: noopServerCpu / noopRuns,
        serveRssMB,
      },
      throughput: { workerConcurrency: conc, serve: tServe, fleet1Worker: tFleet1, fleet2Workers: tFleet2 },
      bazel: bz ?? null,
      targets,
    };
    const file = await saveResults('execution', results);
    rows.push({ name: `total benchmark time ${fmtNum(totalSeconds, 0)} s`, value: '' });
    return { rows, results, file };
  } finally {
    for (const f of cleanup.reverse()) await f().catch(() => {});
    if (opts.keep) log(`kept ${tmp}`);
    else await removeDir(tmp);
  }
}

export async function main(args: string[] = []): Promise<void> {
  const nodeArgs = args.find((a) => a.startsWith('--server-node-args='))?.slice('--server-node-args='.length) ?? process.env.BENCH_SERVER_NODE_ARGS;
  const conc = args.find((a) => a.startsWith('--worker-concurrency='))?.slice('--worker-concurrency='.length);
  const { rows, file } = await runExecutionBench({
    quick: args.includes('--quick'),
    keep: args.includes('--keep'),
    bazel: !args.includes('--no-bazel'),
    workerConcurrency: conc ? Number(conc) : undefined,
    serverNodeArgs: nodeArgs ? nodeArgs.split(/\s+/).filter(Boolean) : undefined,
  });
  process.stdout.write(`\n${renderTable('reapi execution benchmark', rows)}\nresults: ${file}\n`);
}
