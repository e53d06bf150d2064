// Cargo build scripts on the fleet: a stock Cargo (Debian's /usr/bin/cargo) builds a crate graph
// made of Debian's librust-*-dev sources (test/e2e/cargo-workspace: rustc version probes, autocfg
// probes, code generation into OUT_DIR, libz-sys with pkg-config and the system zlib, and the
// package's own build script compiling C with the cc crate and emitting rustc-cfg and rustc-env),
// once locally and once through
// `reapi cargo` against `reapi serve --verify-rate 1`, so every build script runs twice on the
// worker under its policy. The programs print the same; after `cargo clean` every build script is
// an ActionCache hit and nothing executes; the manual setup (RUSTC_WRAPPER + REAPI_ENDPOINT, no
// `reapi cargo`) gets the same hits.
// Run: node --import tsx --test --test-reporter=spec test/e2e/cargo-build-scripts.test.ts
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { httpGet, startReapi, type ReapiProcess } from '../support/reapi-process.ts';
import { cargo, cargoSkip, copyWorkspace, crates, GRAPH_BUILD_SCRIPTS, GRAPH_WORKSPACE, reapiCargo, REPO, runProcess, type Ran } from './cargo.ts';

/** Sum of every sample of `name` whose labels contain all of `labels` (e.g. 'result="hit"'). */
function metricSum(text: string, name: string, ...labels: string[]): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    if (labels.every((l) => line.includes(l))) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

const PROGRAM = 'target/debug/reapi-cargo-demo';

function ok(r: Ran, what: string): void {
  assert.equal(r.code, 0, `${what} failed (exit ${r.code}):\n${r.stderr.slice(-6000)}`);
}

