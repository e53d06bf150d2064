// Docker benchmark: per-action overhead of the DockerRunner next to the BwrapRunner's, same run,
// against a private dockerd (overlay2, --bridge=none, --iptables=false) with reapi-busybox
// imported locally (test/support/dockerd.ts):
//   1. runner level, a no-op action (`true`): BwrapRunner; DockerRunner taking a warm container
//      (created and started ahead of time: the common case once an image is in use); DockerRunner
//      creating its own container (verification runs, first action of an image); back-to-back
//      runs (warm containers are used up faster than the engine starts new ones); and the
//      `docker run --rm` CLI for reference;
//   2. end to end: Execute of a no-op through `reapi serve` (in process), with and without
//      platform container-image.
// Prints a table and saves JSON under bench/results/.
//
//   npm run bench -- docker [--quick]
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { startServe } from '../cli/roles.ts';
import { parseConfig } from '../common/config.ts';
import { silentLogger } from '../common/logger.ts';
import { Metrics } from '../common/metrics.ts';
import type { RunOutcome, RunSpec, Runner } from '../execution/runner.ts';
import { BwrapRunner } from '../worker/runners/bwrap-runner.ts';
import { DockerRunner } from '../worker/runners/docker-runner.ts';
import { BUSYBOX_IMAGE, dockerSkipReason, startDockerd, type TestDockerd } from '../test/support/dockerd.ts';
import { connectExec, execute, prepareAction, uploadBlobs } from '../test/support/execution.ts';
import { below, environment, fmtNum, log, percentile, renderTable, saveResults, type Row } from './lib.ts';

const IMAGE = `docker://${BUSYBOX_IMAGE}`;
const TARGET_WARM_P50_MS = 150;
const noLimits = { memoryBytes: 512 * 1024 * 1024, maxProcesses: 256, maxFileBytes: 0 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Series {
  n: number;
  p50: number;
  p90: number;
  min: number;
  max: number;
}

function series(values: number[]): Series {
  return { n: values.length, p50: percentile(values, 50), p90: percentile(values, 90), min: Math.min(...values), max: Math.max(...values) };
}

async function timeRuns(n: number, base: string, runner: Runner, before?: () => Promise<void>): Promise<Series> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const root = await mkdtemp(join(base, 'er-'));
    await before?.();
    const spec: RunSpec = { execRoot: root, argv: ['true'], env: { PATH: '/usr/bin:/bin' }, workingDirectory: '', timeoutMs: 60_000, limits: noLimits, maxOutputBytes: 1 << 20 };
    const t0 = performance.now();
    const o: RunOutcome = await runner.run(spec, new AbortController().signal);
    times.push(performance.now() - t0);
    if (o.exitCode !== 0 || o.failure) throw new Error(`${runner.name} no-op failed: ${JSON.stringify(o.failure)} ${o.stderr.toString()}`);
    await rm(root, { recursive: true, force: true });
  }
  return series(times);
}

