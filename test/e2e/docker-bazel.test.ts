// Real Bazel against `reapi serve --docker-host` with a real dockerd started by the test
// (overlay2, --bridge=none, --iptables=false) and reapi-busybox imported locally: genrules with
// exec_properties container-image run in that image (a marker only the image has), without
// network, under verification (every action run twice, the second time varied), and leave no
// container behind; a missing image fails the build with a message naming the image and how to
// import it; a killed server's containers are swept when the next one starts.
// Run: node --import tsx --test test/e2e/docker-bazel.test.ts
import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { connect, createServer, type Server } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';

import { LABEL_PID, LABEL_RUNNER } from '../../worker/runners/docker-runner.ts';
import { dockerSkipReason, startDockerd, type TestDockerd } from '../support/dockerd.ts';
import { httpGet, metricValue, startReapi, type ReapiProcess } from '../support/reapi-process.ts';
import { bazelAvailable, createBazel, parseProcessSummary, type Bazel } from './bazel.ts';

const WORKSPACE = resolve(dirname(fileURLToPath(import.meta.url)), 'workspace-docker');

/** An address of this host other than loopback (what a container with a network could reach). */
function hostAddress(): string {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}

const skip = (!bazelAvailable() && 'bazel is not installed') || dockerSkipReason();

describe('Bazel genrules with exec_properties container-image', { skip }, () => {
  let dockerd: TestDockerd;
  let dataDir: string;
  let workDir: string;
  let server: ReapiProcess;
  let bazel: Bazel;
  /** A TCP port on all host addresses the in-container probe tries to reach. */
  let probe: Server;
  let probeAddress: string;

  const serve = () => startReapi(['serve', '--data-dir', dataDir, '--work-dir', workDir, '--docker-host', dockerd.host, '--verify-rate', '1', '--concurrency', '2']);
  const flags = () => [...bazel.remoteFlags(server.endpoint, 'executor'), `--define=PROBE=${probeAddress}`];

  before(async () => {
    dockerd = await startDockerd();
    dataDir = await mkdtemp(join(tmpdir(), 'reapi-e2e-docker-'));
    workDir = await mkdtemp(join(tmpdir(), 'reapi-e2e-docker-work-'));
    // The bwrap sandbox user must reach the exec roots of the host-side genrule.
    await chmod(workDir, 0o755);
    server = await serve();
    bazel = await createBazel({ workspace: WORKSPACE });
    probe = createServer((sock) => sock.end());
    await new Promise<void>((r) => probe.listen(0, '0.0.0.0', r));
    probeAddress = `${hostAddress()}:${(probe.address() as { port: number }).port}`;
    // Reachable from the host: only the container's lack of a network stops the probe.
    await new Promise<void>((res, rej) => {
      const [h, p] = probeAddress.split(':');
      connect(Number(p), h!).once('connect', function (this: { destroy(): void }) {
        this.destroy();
        res();
      }).once('error', rej);
    });
  });

  after(async () => {
    probe?.close();
    await bazel?.dispose();
    await server?.stop();
    if (dockerd) {
      assert.deepEqual(await dockerd.containers(), [], 'no container left once the server stopped');
      await dockerd.stop();
    }
    for (const d of [dataDir, workDir]) if (d) await rm(d, { recursive: true, force: true });
  });

  test('they run inside the image, with no network, verified by a second varied run', async () => {
    const r = await bazel.run(['build', '//:in_image', '//:upper', '//:on_host', ...flags()]);
    assert.equal(r.code, 0, `bazel build failed:\n${r.stderr.slice(-4000)}`);
    const summary = parseProcessSummary(r.stderr);
    assert.equal(summary?.remote, 3, summary?.line);

    const inImage = (await bazel.outputFile('in_image.txt')).toString();
    assert.equal(inImage, 'reapi-busybox:latest\nuser=non-root\nnet=lo\nroot=ro\ntcp=unreachable\n');
    assert.equal((await bazel.outputFile('upper.txt')).toString(), 'ALPHA\nBETA\nGAMMA\n');
    assert.equal((await bazel.outputFile('on_host.txt')).toString(), 'where=host\n3\n');

    const metrics = await httpGet(server.httpPort, '/metrics');
    // Every action ran twice and agreed (the second run: other exec path, hostname, uid, umask, container).
    assert.equal(metricValue(metrics, 'reapi_verifications_total{result="agreed"}'), 3, metrics.split('\n').filter((l) => l.startsWith('reapi_verif')).join('\n'));
    assert.equal(metricValue(metrics, 'reapi_actions_executed_total{outcome="success"}'), 6);
  });

  test('no used container is left behind (only started, unused warm ones)', async () => {
    for (let i = 0; i < 100; i++) {
      if ((await dockerd.containers()).every((c) => c.State === 'running')) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const left = await dockerd.containers();
    assert.ok(left.every((c) => c.State === 'running'), left.map((c) => `${c.Names[0]} ${c.State}`).join(', '));
    assert.ok(left.length <= 2, `warm pool only: ${left.length}`);
  });

  test('a missing image fails the action with FAILED_PRECONDITION naming it and its import command', async () => {
    const r = await bazel.run(['build', '//:missing_image', ...flags()]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /Failed Precondition/);
    assert.match(r.stderr, /reapi-debian:bookworm/);
    assert.match(r.stderr, /scripts\/docker\/build-images\.sh debian/);
  });

  test("a killed server's containers are swept when the next one starts", async () => {
    // The server keeps warm containers (started ahead of time) for the image it ran.
    const pid = server.child.pid!;
    let before: Awaited<ReturnType<TestDockerd['containers']>> = [];
    for (let i = 0; i < 100 && before.length === 0; i++) {
      before = await dockerd.containers(`${LABEL_PID}=${pid}`);
      if (before.length === 0) await new Promise((res) => setTimeout(res, 100));
    }
    assert.ok(before.length > 0, 'the server has (warm) containers');
    await server.kill();
    assert.equal((await dockerd.containers(`${LABEL_PID}=${pid}`)).length, before.length, 'they outlive the killed server');

    server = await serve();
    assert.deepEqual(await dockerd.containers(`${LABEL_PID}=${pid}`), [], 'swept at start');
    assert.ok((await dockerd.containers(LABEL_RUNNER)).every((c) => c.Labels[LABEL_PID] !== String(pid)));
    await bazel.clean();
    const again = await bazel.run(['build', '//:upper', ...flags(), '--noremote_accept_cached']);
    assert.equal(again.code, 0, again.stderr.slice(-4000));
  });
});
