// Verification and audits in a fleet of real processes: redis-server, `reapi cas`, `reapi scheduler
// --verify-rate 1 --audit-rate 1` and two `reapi worker`s (concurrency 1). Checks what only a fleet
// can show:
// - the second run of a verified action goes to the other worker when it is free (the report names
//   both workers and "another worker"), and stays on the first one when the other is busy;
// - verified results are cached; nondeterministic ones are not;
// - reports are kept in Redis and served by the scheduler's GET /api/reports and `reapi reports`;
// - a poisoned entry served from the cache is audited by a worker, removed and reported.
// Needs redis-server, bwrap and root (the workers' sandbox).
import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { digestOf } from '../../common/digest.ts';
import type { Report } from '../../execution/report-store.ts';
import {
  cachedResult,
  execute,
  outputFile,
  uploadAction,
  uploadBlobs,
  type ExecClients,
  type ExecuteOutcome,
  type PreparedAction,
} from '../support/execution.ts';
import { startFleet, waitFor, type Fleet } from '../support/fleet.ts';
import { redisSkip } from '../support/redis.ts';
import type { ReapiProcess } from '../support/reapi-process.ts';
import { unary } from '../support/storage.ts';
import { sandboxSkip } from '../support/sandbox.ts';

const BIN = resolve(dirname(fileURLToPath(import.meta.url)), '../../bin/reapi.mjs');

const skip = redisSkip || sandboxSkip;

describe('verification and audits in a fleet (redis, cas, scheduler, 2 workers)', { skip }, () => {
  let fleet: Fleet;
  let scheduler: ReapiProcess;
  let c: ExecClients;

  before(async () => {
    const configDir = await mkdtemp(join(tmpdir(), 'reapi-vf-config-'));
    const config = join(configDir, 'config.json');
    await writeFile(config, JSON.stringify({ actionCache: { clientWrites: 'allow' } }));
    fleet = await startFleet({ name: 'reapi-vf', schedulerArgs: ['--config', config, '--verify-rate', '1', '--audit-rate', '1'] });
    await rm(configDir, { recursive: true, force: true });
    ({ scheduler, c } = fleet);
  });

  after(async () => {
    await fleet?.stop();
  });

  async function reports(query = ''): Promise<Report[]> {
    const res = await fetch(`http://127.0.0.1:${scheduler.httpPort}/api/reports${query}`);
    assert.equal(res.status, 200);
    return (await res.json()) as Report[];
  }

  async function executeAs(action: PreparedAction, target: string, mnemonic: string): Promise<ExecuteOutcome> {
    const requestMetadata = { tool_details: { tool_name: 'verification-fleet-test' }, target_id: target, action_mnemonic: mnemonic };
    return execute(c, action.actionDigest, { deadlineMs: 120_000, requestMetadata });
  }

  it('runs the second run of a verified action on the other worker when it is free', async () => {
    const action = await uploadAction(c, { sh: 'cat /proc/sys/kernel/random/uuid > out.txt', outputFiles: ['out.txt'] });
    const outcome = await executeAs(action, '//fleet:random', 'FleetRandom');
    assert.equal(outcome.response.status?.code ?? 0, 0);
    assert.match(outcome.response.message, /nondeterministic action, result not cached/);
    assert.match(outcome.response.message, /another worker \(/);
    assert.equal(await cachedResult(c, action.actionDigest), undefined, 'not cached');
    const [report] = await reports('?target=//fleet:random');
    assert.ok(report, 'a report kept in Redis and served by the scheduler');
    assert.equal(report.kind, 'nondeterministic');
    assert.equal(report.mnemonic, 'FleetRandom');
    assert.equal(report.workers.length, 2);
    assert.notEqual(report.workers[0], report.workers[1], `both runs on different workers: ${report.workers.join(', ')}`);
    assert.ok(report.variation.some((v) => v.startsWith('another worker')), report.variation.join(', '));
    assert.equal(report.differences[0]?.what, 'out.txt');
  });

  it('caches a deterministic action once both workers agree', async () => {
    const action = await uploadAction(c, { sh: 'echo same > out.txt', outputFiles: ['out.txt'] });
    const outcome = await executeAs(action, '//fleet:same', 'FleetSame');
    assert.equal(outcome.response.status?.code ?? 0, 0);
    assert.equal(outcome.response.message, '');
    assert.ok(await cachedResult(c, action.actionDigest), 'cached once verified');
    assert.deepEqual(await reports('?target=//fleet:same'), []);
  });

  it('runs the second run on the first worker when the other one is busy', async () => {
    // Occupy one worker with a long action (its own second run then waits for a free worker).
    const busy = await uploadAction(c, { sh: 'sleep 6; echo done > out.txt', outputFiles: ['out.txt'] });
    const busyRun = executeAs(busy, '//fleet:busy', 'FleetBusy');
    await new Promise((r) => setTimeout(r, 1500));
    // Inputs of its own: sharing none with the busy action, it is not routed to that worker.
    const action = await uploadAction(c, { sh: 'cat /proc/sys/kernel/random/uuid > out.txt', outputFiles: ['out.txt'], inputs: { seed: randomUUID() } });
    await executeAs(action, '//fleet:random_busy', 'FleetRandomBusy');
    const [report] = await reports('?target=//fleet:random_busy');
    assert.ok(report);
    assert.equal(report.workers.length, 2);
    assert.equal(report.workers[0], report.workers[1], `both runs on the free worker: ${JSON.stringify(report)}`);
    assert.ok(!report.variation.some((v) => v.startsWith('another worker')), report.variation.join(', '));
    const done = await busyRun;
    assert.equal(done.response.status?.code ?? 0, 0);
  });

  it('audits a poisoned entry served from the cache: removed, counted and reported', async () => {
    const action = await uploadAction(c, { sh: 'echo right > out.txt', outputFiles: ['out.txt'] });
    const wrong = Buffer.from('wrong\n');
    await uploadBlobs(c, [wrong]);
    await unary(c.actionCache, c.actionCache.UpdateActionResult, {
      instance_name: '',
      action_digest: action.actionDigest,
      action_result: { exit_code: 0, output_files: [{ path: 'out.txt', digest: digestOf(wrong) }] },
    });
    const hit = await executeAs(action, '//fleet:poisoned', 'FleetPoisoned');
    assert.equal(hit.response.cached_result, true, 'the poisoned entry is served once');
    const report = await waitFor('the cache-poisoning report', async () => (await reports('?target=//fleet:poisoned')).at(0));
    assert.equal(report.kind, 'cache-poisoning');
    assert.match(report.differences[0]!.detail, /"wrong" vs "right"/);
    await waitFor('the entry to be removed', async () => (await cachedResult(c, action.actionDigest)) === undefined);
    // Executing it now gives the real result.
    const fresh = await executeAs(action, '//fleet:poisoned', 'FleetPoisoned');
    assert.equal(fresh.response.cached_result, false);
    assert.equal((await outputFile(c, fresh.response.result!, 'out.txt'))!.data.toString(), 'right\n');
  });

  it('`reapi reports --json` lists the fleet reports newest first', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [BIN, 'reports', '--http', `http://127.0.0.1:${scheduler.httpPort}`, '--json']);
    const listed = JSON.parse(stdout) as Report[];
    const targets = listed.map((r) => r.target);
    assert.ok(targets.indexOf('//fleet:poisoned') < targets.indexOf('//fleet:random'), targets.join(', '));
    assert.ok(targets.includes('//fleet:random_busy'));
  });
});
