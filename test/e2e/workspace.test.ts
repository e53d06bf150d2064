// Builds and tests the e2e workspace with real Bazel, locally (no remote), and checks the harness:
// outputs and their sizes, and the process summary parser on a cold build and on a --disk_cache
// rebuild after `bazel clean` (which Bazel 4.2.3 reports as "remote cache hit").
// Run: node --import tsx --test test/e2e/workspace.test.ts
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import {
  WORKSPACE_OUTPUTS,
  WORKSPACE_SPAWNS,
  allRemoteCacheHits,
  bazelAvailable,
  createBazel,
  parseProcessSummary,
  parseTotalActions,
  remoteFlags,
} from './bazel.ts';

describe('process summary parser', () => {
  test('local build (Bazel 4.2.3)', () => {
    const s = parseProcessSummary(
      'INFO: Elapsed time: 5.638s, Critical Path: 1.07s\nINFO: 40 processes: 14 internal, 26 linux-sandbox.\n' +
        'INFO: Build completed successfully, 40 total actions\n',
    );
    assert.ok(s);
    assert.equal(s.total, 40);
    assert.equal(s.internal, 14);
    assert.equal(s.linuxSandbox, 26);
    assert.equal(s.nonInternal, 26);
    assert.equal(s.remoteCacheHit, 0);
    assert.equal(allRemoteCacheHits(s), false);
    assert.equal(s.line, '40 processes: 14 internal, 26 linux-sandbox.');
  });

  test('cache hits, remote execution and other variants', () => {
    const hit = parseProcessSummary('INFO: 40 processes: 26 remote cache hit, 14 internal.\n');
    assert.ok(hit);
    assert.equal(hit.remoteCacheHit, 26);
    assert.equal(allRemoteCacheHits(hit), true);

    const remote = parseProcessSummary('INFO: 25 processes: 3 internal, 2 remote cache hit, 20 remote.');
    assert.ok(remote);
    assert.deepEqual([remote.total, remote.internal, remote.remoteCacheHit, remote.remote], [25, 3, 2, 20]);
    assert.equal(allRemoteCacheHits(remote), false);

    const none = parseProcessSummary('INFO: 0 processes.\nFAILED: Build did NOT complete successfully\n');
    assert.ok(none);
    assert.equal(none.total, 0);
    assert.equal(allRemoteCacheHits(none), false);

    const one = parseProcessSummary('\x1b[32mINFO: \x1b[0m1 process: 1 internal.\r\n');
    assert.ok(one);
    assert.deepEqual([one.total, one.internal, one.nonInternal], [1, 1, 0]);

    const newer = parseProcessSummary(
      'INFO: 9 processes: 2 action cache hit, 1 disk cache hit, 3 internal, 2 processwrapper-sandbox, 1 worker.',
    );
    assert.ok(newer);
    assert.deepEqual(
      [newer.actionCacheHit, newer.diskCacheHit, newer.internal, newer.processwrapperSandbox, newer.worker],
      [2, 1, 3, 2, 1],
    );
    assert.equal(newer.counts['processwrapperSandbox'], 2);

    // The last summary wins; none at all gives undefined.
    assert.equal(parseProcessSummary('INFO: 3 processes: 3 local.\nINFO: 5 processes: 5 local.\n')?.local, 5);
    assert.equal(parseProcessSummary('INFO: Elapsed time: 1s\n'), undefined);
    assert.equal(parseTotalActions('INFO: Build completed successfully, 40 total actions\n'), 40);
  });

  test('remote flags', () => {
    assert.deepEqual(remoteFlags('127.0.0.1:8980', 'executor'), [
      '--remote_executor=grpc://127.0.0.1:8980',
      '--spawn_strategy=remote',
      '--remote_instance_name=main',
      '--incompatible_strict_action_env',
      '--remote_timeout=60',
      '--test_output=errors',
    ]);
    assert.equal(remoteFlags('grpc://h:1', 'cache')[0], '--remote_cache=grpc://h:1');
    assert.ok(!remoteFlags('h:1', 'cache').includes('--spawn_strategy=remote'));
  });
});

test('workspace builds and tests locally with real Bazel', { timeout: 600_000 }, async (t) => {
  if (!bazelAvailable()) {
    t.skip('bazel not installed');
    return;
  }
  const bazel = await createBazel();
  const diskCache = await mkdtemp(join(tmpdir(), 'reapi-diskcache-'));
  try {
    const args = ['test', '//...', `--disk_cache=${diskCache}`, '--test_output=errors'];

    const cold = await bazel.run(args);
    assert.equal(cold.code, 0, cold.stderr.slice(-4000));
    const coldSummary = parseProcessSummary(cold.stderr);
    assert.ok(coldSummary, 'no process summary in the cold build');
    t.diagnostic(`cold build ${cold.durationMs} ms: ${coldSummary.line}`);
    assert.equal(coldSummary.nonInternal, WORKSPACE_SPAWNS, coldSummary.line);
    assert.equal(coldSummary.remoteCacheHit, 0);
    assert.equal(parseTotalActions(cold.stderr), coldSummary.total);
    // The per-test result table goes to stdout, progress and INFO lines to stderr.
    assert.match(cold.stdout, /Executed 2 out of 2 tests: 2 tests pass/);

    for (const o of WORKSPACE_OUTPUTS) {
      const st = await stat(await bazel.outputPath(o.path));
      assert.equal(st.size, o.size, `size of ${o.path}`);
      if (o.executable === true) assert.ok((st.mode & 0o111) !== 0, `${o.path} is not executable`);
    }
    assert.equal(
      (await bazel.outputFile('//cc:hello_output.txt')).toString(),
      'Hello, reapi!\n40960 d138670b\n',
    );
    assert.equal(
      (await bazel.outputFile('tree/tree_listing.txt')).toString(),
      './a.txt 6\n./b.txt 292\n./bin/tool.sh 29\n./sub/copy.txt 24\n./sub/nested/deep.txt 10\n',
    );

    // Everything comes back from the disk cache after a clean: Bazel calls these remote cache hits.
    await bazel.clean();
    const warm = await bazel.run(args);
    assert.equal(warm.code, 0, warm.stderr.slice(-4000));
    const warmSummary = parseProcessSummary(warm.stderr);
    assert.ok(warmSummary, 'no process summary in the cached rebuild');
    t.diagnostic(`cached rebuild ${warm.durationMs} ms: ${warmSummary.line}`);
    assert.equal(warmSummary.total, coldSummary.total);
    assert.equal(warmSummary.remoteCacheHit, WORKSPACE_SPAWNS, warmSummary.line);
    assert.ok(allRemoteCacheHits(warmSummary), warmSummary.line);
    assert.equal((await stat(await bazel.outputPath('gen/big_output.txt'))).size, 5242880);
  } finally {
    await bazel.dispose();
    await rm(diskCache, { recursive: true, force: true });
  }
});
