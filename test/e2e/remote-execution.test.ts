// Real Bazel using `reapi serve` as its remote executor: every spawn runs remotely in a bwrap
// sandbox, the tests pass, and a rebuild after `bazel clean` is all remote cache hits.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { WORKSPACE_OUTPUTS, WORKSPACE_SPAWNS, allRemoteCacheHits, bazelAvailable, createBazel, parseProcessSummary, type Bazel } from './bazel.ts';
import { httpGet, metricValue, startReapi, type ReapiProcess } from '../support/reapi-process.ts';

const isRoot = process.getuid?.() === 0;

describe('Bazel with --remote_executor pointed at reapi serve', { skip: (!bazelAvailable() && 'bazel is not installed') || (!isRoot && 'the bwrap sandbox needs root') }, () => {
  let dataDir: string;
  let server: ReapiProcess;
  let bazel: Bazel;

  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'reapi-e2e-exec-'));
    server = await startReapi(['serve', '--data-dir', dataDir]);
    bazel = await createBazel();
  });

  after(async () => {
    await bazel?.dispose();
    await server?.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  test('a cold build runs every spawn remotely and the tests pass', async () => {
    const r = await bazel.run(['test', '//...', ...bazel.remoteFlags(server.endpoint, 'executor')]);
    assert.equal(r.code, 0, `bazel test failed:\n${r.stderr.slice(-4000)}`);
    const summary = parseProcessSummary(r.stderr);
    assert.ok(summary, r.stderr.slice(-2000));
    assert.equal(summary.remote, WORKSPACE_SPAWNS, summary.line);
    for (const out of WORKSPACE_OUTPUTS) {
      assert.equal((await bazel.outputFile(out.path)).length, out.size, out.path);
    }
    const metrics = await httpGet(server.httpPort, '/metrics');
    assert.equal(metricValue(metrics, 'reapi_actions_executed_total{outcome="success"}'), WORKSPACE_SPAWNS);
  });

  test('after bazel clean, the rebuild is all remote cache hits', async () => {
    await bazel.clean();
    const r = await bazel.run(['test', '//...', ...bazel.remoteFlags(server.endpoint, 'executor')]);
    assert.equal(r.code, 0, r.stderr.slice(-4000));
    const summary = parseProcessSummary(r.stderr);
    assert.ok(summary && allRemoteCacheHits(summary), summary?.line);
  });
});
