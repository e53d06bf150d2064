// deploy/compose with real docker-compose, dockerd and Bazel: Redis, 3 storage nodes, 2 schedulers
// and Prometheus run from the image built offline. The 2 workers run from the same image too, in
// containers without privileges: this engine refuses `privileged: true` (the compose file's
// workers), so they run as an unprivileged user with bwrap in user namespaces, which needs
// `--security-opt systempaths=unconfined`, an option docker-compose cannot pass (so `docker run`).
// During builds a storage node's container is killed, a worker's container is killed and the
// scheduler Bazel talks to crashes (its container restarts): the builds succeed. A rebuild after
// `bazel clean` is all cache hits, and so is one after `docker-compose down` and `up`.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, test, type TestContext } from 'node:test';
import { allRemoteCacheHits, bazelAvailable, createBazel, parseProcessSummary, type Bazel, type RunResult } from './bazel.ts';
import { findOnPath } from '../support/commands.ts';
import { dockerSkipReason, startDockerd, type TestDockerd } from '../support/dockerd.ts';
import { httpGet, TEST_FLEET_TOKEN } from '../support/reapi-process.ts';
import { sandboxSkip } from '../support/sandbox.ts';
import { freePort } from '../support/net.ts';

const sh = promisify(execFile);
const COMPOSE_FILE = fileURLToPath(new URL('../../deploy/compose/docker-compose.yml', import.meta.url));
const SERVICES = ['redis', 'cas1', 'cas2', 'cas3', 'scheduler1', 'scheduler2', 'prometheus'];

const skip = dockerSkipReason() || sandboxSkip || (!findOnPath('docker-compose') && 'docker-compose is not installed') || (!bazelAvailable() && 'bazel is not installed');

