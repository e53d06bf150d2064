// DockerRunner against a real dockerd started by the test (overlay2, --bridge=none,
// --iptables=false, private socket) with reapi-busybox imported by scripts/docker/build-images.sh;
// then the same through `reapi serve` over gRPC. Needs root, docker.io, busybox-static, bash-static.
// Run: node --import tsx --test test/integration/docker-runner.test.ts
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { ReapiError, Status } from '../../common/errors.ts';
import type { RunOutcome, RunSpec, Variation } from '../../execution/runner.ts';
import { DockerRunner, LABEL_INSTANCE, LABEL_PID } from '../../worker/runners/docker-runner.ts';
import { parseImage } from '../../worker/runners/docker-support.ts';
import { BUSYBOX_IMAGE, dockerSkipReason, startDockerd, type TestDockerd } from '../support/dockerd.ts';
import { startTestServe, type TestServe } from '../support/serve.ts';
import { execute, run, stderrOf, stdoutOf, uploadAction, type ExecClients } from '../support/execution.ts';

const IMAGE = `docker://${BUSYBOX_IMAGE}`;
const MiB = 1024 * 1024;
const limits = { memoryBytes: 256 * MiB, maxProcesses: 64, maxFileBytes: 0 };
const skip = dockerSkipReason();

test('parseImage', () => {
  assert.equal(parseImage('docker://reapi-busybox:latest'), 'reapi-busybox:latest');
  assert.equal(parseImage('docker://reapi-busybox'), 'reapi-busybox:latest');
  assert.equal(parseImage('docker://localhost:5000/x/y'), 'localhost:5000/x/y:latest');
  assert.equal(parseImage('docker://x@sha256:abcd'), 'x@sha256:abcd');
  assert.equal(parseImage('oci://x'), undefined);
  assert.equal(parseImage('docker://bad image'), undefined);
});

