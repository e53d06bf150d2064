// Roles on one machine: distinct default ports, and a port already taken is a start error that
// names the flag (before a worker registers for jobs it could not serve).
import { strict as assert } from 'node:assert';
import { execFile } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { configFromFlags, ROLE_PORTS } from '../../cli/flags.ts';
import { startReapi, type ReapiProcess } from '../support/reapi-process.ts';
import { redisSkip, startRedis } from '../support/redis.ts';

const BIN = fileURLToPath(new URL('../../bin/reapi.mjs', import.meta.url));

test('each role has its own default ports; flags and config files still choose', () => {
  assert.deepEqual(ROLE_PORTS.cas, { port: 8990, httpPort: 8991 });
  const ports = (role: string, flags = {}) => {
    const c = configFromFlags(flags, role);
    return [c.port, c.httpPort];
  };
  assert.deepEqual(ports('serve'), [8980, 8981]);
  assert.deepEqual(ports('scheduler'), [8980, 8981]);
  assert.deepEqual(ports('cas'), [8990, 8991]);
  assert.deepEqual(ports('worker')[1], 8992);
  assert.deepEqual(ports('worker', { httpPort: '9100' })[1], 9100);
  const distinct = new Set([ROLE_PORTS.scheduler!.httpPort, ROLE_PORTS.cas!.httpPort, ROLE_PORTS.worker!.httpPort]);
  assert.equal(distinct.size, 3, 'scheduler, storage node and worker HTTP ports differ');
});

test('a worker whose HTTP port is taken exits at once, naming --http-port', async () => {
  const blocker: Server = createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  const port = (blocker.address() as { port: number }).port;
  try {
    const out = await new Promise<{ code: number | null; stderr: string }>((resolve) =>
      execFile(
        process.execPath,
        [BIN, 'worker', '--redis', 'redis://127.0.0.1:1', '--cas', '127.0.0.1:1', '--listen', '127.0.0.1', '--http-port', String(port), '--log-level', 'silent'],
        { timeout: 60_000 },
        (err, _stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stderr }),
      ),
    );
    assert.notEqual(out.code, 0);
    assert.match(out.stderr, new RegExp(`port ${port} on 127\\.0\\.0\\.1 is already in use \\(another reapi role on this machine\\?\\): pass --http-port N, or --http-port 0 for any free port`));
  } finally {
    blocker.close();
  }
});

test('two workers started alike on one machine get a work dir each', { skip: redisSkip || (process.getuid?.() !== 0 && 'workers need root') }, async () => {
  const redis = await startRedis();
  const dataDir = await mkdtemp(join(tmpdir(), 'reapi-two-workers-'));
  const started: ReapiProcess[] = [];
  try {
    for (let i = 0; i < 2; i++) started.push(await startReapi(['worker', '--redis', redis.url, '--cas', '127.0.0.1:1', '--data-dir', dataDir, '--concurrency', '1']));
    const workDirOf = async (w: ReapiProcess) => {
      // Log lines may reach stderr a moment after the listening line.
      for (let i = 0; i < 50; i++) {
        const line = w.logs().split('\n').find((l) => l.includes('worker taking jobs'));
        if (line) return (JSON.parse(line) as { workDir?: string }).workDir;
        await new Promise((r) => setTimeout(r, 100));
      }
      return undefined;
    };
    const dirs = [await workDirOf(started[0]!), await workDirOf(started[1]!)];
    assert.ok(dirs[0] && dirs[1], `both logged their work dir: ${dirs.join(', ')}`);
    assert.notEqual(dirs[0], dirs[1]);
    assert.equal(dirs[1], `${dirs[0]}-2`);
  } finally {
    for (const w of started) await w.stop();
    await redis.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
});