describe('deploy/compose: a fleet from the image, riding out lost machines', { skip }, () => {
  let dockerd: TestDockerd;
  let bazel: Bazel;
  let dir: string;
  const workers: string[] = [];
  const ports: Record<string, number> = {};
  const project = `reapi${process.pid}`;
  let env: NodeJS.ProcessEnv;

  const compose = (args: string[]) => sh('docker-compose', ['-p', project, '-f', COMPOSE_FILE, ...args], { env, maxBuffer: 16 << 20 });
  const containerOf = async (service: string) => (await compose(['ps', '-q', service])).stdout.trim();
  const flags = () => [...bazel.remoteFlags(`grpc://127.0.0.1:${ports.SCHEDULER1_PORT}`, 'executor'), '--remote_retries=10', '--jobs=8'];

  async function until(what: string, ok: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await ok().catch(() => false))) {
      if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms\n${(await compose(['logs', '--tail', '20']).catch(() => ({ stdout: '' }))).stdout}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  const serving = (httpPort: number) => until(`port ${httpPort} healthy`, async () => (await httpGet(httpPort, '/healthz')).startsWith('ok'));

  async function up(): Promise<void> {
    await compose(['up', '-d', ...SERVICES]);
    for (const k of ['CAS1_HTTP_PORT', 'CAS2_HTTP_PORT', 'CAS3_HTTP_PORT', 'SCHEDULER1_HTTP_PORT', 'SCHEDULER2_HTTP_PORT']) await serving(ports[k]!);
  }

  function assertBuilt(t: TestContext, what: string, r: RunResult): void {
    assert.equal(r.code, 0, `${what}: bazel exited with ${r.code}\n${r.stderr.slice(-4000)}`);
    t.diagnostic(`${what}: ${parseProcessSummary(r.stderr)?.line ?? '(no summary)'}`);
  }

  before(async () => {
    dockerd = await startDockerd({ images: ['reapi'] });
    dir = await mkdtemp(join(tmpdir(), 'reapi-compose-'));
    await chmod(dir, 0o755);
    for (const k of ['REDIS_PORT', 'CAS1_PORT', 'CAS2_PORT', 'CAS3_PORT', 'CAS1_HTTP_PORT', 'CAS2_HTTP_PORT', 'CAS3_HTTP_PORT', 'SCHEDULER1_PORT', 'SCHEDULER1_HTTP_PORT', 'SCHEDULER2_PORT', 'SCHEDULER2_HTTP_PORT', 'PROMETHEUS_PORT']) ports[k] = await freePort();
    env = { ...dockerd.env, REAPI_FLEET_TOKEN: TEST_FLEET_TOKEN, ...Object.fromEntries(Object.entries(ports).map(([k, v]) => [k, String(v)])) };
    await up();
    const cas = ['CAS1_PORT', 'CAS2_PORT', 'CAS3_PORT'].map((k) => `127.0.0.1:${ports[k]}`).join(',');
    for (let i = 1; i <= 2; i++) {
      // As an ordinary user: actions run as that user in bwrap's user namespaces (no cgroup limits).
      const unprivileged = ['--user', '1000:1000', '--security-opt', 'seccomp=unconfined', '--security-opt', 'apparmor=unconfined', '--security-opt', 'systempaths=unconfined'];
      const run = ['run', '-d', '--name', `${project}-worker${i}`, '--network', 'host', '--init', ...unprivileged, '--tmpfs', '/work:uid=1000,gid=1000,mode=755,exec,size=4g', '-e', `REAPI_FLEET_TOKEN=${TEST_FLEET_TOKEN}`];
      const worker = ['worker', '--worker-name', `worker${i}`, '--redis', `redis://127.0.0.1:${ports.REDIS_PORT}`, '--cas', cas, '--replicas', '2', '--work-dir', '/work', '--concurrency', '2', '--http-port', String(await freePort())];
      workers.push((await sh('docker', [...run, 'reapi:latest', ...worker], { env })).stdout.trim());
    }
    bazel = await createBazel();
  });

  after(async () => {
    await bazel?.dispose();
    for (const w of workers) await sh('docker', ['rm', '-f', w], { env }).catch(() => {});
    if (env) await compose(['down', '-v']).catch(() => {});
    await dockerd?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('builds while a storage node, a worker and the scheduler are lost, then rebuilds from the cache', async (t) => {
    const first = bazel.run(['test', '//...', ...flags()]);
    await new Promise((r) => setTimeout(r, 1500));
    await sh('docker', ['kill', await containerOf('cas1')], { env });
    t.diagnostic('killed the container of storage node cas1');
    assertBuilt(t, 'build with a storage node lost', await first);

    await bazel.clean();
    const second = bazel.run(['test', '//...', ...flags(), '--noremote_accept_cached']);
    await new Promise((r) => setTimeout(r, 1500));
    await sh('docker', ['kill', workers[0]!], { env });
    // The scheduler's process dies (not a manual stop): its container is restarted on the same port.
    const scheduler1 = await containerOf('scheduler1');
    await sh('docker', ['exec', scheduler1, 'pkill', '-9', '-f', 'reapi.mjs scheduler'], { env });
    t.diagnostic("killed worker1's container and SIGKILLed the process of scheduler1");
    assertBuilt(t, 'build with a worker and the scheduler lost', await second);
    const restarts = Number((await sh('docker', ['inspect', '-f', '{{.RestartCount}}', scheduler1], { env })).stdout.trim());
    assert.ok(restarts >= 1, `scheduler1's container was restarted (${restarts})`);

    await bazel.clean();
    const rebuild = await bazel.run(['test', '//...', ...flags()]);
    assertBuilt(t, 'rebuild', rebuild);
    const summary = parseProcessSummary(rebuild.stderr);
    assert.ok(summary && allRemoteCacheHits(summary), summary?.line);
  });

  test('docker-compose down and up keep the cache', async (t) => {
    await compose(['down']);
    await up();
    await bazel.clean();
    const r = await bazel.run(['test', '//...', ...flags()]);
    assertBuilt(t, 'rebuild after down and up', r);
    const summary = parseProcessSummary(r.stderr);
    assert.ok(summary && allRemoteCacheHits(summary), summary?.line);
  });

  test('Prometheus loaded the shipped rules', async () => {
    await until('Prometheus answering', async () => (await httpGet(ports.PROMETHEUS_PORT!, '/-/ready')).length > 0);
    const rules = JSON.parse(await httpGet(ports.PROMETHEUS_PORT!, '/api/v1/rules')) as { data: { groups: Array<{ name: string }> } };
    assert.ok(rules.data.groups.some((g) => g.name.startsWith('reapi')), JSON.stringify(rules.data.groups.map((g) => g.name)));
  });
});