describe('DockerRunner', { skip }, () => {
  let dockerd: TestDockerd;
  let runner: DockerRunner;
  let base: string;

  before(async () => {
    dockerd = await startDockerd();
    base = await mkdtemp(join(tmpdir(), 'docker-runner-test-'));
    runner = new DockerRunner({ host: dockerd.host, stateDir: join(base, 'state') });
    const ready = await runner.ready();
    assert.equal(ready.storageDriver, 'overlay2');
  });

  after(async () => {
    await runner?.dispose();
    if (dockerd) {
      assert.deepEqual(await dockerd.containers(), [], 'every container is removed after dispose()');
      await dockerd.stop();
    }
    if (base) await rm(base, { recursive: true, force: true });
  });

  async function execRoot(files: Record<string, string> = {}): Promise<string> {
    const root = await mkdtemp(join(base, 'er-'));
    for (const [p, content] of Object.entries(files)) {
      await mkdir(join(root, p, '..'), { recursive: true });
      await writeFile(join(root, p), content);
    }
    return root;
  }

  function exec(root: string, argv: string[], more: Partial<RunSpec> = {}, signal = new AbortController().signal, r = runner): Promise<RunOutcome> {
    return r.forImage(IMAGE).run(
      { execRoot: root, argv, env: {}, workingDirectory: '', timeoutMs: 30_000, limits, maxOutputBytes: MiB, ...more },
      signal,
    );
  }
  const sh = (root: string, script: string, more: Partial<RunSpec> = {}, signal?: AbortSignal) => exec(root, ['sh', '-c', script], more, signal);
  const out = (o: RunOutcome) => o.stdout.toString('utf8');

  test('stdout, stderr and exit code; the environment is the image ENV plus exactly the Command env', async () => {
    const o = await sh(await execRoot(), 'echo hello; echo oops >&2; /bin/env | sort; exit 3', { env: { B: 'two words', A: "it's" } });
    assert.equal(o.failure, undefined);
    assert.equal(o.exitCode, 3);
    // PWD and SHLVL are the action's own shell's.
    assert.equal(out(o), "hello\nA=it's\nB=two words\nPATH=/bin\nPWD=/work\nSHLVL=1\n");
    assert.equal(o.stderr.toString(), 'oops\n');
  });

  test('runs in the image, as 65534, without capabilities, network or a writable root', async () => {
    const o = await sh(
      await execRoot(),
      [
        'cat /etc/reapi-image',
        'id -u; id -g',
        'grep -E "^(CapEff|CapBnd|NoNewPrivs)" /proc/self/status',
        'ls /sys/class/net',
        'hostname',
        'touch /etc/x 2>/dev/null && echo root-writable || echo root-read-only',
        'echo t > /tmp/t && cat /tmp/t',
        'grep " /tmp " /proc/mounts | cut -d" " -f3',
        'grep -q "^[^ ]* /work " /proc/mounts && echo work-mounted',
      ].join('; '),
    );
    assert.equal(o.exitCode, 0, o.stderr.toString());
    assert.equal(
      out(o),
      'reapi-busybox:latest\n65534\n65534\nCapEff:\t0000000000000000\nCapBnd:\t0000000000000000\nNoNewPrivs:\t1\nlo\nlocalhost\nroot-read-only\nt\ntmpfs\nwork-mounted\n',
    );
    // The marker really is the image's: the host has none.
    await assert.rejects(stat('/etc/reapi-image'));
  });

  test('inputs are readable, outputs land in the exec root, the working directory is honoured', async () => {
    const root = await execRoot({ 'src/in.txt': 'input\n', 'out/.keep': '' });
    await chmod(join(root, 'src/in.txt'), 0o444);
    const o = await sh(root, 'pwd; cat ../src/in.txt > result.txt; mkdir -p tree/sub && echo deep > tree/sub/f; echo top > ../top.txt', {
      workingDirectory: 'out',
    });
    assert.equal(o.exitCode, 0, o.stderr.toString());
    assert.equal(out(o), '/work/out\n');
    assert.equal(await readFile(join(root, 'out/result.txt'), 'utf8'), 'input\n');
    assert.equal(await readFile(join(root, 'out/tree/sub/f'), 'utf8'), 'deep\n');
    assert.equal(await readFile(join(root, 'top.txt'), 'utf8'), 'top\n');
    assert.equal((await stat(join(root, 'out/result.txt'))).uid, 65534);
  });

  test('a missing program exits 127 like a shell; a missing working directory is a sandbox error', async () => {
    const o = await exec(await execRoot(), ['no-such-program']);
    assert.equal(o.failure, undefined);
    assert.equal(o.exitCode, 127);
    assert.match(o.stderr.toString(), /no-such-program/);
    const w = await exec(await execRoot(), ['true'], { workingDirectory: 'nope' });
    assert.equal(w.failure?.kind, 'sandbox-error');
  });

  test('warm containers: later runs take a container started ahead of time', async () => {
    const r = new DockerRunner({ host: dockerd.host, stateDir: join(base, 'state-warm'), warmContainers: 1 });
    try {
      const first = await exec(await execRoot(), ['true'], {}, undefined, r);
      assert.equal(first.exitCode, 0);
      assert.deepEqual(r.counts, { warm: 0, cold: 1 });
      for (let i = 0; i < 3; i++) {
        // Let the pool refill: the run must find a started container.
        for (let t = 0; t < 300 && r.warmReady < 1; t++) await sleep(50);
        const root = await execRoot({ 'in.txt': `input ${i}`, 'sub/x': '' });
        const o = await exec(root, ['sh', '-c', 'cat in.txt > copy.txt; ls; pwd'], {}, undefined, r);
        assert.equal(o.exitCode, 0, o.stderr.toString());
        assert.equal(out(o), 'copy.txt\nin.txt\nsub\n/work\n');
        assert.equal(await readFile(join(root, 'copy.txt'), 'utf8'), `input ${i}`);
      }
      assert.deepEqual(r.counts, { warm: 3, cold: 1 });
    } finally {
      await r.dispose();
    }
    assert.deepEqual(await dockerd.containers(`${LABEL_INSTANCE}=${r.instance}`), []);
  });

  test('a timeout kills the container', async () => {
    const started = Date.now();
    const o = await exec(await execRoot(), ['sleep', '60'], { timeoutMs: 700 });
    assert.equal(o.failure?.kind, 'timeout');
    assert.match(o.failure.message, /timed out after 0\.7 s/);
    assert.equal(o.exitCode, 137);
    assert.ok(Date.now() - started < 15_000);
  });

  test('cancellation kills the container', async () => {
    const ac = new AbortController();
    const p = exec(await execRoot(), ['sleep', '60'], {}, ac.signal);
    setTimeout(() => ac.abort(), 1500);
    const o = await p;
    assert.equal(o.failure?.kind, 'cancelled');
  });

  test('an action cannot end its run early: it finds no script or nonce in the FIFO, and markers it prints do not count', async () => {
    // The old wrapper sourced its script from the FIFO line by line, so an action could read the
    // rest of it (the end markers' nonce), print the markers and keep running while the worker
    // collected its outputs. The action here tries exactly that and writes its output late.
    for (const warm of [false, true]) {
      const root = await execRoot();
      const forge = [
        's=$(timeout 2 cat /.reapi/ctl/go 2>/dev/null)',
        'n=$(printf %s "$s" | sed -n "s/.*reapi-end-\\([0-9a-f]*\\):.*/\\1/p" | head -n 1)',
        'echo "nonce:$n:" >&2',
        'printf "\\000reapi-end-$n:\\n" >&2',
        'printf "\\000reapi-end-$n:000\\n"',
        'sleep 1',
        'echo late > out',
        'exit 4',
      ].join('; ');
      const r = warm ? new DockerRunner({ host: dockerd.host, stateDir: join(base, 'state-forge'), warmContainers: 1 }) : runner;
      try {
        if (warm) {
          await exec(await execRoot(), ['true'], {}, undefined, r);
          for (let t = 0; t < 300 && r.warmReady < 1; t++) await sleep(50);
        }
        const o = await exec(root, ['sh', '-c', forge], {}, undefined, r);
        assert.match(o.stderr.toString(), /nonce::/, 'the FIFO held nothing of the script');
        assert.equal(await readFile(join(root, 'out'), 'utf8'), 'late\n', 'the run ended only after the action did');
        assert.equal(o.exitCode, 4);
      } finally {
        if (warm) await r.dispose();
      }
    }
  });

  test('memory, process and file size limits', async () => {
    const mem = await sh(await execRoot(), 'x=a; while :; do x="$x$x"; done', { limits: { ...limits, memoryBytes: 48 * MiB } });
    assert.equal(mem.failure?.kind, 'memory-limit', JSON.stringify(mem.failure));
    assert.equal(mem.exitCode, 137);
    const pids = await sh(await execRoot(), 'i=0; while [ $i -lt 200 ]; do sleep 5 & i=$((i+1)); done; wait', { limits: { ...limits, maxProcesses: 16 } });
    assert.equal(pids.failure?.kind, 'process-limit', JSON.stringify(pids.failure));
    const fsize = await sh(await execRoot(), 'head -c 100000 /dev/zero > big', { limits: { ...limits, maxFileBytes: 50_000 } });
    assert.equal(fsize.failure?.kind, 'file-size-limit', JSON.stringify(fsize.failure));
    assert.equal(fsize.exitCode, 153);
  });

  test('stdout beyond maxOutputBytes is cut and reported', async () => {
    const o = await sh(await execRoot(), 'head -c 5000 /dev/zero | tr "\\0" a; head -c 10 /dev/zero | tr "\\0" b >&2', { maxOutputBytes: 1000 });
    assert.equal(o.exitCode, 0);
    assert.equal(o.truncated, true);
    assert.equal(o.stdout.length, 1000);
    assert.equal(o.stderr.toString(), 'bbbbbbbbbb');
  });

  test('processes the action leaves behind are killed before its outputs are collected', async () => {
    const root = await execRoot();
    const started = Date.now();
    const o = await sh(root, '(sleep 1; echo late > late.txt) & sleep 60 & echo early');
    assert.equal(o.exitCode, 0);
    assert.equal(out(o), 'early\n');
    assert.ok(Date.now() - started < 10_000);
    await sleep(2000);
    await assert.rejects(stat(join(root, 'late.txt')));
  });

  test('a verification run varies exec path, hostname, umask, uid and container name', async () => {
    const variation = (tag: string): Variation => ({ execRootMount: `/build-${tag}/exec`, hostname: `verify-${tag}`, umask: 0o077, uid: 4242, gid: 4242 });
    const script = 'pwd; hostname; umask; id -u; id -g; touch f; stat -c %a f; sleep 2';
    const [a, b, names] = await Promise.all([
      sh(await execRoot(), script, { variation: variation('a') }),
      sh(await execRoot(), script, { variation: variation('b') }),
      (async () => {
        for (let i = 0; i < 100; i++) {
          const running = (await dockerd.containers(`${LABEL_PID}=${process.pid}`)).filter((c) => c.Labels['reapi.image'] && c.State === 'running');
          if (running.length >= 2) return running.map((c) => c.Names[0]);
          await sleep(100);
        }
        return [];
      })(),
    ]);
    assert.equal(out(a), '/build-a/exec\nverify-a\n0077\n4242\n4242\n600\n');
    assert.equal(out(b), '/build-b/exec\nverify-b\n0077\n4242\n4242\n600\n');
    assert.ok(names.length >= 2 && new Set(names).size === names.length, `distinct containers: ${names.join(' ')}`);
  });

  test('an image that is not present fails with FAILED_PRECONDITION naming it and how to import it', async () => {
    const root = await execRoot();
    await assert.rejects(runner.forImage('docker://reapi-debian:bookworm').run({ execRoot: root, argv: ['true'], env: {}, workingDirectory: '', timeoutMs: 10_000, limits, maxOutputBytes: MiB }, new AbortController().signal), (e: unknown) => {
      assert.ok(e instanceof ReapiError);
      assert.equal(e.code, Status.FAILED_PRECONDITION);
      assert.match(e.message, /"reapi-debian:bookworm"/);
      assert.match(e.message, /scripts\/docker\/build-images\.sh debian/);
      return true;
    });
    await assert.rejects(runner.forImage('docker://example.org/other:1').run({ execRoot: root, argv: ['true'], env: {}, workingDirectory: '', timeoutMs: 10_000, limits, maxOutputBytes: MiB }, new AbortController().signal), /example\.org\/other:1.*docker import/);
  });

  test('used containers are removed; only started warm ones remain', async () => {
    await runner.settled();
    const mine = await dockerd.containers(`${LABEL_PID}=${process.pid}`);
    // Warm containers (2 per image and limits used) are running and waiting; no used one is left.
    assert.ok(mine.length > 0);
    assert.ok(mine.every((c) => c.State === 'running'), mine.map((c) => `${c.Names[0]} ${c.State}`).join(', '));
  });

  test("a killed worker's containers are swept by the next one to start", async () => {
    const script = `
      import { DockerRunner } from ${JSON.stringify(resolve('worker/runners/docker-runner.ts'))};
      import { mkdtemp } from 'node:fs/promises';
      const r = new DockerRunner({ host: ${JSON.stringify(dockerd.host)}, warmContainers: 2 });
      const root = await mkdtemp(${JSON.stringify(join(base, 'child-'))});
      const spec = { execRoot: root, argv: ['sleep', '300'], env: {}, workingDirectory: '', timeoutMs: 600000, limits: { memoryBytes: 0, maxProcesses: 0, maxFileBytes: 0 }, maxOutputBytes: 1000 };
      void r.forImage(${JSON.stringify(IMAGE)}).run(spec, new AbortController().signal);
      process.stdout.write('started\\n');
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const childPid = child.pid!;
    await new Promise<void>((res, rej) => {
      child.stdout.on('data', (b: Buffer) => b.toString().includes('started') && res());
      child.on('exit', (c) => rej(new Error(`child exited ${c}`)));
    });
    let theirs: Awaited<ReturnType<TestDockerd['containers']>> = [];
    for (let i = 0; i < 200; i++) {
      theirs = (await dockerd.containers(`${LABEL_PID}=${childPid}`)).filter((c) => c.State === 'running');
      if (theirs.length >= 2) break;
      await sleep(100);
    }
    assert.ok(theirs.length >= 1, 'the child worker started containers');
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    assert.ok((await dockerd.containers(`${LABEL_PID}=${childPid}`)).length >= 1, 'they outlive the killed worker');

    const next = new DockerRunner({ host: dockerd.host, stateDir: join(base, 'state-next') });
    try {
      const ready = await next.ready();
      assert.ok(ready.swept >= theirs.length, `swept ${ready.swept}`);
      assert.deepEqual(await dockerd.containers(`${LABEL_PID}=${childPid}`), []);
      // A live worker's containers (this test's runner's warm ones) are left alone.
      assert.ok((await dockerd.containers(`${LABEL_PID}=${process.pid}`)).length > 0);
    } finally {
      await next.dispose();
    }
  });
});

describe('container-image actions through reapi serve', { skip }, () => {
  let dockerd: TestDockerd;
  let serve: TestServe;
  let c: ExecClients;

  before(async () => {
    dockerd = await startDockerd();
    serve = await startTestServe({ worker: { docker: { enabled: true, host: dockerd.host } } }, { name: 'reapi-docker' });
    c = serve.c;
  });

  after(async () => {
    await serve?.close();
    if (dockerd) {
      assert.deepEqual(await dockerd.containers(), [], 'no container left after the server stopped');
      await dockerd.stop();
    }
  });

  test('an action with container-image runs in the image; one without runs on the host', async () => {
    const inImage = await run(c, { argv: ['sh', '-c', 'cat /etc/reapi-image; cat in.txt > out/r.txt'], inputs: { 'in.txt': 'x\n', out: {} }, outputFiles: ['out/r.txt'], platform: { 'container-image': IMAGE } });
    assert.equal(inImage.result.exit_code, 0, await stderrOf(c, inImage.result));
    assert.equal(await stdoutOf(c, inImage.result), 'reapi-busybox:latest\n');
    assert.deepEqual(inImage.result.output_files.map((f) => f.path), ['out/r.txt']);
    const onHost = await run(c, { sh: 'test -e /etc/reapi-image && echo image || echo host' });
    assert.equal(await stdoutOf(c, onHost.result), 'host\n');
  });

  test('a missing image: FAILED_PRECONDITION naming the image and the import command', async () => {
    const action = await uploadAction(c, { argv: ['true'], platform: { 'container-image': 'docker://reapi-debian:bookworm' } });
    const outcome = await execute(c, action.actionDigest);
    assert.equal(outcome.response.status?.code, Status.FAILED_PRECONDITION);
    assert.match(outcome.response.status!.message, /reapi-debian:bookworm.*scripts\/docker\/build-images\.sh debian/s);
  });
});

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
