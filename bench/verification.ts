// Verification benchmark: what `reapi serve --verify-rate R` costs (R = 0, 0.1, 1; that fraction
// of executed actions runs a second time under variations before its result may be cached), on
// the same workload in the same run, as ratios against rate 0:
//   1. synthetic: distinct short actions (`sh -c 'echo "$N"; sha256sum input'`, a small input file,
//      distinct by the env var N) through gRPC Execute with bounded concurrency: wall time,
//      actions/s, median/p95 Execute latency, and reapi_actions_executed_total /
//      reapi_verifications_total from /metrics (how many really ran twice);
//   2. real Bazel (bazel-bootstrap 4.2.3): a cold `bazel build //...` of test/e2e/workspace with
//      --remote_executor, fresh output base with its server up (`bazel info`) before timing.
// Every configuration gets a fresh `reapi serve` (fresh data dir), so no cache helps. Synthetic: the
// three servers are up together and batches of actions alternate between them. Bazel: repetitions
// alternate the order of the rates (0, 0.1, 1 then 1, 0.1, 0) so drifting load hits all alike; the
// table shows medians. Prints a table with ratios and saves JSON under bench/results/.
//
//   npm run bench -- verification [--quick] [--keep] [--no-bazel] [--reps=N] [--actions=N]
//                                 [--batch=N] [--in-flight=N] [--worker-concurrency=N]
//                                 [--server-node-args="..."]
import { chmod } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { bazelAvailable, createBazel, parseProcessSummary, remoteFlags, type Bazel } from '../test/e2e/bazel.ts';
import { connectExec, execute, prepareAction, uploadBlobs, type ActionSpec, type ExecClients, type PreparedAction } from '../test/support/execution.ts';
import {
  environment,
  fmtNum,
  log,
  mapLimit,
  MiB,
  percentile,
  procCpuSeconds,
  procCpuSecondsWithChildren,
  pseudoRandomBytes,
  removeDir,
  renderTable,
  saveResults,
  scratchDir,
  scrapeMetrics,
  startServer,
  type Row,
  type ServerHandle,
} from './lib.ts';

export interface VerificationBenchOptions {
  quick?: boolean;
  keep?: boolean;
  /** Skip the Bazel section. */
  bazel?: boolean;
  /** Repetitions of each configuration (default 2; 1 with --quick); the table shows medians (--reps=3 is steadier on a busy machine). */
  reps?: number;
  /** Synthetic actions per configuration (default 100; 40 with --quick). */
  actions?: number;
  /** Executes in flight in the synthetic section (default 4). */
  inFlight?: number;
  /** Synthetic actions per batch; batches alternate between the rates (default 25). */
  batch?: number;
  /** `reapi serve --concurrency` (default: number of CPUs, the server's own default). */
  workerConcurrency?: number;
  serverNodeArgs?: string[];
}

const RATES = [0, 0.1, 1] as const;
const INPUT_BYTES = 4096;
const WARMUP = 4;

/** The true median: the mean of the two middle values for an even count (2 reps: their mean). */
function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

// ---------------------------------------------------------------------------------------------
// Metrics

interface Counts {
  /** reapi_actions_executed_total, all outcomes: every run, first and second. */
  executed: number;
  /** reapi_verifications_total by result (agreed, differed, skipped, inconclusive). */
  verifications: Record<string, number>;
  /** Sum and count of reapi_execution_stage_duration_seconds by stage (one sample per run). */
  stages: Record<string, { sum: number; count: number }>;
}

async function counts(httpPort: number): Promise<Counts> {
  const m = await scrapeMetrics(httpPort, 'reapi_');
  const out: Counts = { executed: 0, verifications: {}, stages: {} };
  for (const [k, v] of Object.entries(m)) {
    if (k.startsWith('reapi_actions_executed_total')) out.executed += v;
    const ver = /^reapi_verifications_total\{result="([^"]+)"\}$/.exec(k);
    if (ver) out.verifications[ver[1]!] = v;
    const st = /^reapi_execution_stage_duration_seconds_(sum|count)\{stage="([^"]+)"\}$/.exec(k);
    if (st) {
      const e = (out.stages[st[2]!] ??= { sum: 0, count: 0 });
      if (st[1] === 'sum') e.sum = v;
      else e.count = v;
    }
  }
  return out;
}

