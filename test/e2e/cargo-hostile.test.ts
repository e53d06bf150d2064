// Hostile build scripts through `reapi cargo` (test/e2e/cargo-hostile, one package each) against
// `reapi serve --verify-rate 1`: each is contained, the build fails the way Cargo shows a failing
// build script, and the message names the crate and what was refused (and, where a setting can
// allow it, which one). The scripts that only read or connect are first built locally by plain
// cargo, to show that they really do what they are refused on the fleet.
// Run: node --import tsx --test --test-reporter=spec test/e2e/cargo-hostile.test.ts
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import type { Report } from '../../execution/report-store.ts';
import { httpGet, startReapi, type ReapiProcess } from '../support/reapi-process.ts';
import { cargo, cargoSkip, copyWorkspace, HOSTILE_WORKSPACE, reapiCargo, type Ran } from './cargo.ts';

describe('hostile build scripts on the fleet', { skip: cargoSkip() }, () => {
  let server: ReapiProcess;
  let dataDir: string;
  let ws: Awaited<ReturnType<typeof copyWorkspace>>;
  let home: string;

  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'reapi-cargo-hostile-'));
    server = await startReapi(['serve', '--data-dir', dataDir, '--verify-rate', '1']);
    ws = await copyWorkspace(HOSTILE_WORKSPACE, 'reapi-cargo-hostile-ws-');
    // A HOME with a (fake) SSH key, so the key-stealing script succeeds when run locally.
    home = join(dataDir, 'home');
    await mkdir(join(home, '.ssh'), { recursive: true });
    await writeFile(join(home, '.ssh/id_rsa'), '-----BEGIN FAKE KEY-----\nreapi test canary\n-----END FAKE KEY-----\n', { mode: 0o600 });
  });

  after(async () => {
    await server?.stop();
    await ws?.dispose();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  const env = () => ({ HOME: home, HOSTILE_PORT: String(server.grpcPort) });
  const fleet = (pkg: string) => reapiCargo(ws.dir, server.endpoint, ['build', '-p', `hostile-${pkg}`], env());

  /** The build failed as Cargo shows a failing build script, with reapi's explanation in it. */
  function refused(r: Ran, pkg: string, ...explanations: RegExp[]): void {
    assert.notEqual(r.code, 0, `the build of hostile-${pkg} should fail:\n${r.stderr.slice(-3000)}`);
    assert.match(r.stderr, new RegExp(`error: failed to run custom build command for \`hostile-${pkg} v0\\.1\\.0`));
    for (const e of explanations) assert.match(r.stderr, e, r.stderr.slice(-4000));
  }

  test('locally, the reading and connecting scripts do what they are refused on the fleet', async () => {
    const ssh = await cargo(ws.dir, ['build', '-p', 'hostile-ssh-key', '-vv'], env());
    assert.equal(ssh.code, 0, ssh.stderr.slice(-2000));
    assert.match(ssh.stderr, /stole \d+ bytes of SSH key/);
    const shadow = await cargo(ws.dir, ['build', '-p', 'hostile-shadow', '-vv'], env());
    assert.equal(shadow.code, 0, shadow.stderr.slice(-2000));
    assert.match(shadow.stderr, /read \d+ lines of \/etc\/shadow/);
    const write = await cargo(ws.dir, ['build', '-p', 'hostile-write-source'], env());
    assert.equal(write.code, 0, write.stderr.slice(-2000));
    await stat(join(ws.dir, 'write-source/src/generated.rs'));
    await rm(join(ws.dir, 'write-source/src/generated.rs'));
    // Built locally, so `cargo clean` for the fleet builds to compile them again (with trampolines).
    assert.equal((await cargo(ws.dir, ['clean'])).code, 0);
  });

  test('a socket: no network, not even the host loopback', async () => {
    const r = await fleet('socket');
    refused(
      r,
      'socket',
      new RegExp(`reapi: build script of hostile-socket v0\\.1\\.0 was refused: it opened a network connection to 127\\.0\\.0\\.1:${server.grpcPort}: build scripts have no network access`),
      /reapi: build script of hostile-socket v0\.1\.0 was refused: it opened a network connection to 93\.184\.216\.34:80 \(ENETUNREACH\)/,
    );
    const b = r.buildScripts.find((x) => x.crate === 'hostile-socket v0.1.0');
    assert.equal(b?.source, 'executed');
  });

  test('~/.ssh: not visible, and the message names the path and the setting', async () => {
    const r = await fleet('ssh-key');
    refused(
      r,
      'ssh-key',
      /reapi: build script of hostile-ssh-key v0\.1\.0 was refused: it accessed \/root\/\.ssh\/id_rsa \(ENOENT\), which is outside the directories visible to build scripts; allow it with "crates": \{"hostile-ssh-key": \{"readOnlyPaths": \["\/root\/\.ssh"\]\}\}/,
    );
    assert.doesNotMatch(r.stderr, /reapi test canary|stole/);
  });

  test('/etc/shadow: not visible', async () => {
    const r = await fleet('shadow');
    refused(r, 'shadow', /reapi: build script of hostile-shadow v0\.1\.0 was refused: it accessed \/etc\/shadow \(ENOENT\)/);
    assert.doesNotMatch(r.stderr, /lines of \/etc\/shadow/);
  });

  test('writing into its source directory: read-only, and the host source directory is untouched', async () => {
    const r = await fleet('write-source');
    refused(
      r,
      'write-source',
      /reapi: build script of hostile-write-source v0\.1\.0 was refused: it wrote to its source directory \(src\/generated\.rs\) \(openat: EROFS\): build scripts may write only to OUT_DIR/,
    );
    await assert.rejects(stat(join(ws.dir, 'write-source/src/generated.rs')), /ENOENT/);
  });

  test('a tool outside the policy: the message names the tool and the setting; the setting allows it', async () => {
    const r = await fleet('tool');
    refused(
      r,
      'tool',
      /reapi: build script of hostile-tool v0\.1\.0 ran git, which the build-script policy does not allow; allow it with "crates": \{"hostile-tool": \{"tools": \["git"\]\}\} in reapi-build-policy\.json/,
    );
    // Following the advice makes the same build pass.
    await writeFile(join(ws.dir, 'reapi-build-policy.json'), JSON.stringify({ crates: { 'hostile-tool': { tools: ['git'] } } }, null, 2));
    try {
      const allowed = await fleet('tool');
      assert.equal(allowed.code, 0, allowed.stderr.slice(-3000));
      assert.equal(allowed.buildScripts.find((x) => x.crate === 'hostile-tool v0.1.0')?.exitCode, 0);
    } finally {
      await rm(join(ws.dir, 'reapi-build-policy.json'));
    }
  });

  test('a fork bomb: stopped at the process limit, named', async () => {
    const r = await fleet('fork-bomb');
    refused(r, 'fork-bomb', /reapi: build script of hostile-fork-bomb v0\.1\.0: process limit of 256 reached \(too many processes: a fork bomb\?\); raise it with "crates": \{"hostile-fork-bomb": \{"limits": \{"processes": 512\}\}\}/);
  });

  test('eating memory: stopped at the memory limit, named', async () => {
    const r = await fleet('eat-memory');
    refused(r, 'eat-memory', /reapi: build script of hostile-eat-memory v0\.1\.0: memory limit of 1024 MiB exceeded; raise it with "crates": \{"hostile-eat-memory": \{"limits": \{"memory": "2048MiB"\}\}\}/);
  });

  test('a nondeterministic build script: the verifier reports it under the crate, and it is not cached', async () => {
    const r = await fleet('nondeterministic');
    assert.equal(r.code, 0, r.stderr.slice(-3000));
    assert.match(r.stderr, /reapi: warning: build script of hostile-nondeterministic v0\.1\.0: .*(nondetermin|differ)/i);
    const reports = JSON.parse(await httpGet(server.httpPort, `/api/reports?target=${encodeURIComponent('hostile-nondeterministic v0.1.0')}`)) as Report[];
    assert.equal(reports.length, 1, JSON.stringify(reports));
    assert.equal(reports[0]!.kind, 'nondeterministic');
    assert.equal(reports[0]!.mnemonic, 'CargoBuildScript');
    // Not cached: after cargo clean it executes again.
    assert.equal((await cargo(ws.dir, ['clean', '-p', 'hostile-nondeterministic'])).code, 0);
    const again = await fleet('nondeterministic');
    assert.equal(again.buildScripts.find((x) => x.crate === 'hostile-nondeterministic v0.1.0')?.source, 'executed');
  });
});
