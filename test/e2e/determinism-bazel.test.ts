// Real Bazel against `reapi serve --verify-rate 1` (a child process): every spawn of
// test/e2e/workspace-nondeterministic runs twice on the server. The deterministic genrules agree
// and are cached; the nondeterministic ones are flagged, not cached, and reported. After
// `bazel clean` the rebuild gets the deterministic ones from the remote cache and executes the
// nondeterministic ones again; `reapi reports --json` names them with their mnemonic.
// Run: node --import tsx --test test/e2e/determinism-bazel.test.ts
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import type { Report } from '../../execution/report-store.ts';
import { bazelAvailable, createBazel, parseProcessSummary, type Bazel } from './bazel.ts';
import { httpGet, metricValue, startReapi, type ReapiProcess } from '../support/reapi-process.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../..');
const WORKSPACE = join(HERE, 'workspace-nondeterministic');
const isRoot = process.getuid?.() === 0;

const DETERMINISTIC = ['//det:numbers', '//det:shouted', '//det:checksums', '//det:archive'];
const NONDETERMINISTIC = ['//nondet:stamp', '//nondet:buildinfo'];
const SPAWNS = DETERMINISTIC.length + NONDETERMINISTIC.length;

describe('Bazel against reapi serve --verify-rate 1', { skip: (!bazelAvailable() && 'bazel is not installed') || (!isRoot && 'the bwrap sandbox needs root') }, () => {
  let dataDir: string;
  let server: ReapiProcess;
  let bazel: Bazel;

  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'reapi-e2e-det-'));
    server = await startReapi(['serve', '--data-dir', dataDir, '--verify-rate', '1']);
    bazel = await createBazel({ workspace: WORKSPACE });
  });

  after(async () => {
    await bazel?.dispose();
    await server?.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  const build = () => bazel.run(['build', '//...', ...bazel.remoteFlags(server.endpoint, 'executor')]);

  async function reports(...args: string[]): Promise<Report[]> {
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [join(ROOT, 'bin/reapi.mjs'), 'reports', '--json', '--http', `http://127.0.0.1:${server.httpPort}`, ...args],
      { cwd: ROOT, timeout: 60_000 },
    );
    return JSON.parse(stdout) as Report[];
  }

  test('a cold build runs every spawn remotely, twice on the server; only the nondeterministic ones are flagged', async () => {
    const r = await build();
    assert.equal(r.code, 0, `bazel build failed:\n${r.stderr.slice(-4000)}`);
    const summary = parseProcessSummary(r.stderr);
    assert.ok(summary, r.stderr.slice(-2000));
    assert.equal(summary.remote, SPAWNS, summary.line);
    // The client gets the first run's outputs either way.
    assert.match((await bazel.outputFile('nondet/stamp.txt')).toString(), /^\d{19}\n$/);
    assert.equal((await bazel.outputFile('det/numbers.txt')).toString().split('\n').length, 501);

    const metrics = await httpGet(server.httpPort, '/metrics');
    assert.equal(metricValue(metrics, 'reapi_actions_executed_total{outcome="success"}'), 2 * SPAWNS, 'each spawn ran twice');
    assert.equal(metricValue(metrics, 'reapi_verifications_total{result="agreed"}'), DETERMINISTIC.length);
    assert.equal(metricValue(metrics, 'reapi_verifications_total{result="differed"}'), NONDETERMINISTIC.length);
    assert.equal(metricValue(metrics, 'reapi_nondeterministic_actions_total{mnemonic="Genrule"}'), NONDETERMINISTIC.length);

    const listed = await reports();
    assert.deepEqual(listed.map((x) => x.target).sort(), [...NONDETERMINISTIC].sort());
    for (const report of listed) {
      assert.equal(report.kind, 'nondeterministic');
      assert.equal(report.mnemonic, 'Genrule');
      assert.ok(report.toolInvocationId, 'the Bazel invocation id is recorded');
    }
    const stamp = listed.find((x) => x.target === '//nondet:stamp')!;
    assert.equal(stamp.differences[0]!.what, 'bazel-out/k8-fastbuild/bin/nondet/stamp.txt');
    const buildinfo = listed.find((x) => x.target === '//nondet:buildinfo')!;
    // Bazel 4.2.3 does not print ExecuteResponse.message; the server's log names the targets.
    for (const target of NONDETERMINISTIC) assert.ok(server.logs().includes(`nondeterministic action ${target}: not cached`), target);
    assert.match(buildinfo.differences[0]!.detail, /^line 1: "built in \/work on localhost" vs "built in \/build-[0-9a-f]+\/exec on verify-[0-9a-f]+"$/);
  });

  test('after bazel clean, the deterministic spawns are remote cache hits and the nondeterministic ones run again', async () => {
    await bazel.clean();
    const r = await build();
    assert.equal(r.code, 0, r.stderr.slice(-4000));
    const summary = parseProcessSummary(r.stderr);
    assert.ok(summary, r.stderr.slice(-2000));
    assert.equal(summary.remoteCacheHit, DETERMINISTIC.length, summary.line);
    assert.equal(summary.remote, NONDETERMINISTIC.length, summary.line);

    const metrics = await httpGet(server.httpPort, '/metrics');
    assert.equal(metricValue(metrics, 'reapi_nondeterministic_actions_total{mnemonic="Genrule"}'), 2 * NONDETERMINISTIC.length);
    const listed = await reports('--mnemonic', 'Genrule');
    assert.equal(listed.length, 2 * NONDETERMINISTIC.length);
    // Newest first: the rebuild's reports come before the cold build's.
    assert.deepEqual(listed.map((x) => x.createdAt), listed.map((x) => x.createdAt).sort().reverse());
    assert.notEqual(listed[0]!.toolInvocationId, listed.at(-1)!.toolInvocationId, 'two Bazel invocations');
    const stamp = await reports('--target', '//nondet:stamp');
    assert.equal(stamp.length, 2);
    assert.ok(stamp.every((x) => x.target === '//nondet:stamp' && x.mnemonic === 'Genrule'));
  });
});
