// The reapi image, built offline (scripts/docker/build-images.sh reapi: a Debian root filesystem
// made here, Node, bubblewrap, redis) runs the fleet's roles: Redis, two storage nodes and a
// scheduler in containers (host network), a worker beside them. An action runs; then a storage
// node's container is killed and, with every blob and entry on both nodes, the cache entry is
// still served and new actions still run.
import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { connectExec, execute, run, type ExecClients } from '../support/execution.ts';
import { dockerSkipReason, startDockerd, type TestDockerd } from '../support/dockerd.ts';
import { startReapi, TEST_FLEET_TOKEN, type ReapiProcess } from '../support/reapi-process.ts';
import { sandboxSkip } from '../support/sandbox.ts';
import { freePort } from '../support/net.ts';

const sh = promisify(execFile);

describe('the reapi image', { skip: dockerSkipReason() || sandboxSkip }, () => {
  let dockerd: TestDockerd;
  let worker: ReapiProcess | undefined;
  let dir: string;
  const names: string[] = [];
  const ports = { redis: 0, cas: [0, 0], scheduler: 0 };
  let c: ExecClients;

  const docker = (args: string[]) => sh('docker', args, { env: dockerd.env, maxBuffer: 16 << 20 });
  /** A container of the image on the host network (this dockerd has no bridge), the fleet token in its environment. */
  async function role(name: string, args: string[], entrypoint?: string): Promise<void> {
    names.push(name);
    await docker(['run', '-d', '--name', name, '--network', 'host', '-e', `REAPI_FLEET_TOKEN=${TEST_FLEET_TOKEN}`, ...(entrypoint ? ['--entrypoint', entrypoint] : []), 'reapi:latest', ...args]);
  }
  async function listening(port: number, name: string): Promise<void> {
    for (let i = 0; i < 150; i++) {
      const { stdout } = await docker(['logs', name]).catch(() => ({ stdout: '' }));
      if (stdout.includes(`grpc=${port}`) || stdout.includes('Ready to accept connections')) return;
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`${name} did not start: ${(await docker(['logs', name]).catch(() => ({ stderr: '' }))).stderr}`);
  }

  before(async () => {
    dockerd = await startDockerd({ images: ['reapi'] });
    dir = await mkdtemp(join(tmpdir(), 'reapi-image-'));
    await chmod(dir, 0o755);
    ports.redis = await freePort();
    ports.cas = [await freePort(), await freePort()];
    ports.scheduler = await freePort();
    await role('reapi-img-redis', ['--port', String(ports.redis), '--bind', '127.0.0.1', '--save', ''], 'redis-server');
    await listening(ports.redis, 'reapi-img-redis');
    for (const [i, p] of ports.cas.entries()) {
      await role(`reapi-img-cas${i}`, ['cas', '--port', String(p), '--http-port', '0', '--data-dir', '/data']);
      await listening(p, `reapi-img-cas${i}`);
    }
    const cas = ports.cas.map((p) => `127.0.0.1:${p}`).join(',');
    const redis = `redis://127.0.0.1:${ports.redis}`;
    await role('reapi-img-scheduler', ['scheduler', '--port', String(ports.scheduler), '--http-port', '0', '--redis', redis, '--cas', cas, '--replicas', '2']);
    await listening(ports.scheduler, 'reapi-img-scheduler');
    // Workers need privileges a container here cannot have (cgroups, namespaces); one runs beside.
    worker = await startReapi(['worker', '--redis', redis, '--cas', cas, '--replicas', '2', '--data-dir', join(dir, 'w'), '--work-dir', join(dir, 'work'), '--concurrency', '1']);
    c = connectExec(`127.0.0.1:${ports.scheduler}`, 'main');
  });

  after(async () => {
    c?.close();
    await worker?.stop();
    for (const n of names) await docker(['rm', '-f', n]).catch(() => {});
    await dockerd?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('runs an action through the containers, and keeps serving with a storage node\u2019s container killed', async () => {
    const first = await run(c, { sh: 'echo from the image > out.txt', outputFiles: ['out.txt'] });
    assert.equal(first.response.status?.code ?? 0, 0, JSON.stringify(first.response.status));
    await docker(['kill', 'reapi-img-cas0']);
    const hit = await execute(c, first.action.actionDigest);
    assert.equal(hit.response.cached_result, true, 'the entry and its blobs are on the other node too');
    const next = await run(c, { sh: 'echo after the loss > out.txt', outputFiles: ['out.txt'] });
    assert.equal(next.response.status?.code ?? 0, 0, JSON.stringify(next.response.status));
  });
});
