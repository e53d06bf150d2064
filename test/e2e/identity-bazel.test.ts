// Real Bazel 4.2.3 against `reapi serve` with identity: remote execution with a bearer token
// (--remote_header), the denials Bazel shows for a wrong or missing token, and --remote_cache
// against a plain server on loopback (the local user may upload its results).
//
// Not over TLS: Debian's bazel-bootstrap bundles a Netty (4.1.48) built without ALPN, and Bazel
// stops with "Failed to init TLS infrastructure: JDK provider does not support ALPN protocol" for
// any grpcs:// endpoint. TLS and mTLS are tested with gRPC clients in
// test/integration/identity.test.ts instead.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { allRemoteCacheHits, bazelAvailable, createBazel, parseProcessSummary, type Bazel } from './bazel.ts';
import { startReapi, type ReapiProcess } from '../support/reapi-process.ts';

const isRoot = process.getuid?.() === 0;
/** A chain of three small genrules: enough to see every spawn run remotely. */
const TARGETS = ['//gen:words_summary'];

describe('Bazel with bearer tokens, and against a plain local server', { skip: (!bazelAvailable() && 'bazel is not installed') || (!isRoot && 'the bwrap sandbox needs root') }, () => {
  let dir: string;
  let bazel: Bazel;
  const servers: ReapiProcess[] = [];
  const token = `ci-${randomBytes(16).toString('hex')}`;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'reapi-e2e-identity-'));
    bazel = await createBazel();
  });
  after(async () => {
    await bazel?.dispose();
    for (const s of servers) await s.stop();
    await rm(dir, { recursive: true, force: true });
  });

  async function serve(name: string, config: object, args: string[] = []): Promise<ReapiProcess> {
    const file = join(dir, `${name}.json`);
    await writeFile(file, JSON.stringify(config));
    const s = await startReapi(['serve', '--data-dir', join(dir, name), '--config', file, ...args]);
    servers.push(s);
    return s;
  }

  const build = (s: ReapiProcess, extra: string[]) => bazel.run(['build', ...TARGETS, ...bazel.remoteFlags(s.endpoint, 'executor'), ...extra]);

  test('remote execution with a bearer token; a wrong or missing token fails with the denial shown', async () => {
    const tokensFile = join(dir, 'tokens.txt');
    await writeFile(tokensFile, `ci ${token}\n`);
    const s = await serve('tokens', { auth: { principals: [{ name: 'ci', permissions: ['cache-read', 'cache-write', 'execute'] }] } }, ['--tokens-file', tokensFile]);
    const ok = await build(s, [`--remote_header=authorization=Bearer ${token}`]);
    assert.equal(ok.code, 0, ok.stderr.slice(-4000));
    const summary = parseProcessSummary(ok.stderr);
    assert.ok(summary && summary.remote >= 3, summary?.line);

    await bazel.clean();
    const again = await build(s, [`--remote_header=authorization=Bearer ${token}`]);
    assert.equal(again.code, 0, again.stderr.slice(-4000));
    const hits = parseProcessSummary(again.stderr);
    assert.ok(hits && allRemoteCacheHits(hits), hits?.line);

    await bazel.clean();
    const wrong = await build(s, ['--remote_header=authorization=Bearer not-the-token-of-anyone']);
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.stderr, /UNAUTHENTICATED/);
    assert.match(wrong.stderr, /bearer token is not one this server knows/);
    const none = await build(s, []);
    assert.notEqual(none.code, 0);
    assert.match(none.stderr, /UNAUTHENTICATED.*needs credentials/s);
  });

  test('--remote_cache against a plain reapi serve on loopback: the local user uploads, a clean rebuild is all hits', async () => {
    const s = await startReapi(['serve', '--data-dir', join(dir, 'plain')]);
    servers.push(s);
    await bazel.clean();
    const cold = await bazel.run(['build', ...TARGETS, ...bazel.remoteFlags(s.endpoint, 'cache')]);
    assert.equal(cold.code, 0, cold.stderr.slice(-4000));
    assert.doesNotMatch(cold.stderr, /not authorized to write local results/);
    await bazel.clean();
    const warm = await bazel.run(['build', ...TARGETS, ...bazel.remoteFlags(s.endpoint, 'cache')]);
    assert.equal(warm.code, 0, warm.stderr.slice(-4000));
    const summary = parseProcessSummary(warm.stderr);
    assert.ok(summary && allRemoteCacheHits(summary), summary?.line);
  });
});