export async function runDockerBench(opts: { quick?: boolean } = {}): Promise<{ rows: Row[]; file: string }> {
  const skip = dockerSkipReason();
  if (skip) throw new Error(`docker benchmark cannot run: ${skip}`);
  const n = opts.quick ? 10 : 40;
  const nCold = opts.quick ? 5 : 15;
  const nCli = opts.quick ? 3 : 8;
  log('starting a private dockerd and importing reapi-busybox');
  const dockerd: TestDockerd = await startDockerd();
  const base = await mkdtemp(join(tmpdir(), 'reapi-bench-docker-'));
  await chmod(base, 0o755);
  const results: Record<string, unknown> = { environment: environment(), quick: !!opts.quick };
  const rows: Row[] = [];
  try {
    // Warm up the engine and the page cache.
    const warmup = new DockerRunner({ host: dockerd.host, stateDir: join(base, 'state-warmup'), warmContainers: 0 });
    await timeRuns(2, base, warmup.forImage(IMAGE));
    await warmup.dispose();

    log('runner level: bwrap');
    const bwrap = new BwrapRunner();
    await bwrap.ready();
    await timeRuns(3, base, bwrap);
    const bw = await timeRuns(n, base, bwrap);
    await bwrap.dispose();

    log('runner level: docker, warm container');
    const warmRunner = new DockerRunner({ host: dockerd.host, stateDir: join(base, 'state-warm'), warmContainers: 2 });
    const warmImage = warmRunner.forImage(IMAGE);
    await timeRuns(1, base, warmImage);
    const waitWarm = async () => {
      for (let i = 0; i < 600 && warmRunner.warmReady < 1; i++) await sleep(20);
    };
    const before = { ...warmRunner.counts };
    const warm = await timeRuns(n, base, warmImage, waitWarm);
    const warmHits = warmRunner.counts.warm - before.warm;
    log('runner level: docker, back to back');
    await waitWarm();
    await sleep(500);
    const b2bBefore = { ...warmRunner.counts };
    const b2b = await timeRuns(n, base, warmImage);
    const b2bHits = warmRunner.counts.warm - b2bBefore.warm;
    await warmRunner.dispose();

    log('runner level: docker, own container per run');
    const coldRunner = new DockerRunner({ host: dockerd.host, stateDir: join(base, 'state-cold'), warmContainers: 0 });
    const cold = await timeRuns(nCold, base, coldRunner.forImage(IMAGE));
    await coldRunner.dispose();

    log('docker run --rm (CLI)');
    const cliTimes: number[] = [];
    for (let i = 0; i < nCli; i++) {
      const t0 = performance.now();
      await promisify(execFile)('docker', ['run', '--rm', '--network', 'none', BUSYBOX_IMAGE, 'true'], { env: dockerd.env });
      cliTimes.push(performance.now() - t0);
    }
    const cli = series(cliTimes);

    log('end to end: Execute through reapi serve');
    const e2e = await executeBench(dockerd, base, opts.quick ? 8 : 20);

    results.runner = { bwrap: bw, dockerWarm: { ...warm, warmHits }, dockerBackToBack: { ...b2b, warmHits: b2bHits }, dockerCold: cold, dockerCli: cli };
    results.execute = e2e;
    const ms = (s: Series) => `${fmtNum(s.p50)} ms`;
    const note = (s: Series) => `p90 ${fmtNum(s.p90)}, min ${fmtNum(s.min)}, max ${fmtNum(s.max)}, n=${s.n}`;
    const ratio = (s: Series) => `${fmtNum(s.p50 / bw.p50)}x bwrap`;
    rows.push(
      { name: 'No-op action, runner level (p50)', value: '' },
      { name: '  bwrap (BwrapRunner)', value: ms(bw), note: note(bw) },
      { name: '  docker, warm container', value: ms(warm), ratio: ratio(warm), target: below(warm.p50, TARGET_WARM_P50_MS, `< ${TARGET_WARM_P50_MS} ms`), note: `${note(warm)}, ${warmHits}/${warm.n} warm` },
      { name: '  docker, back to back', value: ms(b2b), ratio: ratio(b2b), note: `${note(b2b)}, ${b2bHits}/${b2b.n} warm` },
      { name: '  docker, own container', value: ms(cold), ratio: ratio(cold), note: note(cold) },
      { name: '  docker run --rm (CLI)', value: ms(cli), ratio: ratio(cli), note: note(cli) },
      { name: 'No-op Execute through reapi serve (p50)', value: '' },
      { name: '  bwrap', value: ms(e2e.bwrap), note: note(e2e.bwrap) },
      { name: '  docker (paced: warm)', value: ms(e2e.docker), ratio: `${fmtNum(e2e.docker.p50 / e2e.bwrap.p50)}x bwrap`, note: note(e2e.docker) },
    );
  } finally {
    await dockerd.stop();
    await rm(base, { recursive: true, force: true });
  }
  const file = await saveResults('docker', results);
  return { rows, file };
}

async function executeBench(dockerd: TestDockerd, base: string, n: number): Promise<{ bwrap: Series; docker: Series }> {
  const dataDir = join(base, 'serve-data');
  const workDir = join(base, 'serve-work');
  await mkdir(dataDir);
  await mkdir(workDir, { mode: 0o755 });
  const config = parseConfig({
    port: 0,
    httpPort: 0,
    listen: '127.0.0.1',
    dataDir,
    logLevel: 'silent',
    worker: { concurrency: 2, workDir, docker: { enabled: true, host: dockerd.host } },
  });
  const server = await startServe(config, silentLogger, new Metrics({ defaultMetrics: false }));
  const c = connectExec(`127.0.0.1:${server.grpcPort}`, 'main');
  try {
    const measure = async (platform: Record<string, string> | undefined, gapMs: number): Promise<Series> => {
      const times: number[] = [];
      for (let i = 0; i < n + 2; i++) {
        const a = prepareAction({ argv: ['true'], env: { PATH: '/usr/bin:/bin' }, ...(platform ? { platform } : {}) });
        await uploadBlobs(c, a.blobs.values());
        if (gapMs) await sleep(gapMs);
        const t0 = performance.now();
        const outcome = await execute(c, a.actionDigest, { skipCacheLookup: true });
        if (outcome.response.status?.code || outcome.response.result?.exit_code) throw new Error(`no-op Execute failed: ${JSON.stringify(outcome.response.status)}`);
        if (i >= 2) times.push(performance.now() - t0);
      }
      return series(times);
    };
    const bwrap = await measure(undefined, 0);
    // Paced so that a started container is waiting, as it is for a build's actions once the engine
    // has caught up.
    const docker = await measure({ 'container-image': IMAGE }, 1500);
    return { bwrap, docker };
  } finally {
    c.close();
    await server.close();
  }
}

export async function main(args: string[] = []): Promise<void> {
  const { rows, file } = await runDockerBench({ quick: args.includes('--quick') });
  process.stdout.write(`\n${renderTable('reapi docker benchmark', rows)}\nresults: ${file}\n`);
}
