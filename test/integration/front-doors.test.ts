// Several schedulers side by side over one Redis: stateless front doors. An Execute submitted
// through one is followed to its result through another, even after the first is SIGKILLed, and
// both serve the cache hit. And a fleet with no worker live yet: Execute waits for one for the
// grace period (noWorkerGraceSeconds) instead of failing at once.
import { strict as assert } from 'node:assert';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connectExec, execute, run, waitExecution, type ExecClients } from '../support/execution.ts';
import { startFleet, type Fleet } from '../support/fleet.ts';
import { startReapi, type ReapiProcess } from '../support/reapi-process.ts';
import { redisSkip } from '../support/redis.ts';
import { sandboxSkip } from '../support/sandbox.ts';

describe('two schedulers over one Redis', { skip: redisSkip || sandboxSkip }, () => {
  let fleet: Fleet;
  let second: ReapiProcess;
  let c2: ExecClients;
  before(async () => {
    fleet = await startFleet({ name: 'reapi-doors', workers: 1 });
    second = await startReapi(['scheduler', '--redis', fleet.redis.url, '--cas', `127.0.0.1:${fleet.cas.grpcPort}`, '--log-level', 'warn']);
    c2 = connectExec(`127.0.0.1:${second.grpcPort}`, '');
  });
  after(async () => {
    c2?.close();
    await second?.stop();
    await fleet?.stop();
  });

  test('an action run through one scheduler is a cache hit through the other', async () => {
    const first = await run(fleet.c, { sh: 'echo front door > out.txt', outputFiles: ['out.txt'] });
    assert.equal(first.response.status?.code ?? 0, 0);
    const hit = await execute(c2, first.action.actionDigest);
    assert.equal(hit.response.cached_result, true);
  });

  test('an operation submitted through a scheduler that is then SIGKILLed is followed to its result through the other', async () => {
    const doomed = await startReapi(['scheduler', '--redis', fleet.redis.url, '--cas', `127.0.0.1:${fleet.cas.grpcPort}`, '--log-level', 'warn']);
    const c1 = connectExec(`127.0.0.1:${doomed.grpcPort}`, '');
    try {
      let name: string | undefined;
      const gotName = new Promise<void>((resolve) => {
        void run(c1, { sh: 'sleep 2; echo survived > out.txt', outputFiles: ['out.txt'] }, { onOperation: (op) => {
          name ??= op.name;
          resolve();
        } }).catch(() => {});
      });
      await gotName;
      await doomed.kill();
      const out = await waitExecution(c2, name!);
      assert.equal(out.response.status?.code ?? 0, 0, JSON.stringify(out.response.status));
      assert.equal(out.response.result?.exit_code ?? 0, 0);
      assert.ok(out.response.result?.output_files?.some((f) => f.path === 'out.txt'));
    } finally {
      c1.close();
      await doomed.stop().catch(() => {});
    }
  });
});

describe('no worker live yet: Execute waits for one, for the grace period', { skip: redisSkip || sandboxSkip }, () => {
  let fleet: Fleet;
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reapi-no-worker-'));
    await chmod(dir, 0o755); // the sandbox user must traverse it to the exec roots
    const config = join(dir, 'config.json');
    await writeFile(config, JSON.stringify({ execution: { noWorkerGraceSeconds: 3 } }));
    fleet = await startFleet({ name: 'reapi-no-worker', workers: 0, schedulerArgs: ['--config', config] });
  });
  after(async () => {
    await fleet?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test('an action sent while the fleet has no worker runs once one registers', async () => {
    const pending = run(fleet.c, { sh: 'echo waited > out.txt', outputFiles: ['out.txt'] });
    await new Promise((r) => setTimeout(r, 1000));
    const workDir = join(dir, 'work');
    await mkdir(workDir, { mode: 0o755 });
    await chmod(workDir, 0o755);
    const worker = await startReapi(['worker', '--redis', fleet.redis.url, '--cas', `127.0.0.1:${fleet.cas.grpcPort}`, '--work-dir', workDir, '--data-dir', join(dir, 'w'), '--log-level', 'warn']);
    try {
      const out = await pending;
      assert.equal(out.response.status?.code ?? 0, 0);
      assert.ok(out.result.output_files.some((f) => f.path === 'out.txt'));
    } finally {
      await worker.stop();
    }
  });

  test('with no worker at all, it fails after the grace period with FAILED_PRECONDITION saying so', async () => {
    const t0 = Date.now();
    await assert.rejects(run(fleet.c, { sh: 'echo never', outputFiles: [] }), /FAILED_PRECONDITION: no worker is live, and none has been for/);
    assert.ok(Date.now() - t0 >= 2500, `failed after ${Date.now() - t0} ms, not after the 3 s grace`);
  });
});