interface CountsDiff {
  executed: number;
  verifications: Record<string, number>;
  /** Verifications that really ran a second time (agreed + differed + inconclusive). */
  secondRuns: number;
  /** Mean ms per run of each stage. */
  stageMeanMs: Record<string, number>;
  /** Seconds workers spent on runs (input_fetch + execution + output_upload, summed over runs). */
  workerSeconds: number;
}

function diffCounts(a: Counts, b: Counts): CountsDiff {
  const verifications: Record<string, number> = {};
  for (const [k, v] of Object.entries(b.verifications)) {
    const d = v - (a.verifications[k] ?? 0);
    if (d) verifications[k] = d;
  }
  const stageMeanMs: Record<string, number> = {};
  let workerSeconds = 0;
  for (const [k, v] of Object.entries(b.stages)) {
    const count = v.count - (a.stages[k]?.count ?? 0);
    const sum = v.sum - (a.stages[k]?.sum ?? 0);
    if (count) stageMeanMs[k] = (sum / count) * 1000;
    if (k !== 'queued') workerSeconds += sum;
  }
  const secondRuns = (verifications.agreed ?? 0) + (verifications.differed ?? 0) + (verifications.inconclusive ?? 0);
  return { executed: b.executed - a.executed, verifications, secondRuns, stageMeanMs, workerSeconds };
}

function fmtVerifications(v: Record<string, number>): string {
  const parts = Object.entries(v).map(([k, n]) => `${n} ${k}`);
  return parts.length ? parts.join(', ') : 'none';
}

// ---------------------------------------------------------------------------------------------
// 1. Synthetic workload

interface SyntheticRun {
  rate: number;
  rep: number;
  actions: number;
  seconds: number;
  actionsPerSecond: number;
  latencyP50Ms: number;
  latencyP95Ms: number;
  /** Server CPU (node process only) and server + sandboxes (waited-for children) during the phase. */
  serverCpuSeconds: number;
  serverAndSandboxCpuSeconds: number;
  /** Responses carrying a message (e.g. a nondeterminism warning). */
  warnings: number;
  counts: CountsDiff;
}

function syntheticSpecs(count: number, prefix: string): ActionSpec[] {
  const input = pseudoRandomBytes(INPUT_BYTES, 7);
  return Array.from({ length: count }, (_, i) => ({
    argv: ['/bin/sh', '-c', 'echo "$N"; sha256sum input'],
    env: { N: `${prefix}${i}`, PATH: '/usr/bin:/bin' },
    inputs: { input },
    // The same salt on every server: each configuration runs exactly the same action digests.
    salt: 'reapi-bench-verification',
  }));
}

async function executeOk(c: ExecClients, p: PreparedAction): Promise<{ ms: number; warned: boolean }> {
  const t0 = performance.now();
  const outcome = await execute(c, p.actionDigest, { deadlineMs: 300_000 });
  const ms = performance.now() - t0;
  const st = outcome.response.status;
  if (st && st.code !== 0) throw new Error(`Execute answered status ${st.code}: ${st.message}`);
  const result = outcome.response.result;
  if (!result) throw new Error('ExecuteResponse without a result');
  if (result.exit_code !== 0) throw new Error(`action exited with ${result.exit_code}`);
  if (outcome.response.cached_result) throw new Error('a cache hit: the workload must execute every action');
  return { ms, warned: Boolean(outcome.response.message) };
}

/**
 * One repetition of the synthetic workload at every rate. Each rate gets its own fresh server, all
 * three are up at once, and the workload runs in batches that alternate between them (only one
 * server busy at a time, the rate order rotating per batch), so load drifting on the machine hits
 * every rate alike. Wall time per rate is the sum of its batches.
 */
