// The fleet with real processes: redis-server, `reapi cas`, `reapi scheduler` and two `reapi
// worker`s (each with its own work dir), and real Bazel executing remotely through the scheduler.
// Then the failures a fleet must ride out: a worker SIGKILLed mid-build (its jobs are delivered
// again once their BullMQ lock expires) and the scheduler SIGKILLed mid-build and replaced on the
// same port (Bazel's retries reach the new one, which finds the operations in Redis).
// Needs bazel, redis-server, bwrap and root (the workers' sandbox).
// Run: node --import tsx --test test/e2e/fleet.test.ts
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm, rmdir } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { parseConfig } from '../../common/config.ts';
import { defaultWorkDir } from '../../worker/worker.ts';
import { Redis } from 'ioredis';
import { WORKSPACE_SPAWNS, bazelAvailable, createBazel, parseProcessSummary, type Bazel, type RunResult } from './bazel.ts';
import { httpGet, metricValue, startReapi, type ReapiProcess } from '../support/reapi-process.ts';
import { redisSkip, startRedis, type TestRedis } from '../support/redis.ts';
import { sandboxSkip } from '../support/sandbox.ts';

const skip = !bazelAvailable() ? 'bazel is not installed' : redisSkip || sandboxSkip;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('a fleet (redis, cas, scheduler, 2 workers) running real Bazel builds', { skip }, () => {
  let redis: TestRedis;
  let redisClient: Redis;
  let dirs: string[] = [];
  let cas: ReapiProcess;
  let scheduler: ReapiProcess;
  let workers: ReapiProcess[] = [];
  const killed: number[] = [];
  let bazel: Bazel;
  let schedulerPort: number;

  const tmp = async (prefix: string): Promise<string> => {
    const d = await mkdtemp(join(tmpdir(), prefix));
    dirs.push(d);
    return d;
  };

  const startScheduler = (port?: number): Promise<ReapiProcess> =>
    startReapi(['scheduler', '--redis', redis.url, '--cas', `127.0.0.1:${cas.grpcPort}`], port === undefined ? {} : { port });

  before(async () => {
    redis = await startRedis();
    redisClient = new Redis(redis.url);
    cas = await startReapi(['cas', '--data-dir', await tmp('reapi-fleet-cas-')]);
    scheduler = await startScheduler();
    schedulerPort = scheduler.grpcPort;
    // As the README's recipe starts them: two workers in one directory, so with one data dir and
    // no --work-dir (each claims a default work dir of its own).
    const dataDir = await tmp('reapi-fleet-workers-');
    for (let i = 0; i < 2; i++) {
      workers.push(await startReapi(['worker', '--redis', redis.url, '--cas', `127.0.0.1:${cas.grpcPort}`, '--data-dir', dataDir, '--concurrency', '2']));
    }
    const base = defaultWorkDir(parseConfig({ dataDir }));
    dirs.push(base, `${base}-2`);
    bazel = await createBazel();
  });

  after(async () => {
    await bazel?.dispose();
    for (const w of workers) await w.stop().catch(() => {});
    await scheduler?.stop().catch(() => {});
    await cas?.stop().catch(() => {});
    redisClient?.disconnect();
    await redis?.stop();
    // The run cgroups of killed workers (r<pid>-N) stay behind; nobody else will sweep them.
    const parents = ['/sys/fs/cgroup/unified/reapi'];
    for (const d of await readdir('/sys/fs/cgroup').catch(() => [] as string[])) parents.push(join('/sys/fs/cgroup', d, 'reapi'));
    for (const p of parents.filter((x) => existsSync(x))) {
      for (const e of await readdir(p).catch(() => [] as string[])) {
        if (killed.some((pid) => e.startsWith(`r${pid}-`))) await rmdir(join(p, e)).catch(() => {});
      }
    }
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  const flags = () => [
    ...bazel.remoteFlags(`grpc://127.0.0.1:${schedulerPort}`, 'executor'),
    '--jobs=8',
  ];

  function logsOnFailure(r: RunResult): string {
    const tail = (p: ReapiProcess | undefined, name: string) => `--- ${name}:\n${p?.logs().split('\n').slice(-15).join('\n') ?? ''}`;
    return [
      `bazel exited with ${r.code}:\n${r.stderr.slice(-4000)}`,
      tail(scheduler, 'scheduler'),
      ...workers.map((w, i) => tail(w, `worker ${i}`)),
    ].join('\n');
  }

  function assertAllRemote(t: TestContext, what: string, r: RunResult): void {
    assert.equal(r.code, 0, logsOnFailure(r));
    const s = parseProcessSummary(r.stderr);
    assert.ok(s, `no process summary:\n${r.stderr.slice(-2000)}`);
    t.diagnostic(`${what}: ${(r.durationMs / 1000).toFixed(1)} s, ${s.line}`);
    assert.equal(s.nonInternal, WORKSPACE_SPAWNS, s.line);
    assert.equal(s.remote, WORKSPACE_SPAWNS, s.line);
    assert.match(r.stdout, /Executed 2 out of 2 tests: 2 tests pass/);
  }

  interface OpInfo {
    key: string;
    stage: string;
    worker: string;
    done: string;
    deliveries: number;
    updatedAt: number;
    mnemonic: string;
  }

  async function operations(): Promise<OpInfo[]> {
    const keys = await redisClient.keys('reapi:op:*');
    return Promise.all(
      keys.map(async (key) => {
        const [stage, worker, done, deliveries, updatedAt, job] = await redisClient.hmget(key, 'stage', 'worker', 'done', 'deliveries', 'updatedAt', 'job');
        let mnemonic = '';
        try {
          mnemonic = (JSON.parse(job ?? '{}') as { requestMetadata?: { mnemonic?: string } }).requestMetadata?.mnemonic ?? '';
        } catch {
          // not JSON: leave it unknown
        }
        return {
          key,
          stage: stage ?? '',
          worker: worker ?? '',
          done: done ?? '',
          deliveries: Number(deliveries ?? 0),
          updatedAt: Number(updatedAt ?? 0),
          mnemonic,
        };
      }),
    );
  }

  /**
   * Poll Redis until an operation updated after `since` is EXECUTING (on `worker`, if given).
   * Compiles, links and tests are preferred: they run long enough (hundreds of ms) to still be
   * running when the kill lands; after 8 s anything will do.
   */
  async function waitForExecuting(since: number, build: Promise<unknown>, worker?: string): Promise<OpInfo | undefined> {
    let finished = false;
    void build.finally(() => (finished = true));
    const deadline = Date.now() + 60_000;
    while (!finished && Date.now() < deadline) {
      const running = (await operations()).filter(
        (o) => o.updatedAt >= since && o.stage === 'EXECUTING' && o.done === '0' && (worker === undefined || o.worker === worker),
      );
      const op = running.find((o) => /^(CppCompile|CppLink|TestRunner)$/.test(o.mnemonic)) ?? (Date.now() - since > 8000 ? running[0] : undefined);
      if (op) return op;
      await sleep(25);
    }
    return undefined;
  }

  test('bazel test //... executes every spawn remotely and passes', async (t) => {
    const r = await bazel.run(['test', '//...', ...flags()]);
    assertAllRemote(t, 'cold build', r);
    const ran = new Set((await operations()).filter((o) => o.done === '1').map((o) => o.worker));
    t.diagnostic(`workers that ran actions: ${[...ran].join(', ')}`);
  });

  test('a worker SIGKILLed mid-build: its jobs are delivered again and the build succeeds', async (t) => {
    await bazel.clean();
    const victim = workers[0]!;
    const victimName = `${hostname()}:${victim.child.pid}`;
    const since = Date.now();
    const build = bazel.run(['test', '//...', ...flags(), '--noremote_accept_cached']);
    const op = await waitForExecuting(since, build, victimName);
    assert.ok(op, `worker ${victimName} never took a job before the build ended`);
    killed.push(victim.child.pid!);
    await victim.kill();
    t.diagnostic(`killed ${victimName} ${Date.now() - since} ms into the build, while it ran ${op.key} (${op.mnemonic})`);
    // What the dead worker left unfinished (its state in Redis cannot change any more by itself).
    const interrupted = (await operations()).filter((o) => o.worker === victimName && o.done === '0');
    const r = await build;
    assertAllRemote(t, 'rebuild with a worker killed', r);
    assert.ok(interrupted.length > 0, 'the kill interrupted at least one job');
    for (const o of interrupted) {
      const [done, deliveries, worker, error] = await redisClient.hmget(o.key, 'done', 'deliveries', 'worker', 'error');
      t.diagnostic(`${o.key} (${o.mnemonic}): done=${done} deliveries=${deliveries} worker=${worker}`);
      assert.equal(done, '1');
      assert.ok(Number(deliveries) >= 2, `${o.key} was delivered again`);
      assert.notEqual(worker, victimName, 'and finished by the other worker');
      assert.equal(error, null, `${o.key} failed: ${error}`);
    }
  });

  test('the scheduler SIGKILLed mid-build and restarted on the same port: the build succeeds', async (t) => {
    await bazel.clean();
    const since = Date.now();
    const build = bazel.run(['test', '//...', ...flags(), '--noremote_accept_cached']);
    const op = await waitForExecuting(since, build);
    assert.ok(op, 'no action was executing before the build ended');
    killed.push(scheduler.child.pid!);
    await scheduler.kill();
    t.diagnostic(`killed the scheduler ${Date.now() - since} ms into the build, while ${op.key} ran`);
    scheduler = await startScheduler(schedulerPort);
    t.diagnostic(`new scheduler listening on ${scheduler.grpcPort} ${Date.now() - since} ms into the build`);
    assert.equal(scheduler.grpcPort, schedulerPort);
    const r = await build;
    assertAllRemote(t, 'rebuild with the scheduler replaced', r);
    const metrics = await httpGet(scheduler.httpPort, '/metrics');
    const calls = (method: string) =>
      ['OK', 'NOT_FOUND'].map((code) => metricValue(metrics, `reapi_grpc_requests_total{service="Execution",method="${method}",code="${code}"}`));
    t.diagnostic(`new scheduler: Execute OK/NOT_FOUND ${calls('Execute').join('/')}, WaitExecution ${calls('WaitExecution').join('/')}`);
  });
});
