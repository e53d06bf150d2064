// BwrapRunner against real bubblewrap, real cgroups and a real sandbox user. Needs root and bwrap.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, rmdir, stat, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import type { RunOutcome, RunSpec } from '../../execution/runner.ts';
import { BwrapRunner } from '../../worker/runners/bwrap-runner.ts';
import { sandboxSkip } from '../support/sandbox.ts';

const skip = sandboxSkip;
const cgroupRoot = `reapi-test-${process.pid}`;
const noLimits = { memoryBytes: 0, maxProcesses: 0, maxFileBytes: 0 };

describe('BwrapRunner', { skip }, () => {
  let runner: BwrapRunner;
  let base: string;
  let sandboxUid: number;

  before(async () => {
    base = await mkdtemp(join(tmpdir(), 'bwrap-runner-test-'));
    // The unprivileged bwrap must be able to reach the exec roots below.
    await chmod(base, 0o711);
    runner = new BwrapRunner({ cgroupRoot });
    const info = await runner.ready();
    sandboxUid = info.user.uid;
  });

  after(async () => {
    await runner?.dispose();
    if (base) await rm(base, { recursive: true, force: true });
    // Every run's cgroup must be gone; then remove the test's parent cgroups.
    const parents = [join('/sys/fs/cgroup', cgroupRoot)];
    for (const d of await readdir('/sys/fs/cgroup').catch(() => [])) parents.push(join('/sys/fs/cgroup', d, cgroupRoot));
    const leftovers: string[] = [];
    for (const p of parents.filter((x) => existsSync(x))) {
      for (const e of await readdir(p, { withFileTypes: true })) if (e.isDirectory()) leftovers.push(join(p, e.name));
      await rmdir(p).catch(() => {});
    }
    assert.deepEqual(leftovers, [], 'run cgroups left behind');
  });

  async function execRoot(): Promise<string> {
    return mkdtemp(join(base, 'er-'));
  }

  function run(root: string, argv: string[], more: Partial<RunSpec> = {}, signal = new AbortController().signal): Promise<RunOutcome> {
    return runner.run(
      {
        execRoot: root,
        argv,
        env: {},
        workingDirectory: '',
        timeoutMs: 20_000,
        limits: noLimits,
        maxOutputBytes: 1 << 20,
        ...more,
      },
      signal,
    );
  }

  const out = (o: RunOutcome) => o.stdout.toString('utf8');

  test('echo with env and exit code; the environment is exactly the Command env (+ default PATH)', async () => {
    const root = await execRoot();
    const o = await run(root, ['/bin/sh', '-c', 'echo "$GREETING"; echo oops >&2; exit 7'], { env: { GREETING: 'hi there' } });
    assert.equal(o.failure, undefined);
    assert.equal(o.exitCode, 7);
    assert.equal(out(o), 'hi there\n');
    assert.equal(o.stderr.toString(), 'oops\n');
    assert.equal(o.truncated, false);
    assert.ok(o.completedAt >= o.startedAt);

    const env = await run(root, ['env'], { env: { A: '1' } });
    assert.deepEqual(out(env).trim().split('\n').sort(), ['A=1', 'PATH=/usr/bin:/bin']);
    const withPath = await run(root, ['env'], { env: { PATH: '/usr/local/bin:/usr/bin' }, variation: { tz: 'UTC' } });
    assert.deepEqual(out(withPath).trim().split('\n').sort(), ['PATH=/usr/local/bin:/usr/bin', 'TZ=UTC']);
  });

  test('working directory, exec root mount, umask and hostname', async () => {
    const root = await execRoot();
    await mkdir(join(root, 'sub/dir'), { recursive: true });
    const o = await run(root, ['/bin/sh', '-c', 'pwd; umask; hostname'], { workingDirectory: 'sub/dir' });
    assert.equal(out(o), '/work/sub/dir\n0022\nlocalhost\n');
    const v = await run(root, ['/bin/sh', '-c', 'pwd; umask; hostname'], {
      workingDirectory: 'sub',
      variation: { execRootMount: '/build/root', umask: 0o077, hostname: 'variant' },
    });
    assert.equal(out(v), '/build/root/sub\n0077\nvariant\n');
    const escape = await run(root, ['true'], { workingDirectory: '../..' });
    assert.equal(escape.failure?.kind, 'sandbox-error');
  });

  test('writes in the exec root reach the host; writes elsewhere and to inputs do not', async () => {
    const root = await execRoot();
    const tag = randomBytes(6).toString('hex');
    await mkdir(join(root, 'out'));
    await writeFile(join(root, 'input.txt'), 'input\n', { mode: 0o644 });
    const script = [
      'echo result > out/result.txt',
      `echo leak > /tmp/leak-${tag} && cat /tmp/leak-${tag}`,
      `echo leak > /usr/leak-${tag} 2>/dev/null && echo usr-writable`,
      'echo modified >> input.txt 2>/dev/null && echo input-writable',
      'true',
    ].join('; ');
    const o = await run(root, ['/bin/sh', '-c', script]);
    assert.equal(o.exitCode, 0);
    assert.equal(out(o), 'leak\n'); // /tmp is a private tmpfs; /usr is read-only; inputs stay read-only
    assert.equal(await readFile(join(root, 'out/result.txt'), 'utf8'), 'result\n');
    assert.equal((await stat(join(root, 'out/result.txt'))).uid, sandboxUid);
    assert.equal(await readFile(join(root, 'input.txt'), 'utf8'), 'input\n');
    assert.equal(existsSync(`/tmp/leak-${tag}`), false);
    assert.equal(existsSync(`/usr/leak-${tag}`), false);
  });

  test('runs as the non-root sandbox user without capabilities', async () => {
    const o = await run(await execRoot(), ['/bin/sh', '-c', 'id -u; id -un; grep -E "^Cap(Eff|Prm|Bnd):" /proc/self/status']);
    const lines = out(o).trim().split('\n');
    assert.notEqual(lines[0], '0');
    assert.equal(lines[0], String(sandboxUid));
    assert.equal(lines[1], 'reapi-sandbox');
    for (const cap of lines.slice(2)) assert.match(cap, /:\s+0+$/);
  });

  test('/etc/shadow and /root are unreadable; passwd holds no host accounts', async () => {
    const root = await execRoot();
    const shadow = await run(root, ['cat', '/etc/shadow']);
    assert.notEqual(shadow.exitCode, 0);
    assert.equal(out(shadow), '');
    const rootHome = await run(root, ['ls', '-A', '/root']);
    assert.notEqual(rootHome.exitCode, 0);
    const passwd = await run(root, ['cat', '/etc/passwd']);
    assert.doesNotMatch(out(passwd), /^root:/m);
    assert.match(out(passwd), /^reapi-sandbox:/m);
  });

  test('no network: no name resolution, no TCP to a host port, only lo', async () => {
    let connections = 0;
    const server: Server = createServer((s) => {
      connections++;
      s.destroy();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    try {
      const root = await execRoot();
      // Sanity check from the host side: the port is reachable outside the sandbox.
      execFileSync('bash', ['-c', `exec 3<>/dev/tcp/127.0.0.1/${port}`]);
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(connections, 1);

      const tcp = await run(root, ['bash', '-c', `exec 3<>/dev/tcp/127.0.0.1/${port} && echo connected`]);
      assert.notEqual(tcp.exitCode, 0);
      assert.doesNotMatch(out(tcp), /connected/);
      const dns = await run(root, ['getent', 'hosts', 'example.com']);
      assert.notEqual(dns.exitCode, 0);
      const ifaces = await run(root, ['cat', '/proc/net/dev']);
      const names = out(ifaces)
        .split('\n')
        .slice(2)
        .map((l) => l.split(':')[0]?.trim())
        .filter(Boolean);
      assert.deepEqual(names, ['lo']);
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(connections, 1);
    } finally {
      server.close();
    }
  });

  test('host processes are invisible', async () => {
    const o = await run(await execRoot(), ['/bin/sh', '-c', 'ls /proc | grep -E "^[0-9]+$"; echo ---; ps -e -o pid=,comm=']);
    const [procPart = '', psPart = ''] = out(o).split('---\n');
    const pids = procPart.trim().split('\n').map(Number);
    assert.ok(pids.length <= 4, `sandbox sees pids ${pids.join(',')}`);
    assert.ok(!pids.includes(process.pid));
    assert.ok(psPart.trim().split('\n').length <= 4, psPart);
    assert.doesNotMatch(psPart, /node/);
  });

  test('fork bomb is stopped by the pids limit', async () => {
    const t0 = Date.now();
    const o = await run(await execRoot(), ['bash', '-c', 'bomb() { bomb | bomb; }; bomb'], {
      limits: { ...noLimits, maxProcesses: 40 },
      timeoutMs: 20_000,
    });
    assert.equal(o.failure?.kind, 'process-limit', JSON.stringify(o.failure));
    assert.match(o.failure?.message ?? '', /process limit of 40 reached/);
    assert.ok(Date.now() - t0 < 10_000, 'ended by the limit, not by the timeout');
  });

  test('memory hog is stopped by the memory limit', async () => {
    const o = await run(await execRoot(), ['/bin/sh', '-c', 'head -c 1G /dev/zero | tail > /dev/null'], {
      limits: { ...noLimits, memoryBytes: 64 << 20 },
    });
    assert.equal(o.failure?.kind, 'memory-limit', JSON.stringify(o.failure));
    assert.match(o.failure?.message ?? '', /memory limit of 64 MiB exceeded/);
    assert.notEqual(o.exitCode, 0);
    assert.ok(o.usage.maxRssBytes > 32 << 20, `peak ${o.usage.maxRssBytes}`);
  });

  test('file size limit', async () => {
    const o = await run(await execRoot(), ['/bin/sh', '-c', 'head -c 1M /dev/zero > big.bin'], {
      limits: { ...noLimits, maxFileBytes: 64 * 1024 },
    });
    assert.equal(o.failure?.kind, 'file-size-limit', JSON.stringify(o));
  });

  test('timeout kills the whole tree, including a setsid double-forked sleeper', async () => {
    const root = await execRoot();
    const tag = `${Date.now() % 1_000_000}${process.pid % 1000}`;
    const escaped = `1000.${tag}`;
    const main = `300.${tag}`;
    const script = `setsid sh -c '(sleep ${escaped} & echo $! > sleeper.pid) &'; sleep ${main}`;
    const t0 = Date.now();
    const running = run(root, ['/bin/sh', '-c', script], { timeoutMs: 1500 });

    // The pid file holds the in-sandbox pid; find the host pids by their unique sleep arguments.
    const hostPid = new Map<string, number>();
    for (let i = 0; i < 100 && hostPid.size < 2; i++) {
      await new Promise((r) => setTimeout(r, 20));
      if (!existsSync(join(root, 'sleeper.pid'))) continue;
      for (const e of await readdir('/proc')) {
        if (!/^\d+$/.test(e)) continue;
        const cmd = await readFile(`/proc/${e}/cmdline`, 'utf8').catch(() => '');
        for (const arg of [escaped, main]) if (cmd === `sleep\0${arg}\0`) hostPid.set(arg, Number(e));
      }
    }
    assert.match(await readFile(join(root, 'sleeper.pid'), 'utf8'), /^\d+\n$/);
    const sleeper = hostPid.get(escaped);
    const mainPid = hostPid.get(main);
    assert.ok(sleeper && mainPid, 'both sleepers found on the host');
    const sessionOf = async (pid: number) => Number((await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]?.split(' ')[3]);
    assert.notEqual(await sessionOf(sleeper), await sessionOf(mainPid), 'the sleeper escaped into its own session');
    const ppid = Number((await readFile(`/proc/${sleeper}/stat`, 'utf8')).split(') ')[1]?.split(' ')[1]);
    assert.notEqual(ppid, mainPid, 'the sleeper is orphaned (double fork)');

    const o = await running;
    assert.equal(o.failure?.kind, 'timeout');
    assert.equal(o.failure?.message, 'action timed out after 1.5 s');
    assert.equal(o.exitCode, 137);
    assert.ok(Date.now() - t0 < 5000);
    for (const pid of [sleeper, mainPid]) {
      assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' }, `pid ${pid} survived`);
    }
  });

  test('huge stdout is truncated and drained', async () => {
    const o = await run(await execRoot(), ['/bin/sh', '-c', 'head -c 20000000 /dev/zero; echo done >&2'], { maxOutputBytes: 1000 });
    assert.equal(o.exitCode, 0);
    assert.equal(o.failure, undefined);
    assert.equal(o.stdout.length, 1000);
    assert.equal(o.stderr.toString(), 'done\n');
    assert.equal(o.truncated, true);
  });

  test('sandbox setup errors are reported as such; a missing program is an ordinary 127', async () => {
    const broken = new BwrapRunner({ cgroupRoot, extraReadOnlyBinds: ['/nonexistent-reapi-bind'] });
    const o = await broken.run(
      { execRoot: await execRoot(), argv: ['true'], env: {}, workingDirectory: '', timeoutMs: 5000, limits: noLimits, maxOutputBytes: 1024 },
      new AbortController().signal,
    );
    assert.equal(o.failure?.kind, 'sandbox-error');
    assert.match(o.failure?.message ?? '', /nonexistent-reapi-bind/);
    await broken.dispose();
    const missing = await run(await execRoot(), ['no-such-program-reapi']);
    assert.equal(missing.failure, undefined);
    assert.equal(missing.exitCode, 127);
    assert.match(missing.stderr.toString(), /no-such-program-reapi/);
  });

  test('AbortSignal cancels', async () => {
    const ac = new AbortController();
    const t0 = Date.now();
    setTimeout(() => ac.abort(), 300);
    const o = await run(await execRoot(), ['sleep', '100'], {}, ac.signal);
    assert.equal(o.failure?.kind, 'cancelled');
    assert.ok(Date.now() - t0 < 5000);
    const pre = await run(await execRoot(), ['true'], {}, AbortSignal.abort());
    assert.equal(pre.failure?.kind, 'cancelled');
  });
});