describe('a stock cargo build with every build script on the fleet', { skip: cargoSkip() }, () => {
  let server: ReapiProcess;
  let dataDir: string;
  let local: Awaited<ReturnType<typeof copyWorkspace>>;
  let fleet: Awaited<ReturnType<typeof copyWorkspace>>;
  let localOutput = '';
  const metrics = async () => httpGet(server.httpPort, '/metrics');

  before(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'reapi-cargo-e2e-'));
    server = await startReapi(['serve', '--data-dir', dataDir, '--verify-rate', '1']);
    local = await copyWorkspace(GRAPH_WORKSPACE, 'reapi-cargo-local-');
    fleet = await copyWorkspace(GRAPH_WORKSPACE, 'reapi-cargo-fleet-');
  });

  after(async () => {
    await server?.stop();
    await local?.dispose();
    await fleet?.dispose();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  test('built locally, the program prints what every dependency and build script contributed', async () => {
    ok(await cargo(local.dir, ['build']), 'local cargo build');
    const run = await runProcess(join(local.dir, PROGRAM), [], { cwd: local.dir });
    ok(run, 'the locally built program');
    localOutput = run.stdout;
    for (const line of ['typenum: U7+U5=12 U2^U10=1024', 'own: C checksum of the greeting 4ea60779', 'libz-sys: zlib 1 crc32 1b8c429e', 'own: cfg demo_generated is set', 'own: greeting="hello from the fleet" words=4', 'own: manifest dir is the host\'s: true']) {
      assert.ok(localOutput.includes(line), `missing "${line}" in:\n${localOutput}`);
    }
  });

  test('built through the fleet (cold): every build script executes remotely, is verified, and the program prints the same', async () => {
    const before = await metrics();
    const r = await reapiCargo(fleet.dir, server.endpoint, ['build']);
    ok(r, 'reapi cargo build');
    assert.deepEqual(crates(r.buildScripts), GRAPH_BUILD_SCRIPTS, 'one remote action per build script, named after its crate');
    for (const b of r.buildScripts) {
      assert.equal(b.source, 'executed', `${b.crate}: ${JSON.stringify(b)}`);
      assert.equal(b.exitCode, 0, b.crate);
      assert.equal(b.warning, undefined, `${b.crate} was flagged: ${b.warning}`);
    }
    assert.match(r.stderr, /reapi: 9 build scripts on the fleet: 0 cache hits, 9 executed/);

    const after = await metrics();
    // Each build script ran twice on the worker (--verify-rate 1) and both runs agreed.
    assert.equal(metricSum(after, 'reapi_verifications_total', 'result="agreed"') - metricSum(before, 'reapi_verifications_total', 'result="agreed"'), 9);
    assert.equal(metricSum(after, 'reapi_nondeterministic_actions_total'), 0);
    assert.equal(metricSum(after, 'reapi_actions_executed_total', 'outcome="success"') - metricSum(before, 'reapi_actions_executed_total', 'outcome="success"'), 18);

    const run = await runProcess(join(fleet.dir, PROGRAM), [], { cwd: fleet.dir });
    ok(run, 'the fleet-built program');
    assert.equal(run.stdout, localOutput);

    // What the build scripts left: OUT_DIR written from the action's output, directives replayed
    // with sandbox paths mapped back to host paths.
    const build = join(fleet.dir, 'target/debug/build');
    const dirs = await readdir(build);
    const outputOf = async (pkg: string): Promise<string> => {
      for (const d of dirs.filter((x) => x.startsWith(`${pkg}-`))) {
        const text = await readFile(join(build, d, 'output'), 'utf8').catch(() => undefined);
        if (text !== undefined) return text;
      }
      throw new Error(`no build output for ${pkg}`);
    };
    assert.match(await outputOf('libz-sys'), /^cargo:rustc-link-lib=z$/m);
    assert.match(await outputOf('reapi-cargo-demo'), /^cargo:rustc-cfg=demo_generated$/m);
    const own = await outputOf('reapi-cargo-demo');
    assert.ok(own.includes(`cargo:rustc-env=DEMO_MANIFEST_DIR=${fleet.dir}\n`), `the manifest dir is mapped back to the host's:\n${own}`);
    assert.ok(!own.includes('/build-script'), own);
    // The C library the cc crate built in the sandbox: in the host's OUT_DIR, found there by rustc.
    const ownOut = dirs.filter((d) => d.startsWith('reapi-cargo-demo-')).map((d) => join(build, d, 'out'));
    const searched = /^cargo:rustc-link-search=native=(.*)$/m.exec(own)?.[1];
    assert.ok(searched && ownOut.includes(searched), `link-search names the host OUT_DIR: ${searched}`);
    assert.match(own, /^cargo:rustc-link-lib=static=demo_checksum$/m);
    await readFile(join(searched, 'libdemo_checksum.a'));
    const typenumOut = dirs.filter((x) => x.startsWith('typenum-'));
    const generated = (await Promise.all(typenumOut.map((d) => readdir(join(build, d, 'out')).catch(() => [] as string[])))).flat();
    assert.ok(generated.includes('consts.rs') && generated.includes('op.rs'), `typenum generated code into OUT_DIR: ${generated.join(' ')}`);
  });

  test('after cargo clean, every build script is an ActionCache hit and nothing executes', async () => {
    ok(await cargo(fleet.dir, ['clean']), 'cargo clean');
    const before = await metrics();
    const r = await reapiCargo(fleet.dir, server.endpoint, ['build']);
    ok(r, 'reapi cargo build after clean');
    assert.deepEqual(crates(r.buildScripts), GRAPH_BUILD_SCRIPTS);
    for (const b of r.buildScripts) assert.equal(b.source, 'hit', `${b.crate} was not a cache hit: ${JSON.stringify(b)}`);
    assert.match(r.stderr, /reapi: 9 build scripts on the fleet: 9 cache hits, 0 executed/);
    const after = await metrics();
    assert.equal(metricSum(after, 'reapi_actions_executed_total') - metricSum(before, 'reapi_actions_executed_total'), 0, 'no action executed');
    assert.equal(metricSum(after, 'reapi_action_cache_requests_total', 'result="hit"') - metricSum(before, 'reapi_action_cache_requests_total', 'result="hit"'), 9);
    const run = await runProcess(join(fleet.dir, PROGRAM), [], { cwd: fleet.dir });
    ok(run, 'the program rebuilt from cache hits');
    assert.equal(run.stdout, localOutput);
  });

  test('the manual setup (RUSTC_WRAPPER and REAPI_ENDPOINT, plain cargo) uses the same actions', async () => {
    ok(await cargo(fleet.dir, ['clean']), 'cargo clean');
    const before = await metrics();
    const r = await cargo(fleet.dir, ['build'], { RUSTC_WRAPPER: join(REPO, 'bin/reapi-rustc-wrapper'), REAPI_ENDPOINT: server.endpoint });
    ok(r, 'cargo build with the wrapper');
    const after = await metrics();
    assert.equal(metricSum(after, 'reapi_actions_executed_total') - metricSum(before, 'reapi_actions_executed_total'), 0, 'no action executed');
    assert.equal(metricSum(after, 'reapi_action_cache_requests_total', 'result="hit"') - metricSum(before, 'reapi_action_cache_requests_total', 'result="hit"'), 9);
    const run = await runProcess(join(fleet.dir, PROGRAM), [], { cwd: fleet.dir });
    ok(run, 'the program');
    assert.equal(run.stdout, localOutput);
  });

  test('a build-script failure through the fleet fails the build the way Cargo shows a failing build script', async () => {
    // The graph's own build script reads data/greeting.txt: remove it and the script panics.
    await rm(join(fleet.dir, 'data/greeting.txt'));
    const r = await reapiCargo(fleet.dir, server.endpoint, ['build']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /failed to run custom build command for `reapi-cargo-demo v0\.1\.0/);
    assert.match(r.stderr, /data\/greeting\.txt/);
    // The panic location is the host's build.rs path, not the sandbox's.
    assert.ok(!r.stderr.includes('/build-script/'), r.stderr.slice(-3000));
    const own = r.buildScripts.find((b) => b.crate === 'reapi-cargo-demo v0.1.0');
    assert.equal(own?.source, 'executed');
    assert.equal(own?.exitCode, 101);
  });
});
