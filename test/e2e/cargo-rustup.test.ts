// `reapi cargo` the way most Rust users build: cargo and rustc from a rustup toolchain (a newer
// release than Debian's, writing a version-4 Cargo.lock), against `reapi serve` on the same
// machine and against a fleet. Workers offer the rustup toolchains they have
// (worker/runners/rust-toolchains.ts), so every build script runs with the rustc of the build.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startReapi, type ReapiProcess } from '../support/reapi-process.ts';
import { startFleet, type Fleet } from '../support/fleet.ts';
import { redisSkip } from '../support/redis.ts';
import { cargoSkip, copyWorkspace, crates, GRAPH_BUILD_SCRIPTS, GRAPH_WORKSPACE, reapiCargo, runProcess, rustupToolchain } from './cargo.ts';

const toolchain = await rustupToolchain();
const skip = cargoSkip() || (!toolchain && 'no rustup toolchain of another release than Debian rustc is installed');

describe('reapi cargo with a rustup toolchain', { skip }, () => {
  const t = toolchain!;
  const env = { RUSTC: t.rustc, PATH: `${join(t.dir, 'bin')}:${process.env.PATH ?? ''}` };
  let ws: Awaited<ReturnType<typeof copyWorkspace>>;
  let local: string;
  let dataDir: string;
  let server: ReapiProcess;

  before(async () => {
    ws = await copyWorkspace(GRAPH_WORKSPACE, 'reapi-rustup-');
    dataDir = await mkdtemp(join(tmpdir(), 'reapi-rustup-data-'));
    server = await startReapi(['serve', '--data-dir', dataDir]);
  });
  after(async () => {
    await server?.stop();
    await ws?.dispose();
    await rm(dataDir, { recursive: true, force: true });
  });

  test(`locally: the toolchain (${toolchain?.release}) builds the graph and writes a version-4 Cargo.lock`, async () => {
    const r = await runProcess(t.cargo, ['run', '-q'], { cwd: ws.dir, env: { ...env, RUSTC_WRAPPER: '', CARGO_TERM_COLOR: 'never' } });
    assert.equal(r.code, 0, r.stderr.slice(-3000));
    assert.match(r.stdout, new RegExp(`^rustc: release=${t.release.replace(/\./g, '\\.')}$`, 'm'));
    assert.match(await readFile(join(ws.dir, 'Cargo.lock'), 'utf8'), /^version = 4$/m);
    local = r.stdout;
    await runProcess(t.cargo, ['clean'], { cwd: ws.dir, env });
  });

  test('against reapi serve: every build script runs on the worker with that toolchain, then all hits', async () => {
    const r = await reapiCargo(ws.dir, server.endpoint, ['run', '-q'], env, [], t.cargo);
    assert.equal(r.code, 0, r.stderr.slice(-4000));
    assert.deepEqual(crates(r.buildScripts), GRAPH_BUILD_SCRIPTS);
    assert.ok(r.buildScripts.every((b) => b.source === 'executed'), JSON.stringify(r.buildScripts));
    // The build script's $RUSTC on the worker was the toolchain's release, not Debian's.
    assert.equal(r.stdout, local);
    await runProcess(t.cargo, ['clean'], { cwd: ws.dir, env });
    const warm = await reapiCargo(ws.dir, server.endpoint, ['run', '-q'], env, [], t.cargo);
    assert.equal(warm.code, 0, warm.stderr.slice(-3000));
    assert.ok(warm.buildScripts.every((b) => b.source === 'hit'), JSON.stringify(warm.buildScripts));
    assert.equal(warm.stdout, local);
  });

  describe('against a fleet (scheduler, storage node, worker over Redis)', { skip: redisSkip }, () => {
    let fleet: Fleet;
    before(async () => {
      fleet = await startFleet({ name: 'reapi-rustup-fleet', workers: 1, workerArgs: ['--concurrency', '2'] });
    });
    after(async () => {
      await fleet?.stop();
    });

    test('the worker offers the toolchain and the build matches the local one', async () => {
      await runProcess(t.cargo, ['clean'], { cwd: ws.dir, env });
      const r = await reapiCargo(ws.dir, `127.0.0.1:${fleet.scheduler.grpcPort}`, ['run', '-q'], env, [], t.cargo);
      assert.equal(r.code, 0, r.stderr.slice(-4000));
      assert.deepEqual(crates(r.buildScripts), GRAPH_BUILD_SCRIPTS);
      assert.equal(r.stdout, local);
    });
  });
});