async function syntheticRep(tmp: string, rep: number, n: number, batch: number, inFlight: number, conc: number, nodeArgs?: string[]): Promise<SyntheticRun[]> {
  const warm = syntheticSpecs(WARMUP, 'warmup-').map((s) => prepareAction(s));
  const timed = syntheticSpecs(n, '').map((s) => prepareAction(s));
  const blobs = new Map<string, Buffer>();
  for (const p of [...warm, ...timed]) for (const [h, d] of p.blobs) blobs.set(h, d);
  const sides: Array<{ rate: number; server: ServerHandle; c: ExecClients }> = [];
  try {
    for (const rate of RATES) {
      const server = await startServer({
        dataDir: join(tmp, `synthetic-${rate}-${rep}`),
        nodeArgs,
        args: ['--verify-rate', String(rate), '--concurrency', String(conc)],
      });
      const c = connectExec(server.address, '');
      sides.push({ rate, server, c });
      await uploadBlobs(c, blobs.values());
      // Warm up (connection, JIT, sandbox) with distinct actions; not timed, not counted.
      await mapLimit(warm, inFlight, (p) => executeOk(c, p));
    }
    const acc = sides.map((side) => ({ side, seconds: 0, cpu: 0, cpuAll: 0, lat: [] as number[], warnings: 0 }));
    const before = await Promise.all(sides.map((x) => counts(x.server.httpPort)));
    const batches = Math.ceil(n / batch);
    for (let b = 0; b < batches; b++) {
      const slice = timed.slice(b * batch, (b + 1) * batch);
      for (let k = 0; k < acc.length; k++) {
        const a = acc[(k + b + rep) % acc.length]!;
        const pid = a.side.server.pid;
        const cpu0 = procCpuSeconds(pid);
        const cpuAll0 = procCpuSecondsWithChildren(pid);
        const t0 = performance.now();
        const res = await mapLimit(slice, inFlight, (p) => executeOk(a.side.c, p));
        a.seconds += (performance.now() - t0) / 1000;
        a.cpu += procCpuSeconds(pid) - cpu0;
        a.cpuAll += procCpuSecondsWithChildren(pid) - cpuAll0;
        for (const r of res) {
          a.lat.push(r.ms);
          if (r.warned) a.warnings++;
        }
      }
    }
    const after = await Promise.all(sides.map((x) => counts(x.server.httpPort)));
    return acc.map((a, i) => ({
      rate: a.side.rate,
      rep,
      actions: n,
      seconds: a.seconds,
      actionsPerSecond: n / a.seconds,
      latencyP50Ms: percentile(a.lat, 50),
      latencyP95Ms: percentile(a.lat, 95),
      serverCpuSeconds: a.cpu,
      serverAndSandboxCpuSeconds: a.cpuAll,
      warnings: a.warnings,
      counts: diffCounts(before[i]!, after[i]!),
    }));
  } finally {
    for (const x of sides) {
      x.c.close();
      await x.server.stop();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// 2. Bazel

interface BazelRun {
  rate: number;
  rep: number;
  ms: number;
  summary: string;
  remoteSpawns: number;
  criticalPath?: string;
  serverAndSandboxCpuSeconds: number;
  counts: CountsDiff;
}

async function bazelRun(tmp: string, rate: number, rep: number, nodeArgs?: string[]): Promise<BazelRun> {
  let server: ServerHandle | undefined;
  let bazel: Bazel | undefined;
  try {
    server = await startServer({ dataDir: join(tmp, `bazel-${rate}-${rep}`), nodeArgs, args: ['--verify-rate', String(rate)] });
    bazel = await createBazel();
    await bazel.info('output_base'); // the Bazel server is up before timing
    const before = await counts(server.httpPort);
    const cpu0 = procCpuSecondsWithChildren(server.pid);
    const r = await bazel.run(['build', '//...', ...remoteFlags(server.address, 'executor')]);
    if (r.code !== 0) throw new Error(`bazel build (verify-rate ${rate}) exited with ${r.code}:\n${r.stderr.slice(-3000)}`);
    const cpu = procCpuSecondsWithChildren(server.pid) - cpu0;
    const diff = diffCounts(before, await counts(server.httpPort));
    const s = parseProcessSummary(r.stderr);
    const crit = /Critical Path: ([\d.]+)s/.exec(r.stderr);
    return {
      rate,
      rep,
      ms: r.durationMs,
      summary: s?.line ?? '?',
      remoteSpawns: s?.remote ?? NaN,
      criticalPath: crit?.[1],
      serverAndSandboxCpuSeconds: cpu,
      counts: diff,
    };
  } finally {
    await bazel?.dispose();
    await server?.stop();
  }
}

// ---------------------------------------------------------------------------------------------

/** Rates in order for repetition `rep`: forward on even reps, backward on odd ones. */
function order(rep: number): number[] {
  return rep % 2 === 0 ? [...RATES] : [...RATES].reverse();
}

export async function runVerificationBench(opts: VerificationBenchOptions = {}): Promise<{ rows: Row[]; results: Record<string, unknown>; file: string }> {
  const quick = opts.quick ?? false;
  const reps = opts.reps ?? (quick ? 1 : 2);
  const n = opts.actions ?? (quick ? 40 : 100);
  const inFlight = opts.inFlight ?? 4;
  const batch = opts.batch ?? 25;
  const conc = opts.workerConcurrency ?? availableParallelism();
  const withBazel = (opts.bazel ?? true) && bazelAvailable();
  const started = performance.now();
  const env = environment();
  if (Number(env.loadavg1) > 0.5) log(`note: load average ${Number(env.loadavg1).toFixed(2)} at start; other work on this machine skews the numbers`);
  const tmp = await scratchDir('reapi-bench-verify-', 512 * MiB);
  // mkdtemp makes it 0700: the sandbox user must traverse it to reach exec roots and work dirs.
  await chmod(tmp, 0o711);
  log(`scratch dir ${tmp}; ${quick ? 'QUICK run' : 'full run'}; ${reps} rep(s) per configuration`);

  try {
    const synthetic: SyntheticRun[] = [];
    for (let rep = 0; rep < reps; rep++) {
      log(`synthetic rep ${rep + 1}/${reps}: ${n} actions per rate in batches of ${batch} alternating between the rates, ${inFlight} in flight, --concurrency ${conc}`);
      for (const r of await syntheticRep(tmp, rep, n, batch, inFlight, conc, opts.serverNodeArgs)) {
        log(`  --verify-rate ${r.rate}: ${fmtNum(r.seconds, 2)} s, ${r.counts.executed} runs, verifications: ${fmtVerifications(r.counts.verifications)}`);
        synthetic.push(r);
      }
    }
    const bazelRuns: BazelRun[] = [];
    let bazelWarmup: BazelRun | undefined;
    if (withBazel) {
      // The first Bazel build on a machine pays for cold page caches (install base, toolchain
      // detection) whatever the rate; one untimed build at rate 0 takes that out of the comparison.
      log('bazel: warm-up build at --verify-rate 0 (untimed)');
      bazelWarmup = await bazelRun(tmp, 0, -1, opts.serverNodeArgs);
      log(`  ${fmtNum(bazelWarmup.ms / 1000, 2)} s (discarded)`);
      for (let rep = 0; rep < reps; rep++) {
        for (const rate of order(rep)) {
          log(`bazel: cold build //... --remote_executor, --verify-rate ${rate}, rep ${rep + 1}/${reps}`);
          const r = await bazelRun(tmp, rate, rep, opts.serverNodeArgs);
          log(`  ${fmtNum(r.ms / 1000, 2)} s, ${r.summary}; ${r.counts.executed} runs, verifications: ${fmtVerifications(r.counts.verifications)}`);
          bazelRuns.push(r);
        }
      }
    } else {
      log('bazel: skipped (--no-bazel or bazel not installed)');
    }

    // --- Report ---
    const ofRate = <T extends { rate: number }>(runs: T[], rate: number) => runs.filter((r) => r.rate === rate);
    const synMed = (rate: number, f: (r: SyntheticRun) => number) => median(ofRate(synthetic, rate).map(f));
    const bzMed = (rate: number, f: (r: BazelRun) => number) => median(ofRate(bazelRuns, rate).map(f));
    const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
    const stageNote = (runs: Array<{ counts: CountsDiff }>) => {
      const last = runs.at(-1)?.counts.stageMeanMs ?? {};
      return ['input_fetch', 'execution', 'output_upload'].filter((k) => last[k] !== undefined).map((k) => `${k} ${fmtNum(last[k], 0)}`).join('/');
    };

    const rows: Row[] = [
      {
        name: `Synthetic: ${n} distinct sh -c 'echo "$N"; sha256sum input' (${INPUT_BYTES / 1024} KiB input), ${inFlight} in flight, --concurrency ${conc}, batches of ${batch} alternating between rates, median of ${reps}`,
        value: '',
      },
    ];
    const synSummary: Record<string, unknown> = {};
    for (const rate of RATES) {
      const runs = ofRate(synthetic, rate);
      const wall = synMed(rate, (r) => r.seconds);
      const ratio = wall / synMed(0, (r) => r.seconds);
      const p50 = synMed(rate, (r) => r.latencyP50Ms);
      const p95 = synMed(rate, (r) => r.latencyP95Ms);
      const aps = synMed(rate, (r) => r.actionsPerSecond);
      const runsTotal = sum(runs.map((r) => r.counts.executed));
      const second = sum(runs.map((r) => r.counts.secondRuns));
      const cpuPerAction = synMed(rate, (r) => (r.serverAndSandboxCpuSeconds / r.actions) * 1000);
      const nodeCpuPerAction = synMed(rate, (r) => (r.serverCpuSeconds / r.actions) * 1000);
      synSummary[String(rate)] = { wallSeconds: wall, ratio, actionsPerSecond: aps, latencyP50Ms: p50, latencyP95Ms: p95, cpuMsPerAction: cpuPerAction, serverNodeCpuMsPerAction: nodeCpuPerAction, runs: runsTotal, secondRuns: second };
      rows.push(
        {
          name: `  --verify-rate ${rate}: wall`,
          value: `${fmtNum(wall, 2)} s`,
          ratio: `${fmtNum(ratio, 2)}x`,
          note: `${fmtNum(aps, 1)} actions/s (${fmtNum(aps / synMed(0, (r) => r.actionsPerSecond), 2)}x); per rep ${runs.map((r) => fmtNum(r.seconds, 2)).join(' / ')} s`,
        },
        {
          name: `    Execute latency p50 / p95`,
          value: `${fmtNum(p50, 0)} ms`,
          ratio: `${fmtNum(p50 / synMed(0, (r) => r.latencyP50Ms), 2)}x`,
          note: `p95 ${fmtNum(p95, 0)} ms (${fmtNum(p95 / synMed(0, (r) => r.latencyP95Ms), 2)}x)`,
        },
        {
          name: `    runs / actions (all reps)`,
          value: `${runsTotal}/${n * runs.length}`,
          ratio: `${fmtNum(runsTotal / (n * runs.length), 2)}x`,
          note: `verifications ${fmtVerifications(Object.fromEntries(Object.keys(runs[0]?.counts.verifications ?? {}).map((k) => [k, sum(runs.map((r) => r.counts.verifications[k] ?? 0))])))}; cpu ms/action: serve ${fmtNum(nodeCpuPerAction, 0)} + sandboxes ${fmtNum(cpuPerAction - nodeCpuPerAction, 0)}; per-run stage means ms ${stageNote(runs)}${sum(runs.map((r) => r.warnings)) ? `; ${sum(runs.map((r) => r.warnings))} warnings` : ''}`,
        },
      );
    }

    const bzSummary: Record<string, unknown> = {};
    if (bazelRuns.length) {
      rows.push({ name: `Bazel 4.2.3 cold build //... (test/e2e/workspace), --remote_executor, fresh serve + output base, median of ${reps}`, value: '' });
      for (const rate of RATES) {
        const runs = ofRate(bazelRuns, rate);
        const wall = bzMed(rate, (r) => r.ms) / 1000;
        const ratio = wall / (bzMed(0, (r) => r.ms) / 1000);
        const spawns = runs[0]?.remoteSpawns ?? NaN;
        const runsTotal = sum(runs.map((r) => r.counts.executed));
        const second = sum(runs.map((r) => r.counts.secondRuns));
        const cpu = bzMed(rate, (r) => r.serverAndSandboxCpuSeconds);
        const crit = bzMed(rate, (r) => Number(r.criticalPath));
        const work = bzMed(rate, (r) => r.counts.workerSeconds);
        const work0 = bzMed(0, (r) => r.counts.workerSeconds);
        bzSummary[String(rate)] = { wallSeconds: wall, ratio, criticalPathSeconds: crit, workerSeconds: work, workerSecondsRatio: work / work0, remoteSpawns: spawns, runs: runsTotal, secondRuns: second, serverAndSandboxCpuSeconds: cpu };
        rows.push({
          name: `  --verify-rate ${rate}`,
          value: `${fmtNum(wall, 2)} s`,
          ratio: `${fmtNum(ratio, 2)}x`,
          note: `per rep ${runs.map((r) => fmtNum(r.ms / 1000, 2)).join(' / ')} s; crit path ${fmtNum(crit, 2)} s (${fmtNum(crit / bzMed(0, (r) => Number(r.criticalPath)), 2)}x); worker time ${fmtNum(work, 2)} s (${fmtNum(work / work0, 2)}x); ${spawns} remote spawns, ${runsTotal} runs in ${runs.length} builds (${second} second runs); serve+sandbox cpu ${fmtNum(cpu, 1)} s`,
        });
      }
    }

    const totalSeconds = (performance.now() - started) / 1000;
    const results = {
      benchmark: 'verification',
      date: new Date().toISOString(),
      quick,
      environment: env,
      serverNodeArgs: opts.serverNodeArgs ?? [],
      totalSeconds,
      config: { rates: RATES, reps, actions: n, batch, inFlight, workerConcurrency: conc, inputBytes: INPUT_BYTES },
      synthetic: { summary: synSummary, runs: synthetic },
      bazel: withBazel ? { summary: bzSummary, warmup: bazelWarmup, runs: bazelRuns } : null,
    };
    const file = await saveResults('verification', results);
    rows.push({ name: `total benchmark time ${fmtNum(totalSeconds, 0)} s`, value: '' });
    return { rows, results, file };
  } finally {
    if (opts.keep) log(`kept ${tmp}`);
    else await removeDir(tmp);
  }
}

export async function main(args: string[] = []): Promise<void> {
  const flag = (name: string) => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
  const nodeArgs = flag('server-node-args') ?? process.env.BENCH_SERVER_NODE_ARGS;
  const num = (name: string) => {
    const v = flag(name);
    return v === undefined ? undefined : Number(v);
  };
  const { rows, file } = await runVerificationBench({
    quick: args.includes('--quick'),
    keep: args.includes('--keep'),
    bazel: !args.includes('--no-bazel'),
    reps: num('reps'),
    actions: num('actions'),
    inFlight: num('in-flight'),
    batch: num('batch'),
    workerConcurrency: num('worker-concurrency'),
    serverNodeArgs: nodeArgs ? nodeArgs.split(/\s+/).filter(Boolean) : undefined,
  });
  process.stdout.write(`\n${renderTable('reapi verification benchmark (--verify-rate 0 / 0.1 / 1)', rows)}\nresults: ${file}\n`);
}
