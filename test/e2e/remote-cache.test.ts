// Real Bazel using `reapi serve` as its remote cache: a cold build fills the cache, a rebuild after
// `bazel clean` is 100% remote cache hits, and so is one after restarting the server on the same
// data directory (persistence).
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { WORKSPACE_OUTPUTS, allRemoteCacheHits, bazelAvailable, createBazel, parseProcessSummary, type Bazel } from './bazel.ts';
import { httpGet, metricValue, startReapi, type ReapiProcess } from '../support/reapi-process.ts';

describe('Bazel with --remote_cache pointed at reapi serve --no-execution', { skip: !bazelAvailable() && 'bazel is not installed' }, () => {
  let dataDir: string;
  let server: ReapiProcess;
  let bazel: Bazel;

  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'reapi-e2e-cache-'));
    server = await startReapi(['serve', '--no-execution', '--data-dir', dataDir]);
    bazel = await createBazel();
  });

  after(async () => {
    await bazel?.dispose();
    await server?.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  async function buildAndTest(): Promise<ReturnType<typeof parseProcessSummary>> {
    const r = await bazel.run(['test', '//...', ...bazel.remoteFlags(server.endpoint, 'cache')]);
    assert.equal(r.code, 0, `bazel test failed:\n${r.stderr.slice(-4000)}`);
    const summary = parseProcessSummary(r.stderr);
    assert.ok(summary, `no process summary in:\n${r.stderr.slice(-2000)}`);
    return summary;
  }

  test('a cold build uploads everything and the tests pass', async () => {
    const summary = await buildAndTest();
    assert.equal(summary!.remoteCacheHit, 0, summary!.line);
    for (const out of WORKSPACE_OUTPUTS.filter((o) => o.size > 4 * 1024 * 1024)) {
      assert.equal((await bazel.outputFile(out.path)).length, out.size);
    }
    const metrics = await httpGet(server.httpPort, '/metrics');
    assert.ok(metricValue(metrics, 'reapi_action_cache_requests_total{instance="main",result="miss"}') > 0);
  });

  test('after bazel clean, the rebuild is all remote cache hits', async () => {
    await bazel.clean();
    const summary = await buildAndTest();
    assert.ok(allRemoteCacheHits(summary!), `expected only cache hits: ${summary!.line}`);
    for (const out of WORKSPACE_OUTPUTS) {
      assert.equal((await bazel.outputFile(out.path)).length, out.size, out.path);
    }
    const metrics = await httpGet(server.httpPort, '/metrics');
    assert.ok(metricValue(metrics, 'reapi_action_cache_requests_total{instance="main",result="hit"}') >= summary!.remoteCacheHit);
  });

  test('after a server restart on the same data dir, still all remote cache hits', async () => {
    await server.stop();
    server = await startReapi(['serve', '--no-execution', '--data-dir', dataDir]);
    await bazel.clean();
    const summary = await buildAndTest();
    assert.ok(allRemoteCacheHits(summary!), `expected only cache hits after restart: ${summary!.line}`);
  });
});
