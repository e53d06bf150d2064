// The Execution API over real gRPC against `startServe` (in-process queue, local bwrap worker):
// stages, results and outputs, ExecutedActionMetadata, caching and merging, WaitExecution; bad
// input answered with the right status and a message naming the problem; hostile actions
// contained end to end. Needs root and bwrap (the worker's sandbox).
// Run: node --import tsx --test test/integration/execution-grpc.test.ts
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { hostname } from 'node:os';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { status } from '@grpc/grpc-js';
import { digestOf, type Digest } from '../../common/digest.ts';
import type { Metrics } from '../../common/metrics.ts';
import { unpackAny } from '../../protos/index.ts';
import {
  addMessage,
  cachedResult,
  execute,
  executeFailure,
  exe,
  link,
  outputFile,
  outputTree,
  prepareAction,
  readBlob,
  run,
  stderrOf,
  stdoutOf,
  uploadAction,
  uploadBlobs,
  waitExecution,
  type ExecClients,
  type ExecuteOutcome,
} from '../support/execution.ts';
import { sandboxSkip } from '../support/sandbox.ts';
import { startTestServe, type TestServe } from '../support/serve.ts';

const MiB = 1024 * 1024;
const MAX_OUTPUT = 1 * MiB;
const MEMORY_LIMIT = 128 * MiB;
const MAX_PROCESSES = 32;
const MAX_TIMEOUT_S = 600;

const skip = sandboxSkip;

describe('Execution over gRPC (reapi serve)', { skip }, () => {
  let serve: TestServe;
  let metrics: Metrics;
  let c: ExecClients;

  before(async () => {
    serve = await startTestServe(
      {
        execution: { maxTimeoutSeconds: MAX_TIMEOUT_S },
        worker: { maxOutputBytes: MAX_OUTPUT, limits: { memoryBytes: MEMORY_LIMIT, maxProcesses: MAX_PROCESSES } },
      },
      { name: 'reapi-exec' },
    );
    ({ metrics, c } = serve);
  });

  after(async () => {
    await serve?.close();
  });

  /** reapi_actions_executed_total, all outcomes (or one). */
  async function executed(outcome?: string): Promise<number> {
    const m = await metrics.actionsExecuted.get();
    return m.values.filter((v) => outcome === undefined || v.labels.outcome === outcome).reduce((n, v) => n + v.value, 0);
  }

  /** A trivial action still runs: the server survived whatever the test sent. */
  async function assertServing(): Promise<void> {
    const r = await run(c, { sh: 'echo alive' });
    assert.equal(r.result.exit_code, 0);
    assert.equal(await stdoutOf(c, r.result), 'alive\n');
  }

  describe('running actions', () => {
    test('stages QUEUED -> EXECUTING -> COMPLETED, exit code, stdout and stderr', async () => {
      const r = await run(c, { sh: 'sleep 0.3; echo hello; echo oops >&2; exit 3', inputs: {} });
      assert.deepEqual(r.stages, ['QUEUED', 'EXECUTING', 'COMPLETED']);
      assert.match(r.name, /^operations\//);
      assert.ok(r.operations.every((op) => op.name === r.name), 'every message names the same operation');
      assert.equal(r.operations.at(-1)!.done, true);
      assert.ok(r.operations.slice(0, -1).every((op) => !op.done));
      assert.equal(r.result.exit_code, 3);
      assert.equal(await stdoutOf(c, r.result), 'hello\n');
      assert.equal(await stderrOf(c, r.result), 'oops\n');
      assert.equal(r.response.cached_result, false);
      // A failing action is never cached.
      assert.equal(await cachedResult(c, r.action.actionDigest), undefined);
    });

    test('outputs: files (executable bit), a directory as a Tree, parents created; inputs visible', async () => {
      const r = await run(c, {
        inputs: { 'tool.sh': exe('#!/bin/sh\necho tool "$@"\n'), data: { 'in.txt': 'input data\n' } },
        sh: [
          './tool.sh run > deep/nested/out.txt',
          'cat data/in.txt > copy.txt',
          "printf '#!/bin/sh\\necho hi\\n' > bin/run.sh && chmod 755 bin/run.sh",
          'mkdir -p out/dir/sub && echo a > out/dir/a.txt && echo b > out/dir/sub/b.txt',
          'cp tool.sh out/dir/tool.sh && ln -s a.txt out/dir/link',
        ].join(' && '),
        outputFiles: ['deep/nested/out.txt', 'copy.txt', 'bin/run.sh'],
        outputDirectories: ['out/dir'],
      });
      assert.equal(r.result.exit_code, 0, await stderrOf(c, r.result));
      assert.deepEqual(await outputFile(c, r.result, 'deep/nested/out.txt'), { data: Buffer.from('tool run\n'), executable: false });
      assert.deepEqual(await outputFile(c, r.result, 'copy.txt'), { data: Buffer.from('input data\n'), executable: false });
      const script = await outputFile(c, r.result, 'bin/run.sh');
      assert.equal(script?.executable, true);
      assert.equal(script?.data.toString(), '#!/bin/sh\necho hi\n');
      const tree = await outputTree(c, r.result, 'out/dir');
      assert.ok(tree, 'out/dir is in output_directories');
      assert.deepEqual(
        Object.fromEntries([...tree].map(([k, v]) => [k, 'data' in v ? { data: v.data.toString(), executable: v.executable } : v])),
        {
          'a.txt': { data: 'a\n', executable: false },
          'tool.sh': { data: '#!/bin/sh\necho tool "$@"\n', executable: true },
          link: { symlink: 'a.txt' },
          sub: { dir: true },
          'sub/b.txt': { data: 'b\n', executable: false },
        },
      );
    });

    test('ExecutedActionMetadata: worker, every timestamp, reapi.v1.ResourceUsage', async () => {
      const r = await run(c, { sh: 'echo meta', inputs: { f: 'x' } });
      const md = r.result.execution_metadata;
      assert.ok(md);
      assert.equal(md.worker, `${hostname()}:${process.pid}`);
      const names = [
        'queued_timestamp',
        'worker_start_timestamp',
        'input_fetch_start_timestamp',
        'input_fetch_completed_timestamp',
        'execution_start_timestamp',
        'execution_completed_timestamp',
        'output_upload_start_timestamp',
        'output_upload_completed_timestamp',
        'worker_completed_timestamp',
      ] as const;
      const now = Date.now();
      const ms = names.map((n) => {
        const ts = md[n];
        assert.ok(ts, `${n} is set`);
        const t = Number(ts.seconds) * 1000 + ts.nanos / 1e6;
        assert.ok(t > now - 60_000 && t <= now + 1000, `${n} = ${t} is recent`);
        return t;
      });
      // queued <= worker start <= fetch start <= fetch end, exec start <= exec end <= upload start <= upload end <= worker done
      for (const [a, b] of [[0, 1], [1, 2], [2, 3], [4, 5], [5, 6], [6, 7], [7, 8]] as const) {
        assert.ok(ms[a]! <= ms[b]!, `${names[a]} <= ${names[b]}`);
      }
      const usage = md.auxiliary_metadata.find((a) => a.type_url.endsWith('/reapi.v1.ResourceUsage'));
      assert.ok(usage, `auxiliary_metadata: ${md.auxiliary_metadata.map((a) => a.type_url).join(', ')}`);
      const u = unpackAny(usage, 'ResourceUsage');
      assert.equal(u.runner, 'bwrap');
      assert.equal(Number(u.input_files), 1);
    });

    test('a second Execute is a cache hit; skip_cache_lookup runs it again', async () => {
      const spec = { sh: 'echo cached; date +%s%N', outputFiles: ['none'] };
      const first = await run(c, spec);
      assert.equal(first.response.cached_result, false);
      const before = await executed();
      const second = await execute(c, first.action.actionDigest);
      assert.equal(second.response.cached_result, true);
      assert.deepEqual(second.stages, ['COMPLETED']);
      assert.equal(second.response.result?.stdout_digest?.hash, first.result.stdout_digest?.hash);
      assert.equal(await executed(), before, 'a cache hit runs nothing');
      assert.ok(await cachedResult(c, first.action.actionDigest));

      const third = await execute(c, first.action.actionDigest, { skipCacheLookup: true });
      assert.equal(third.response.cached_result, false);
      assert.equal(await executed(), before + 1);
      assert.notEqual(third.response.result?.stdout_digest?.hash, first.result.stdout_digest?.hash, 'it really ran again');
    });

    test('do_not_cache: never written to the ActionCache, never merged', async () => {
      const a = await uploadAction(c, { sh: 'sleep 0.5; echo uncached', doNotCache: true });
      const before = await executed();
      const [x, y] = await Promise.all([execute(c, a.actionDigest), execute(c, a.actionDigest)]);
      assert.notEqual(x.name, y.name, 'two operations');
      assert.equal(await executed(), before + 2, 'both ran');
      for (const o of [x, y]) {
        assert.equal(o.response.result?.exit_code, 0);
        assert.equal(o.response.cached_result, false);
      }
      assert.equal(await cachedResult(c, a.actionDigest), undefined);
      const again = await execute(c, a.actionDigest);
      assert.equal(again.response.cached_result, false);
      assert.equal(await executed(), before + 3);
    });

    test('identical concurrent cacheable Executes are merged into one execution', async () => {
      const a = await uploadAction(c, { sh: 'sleep 1; echo merged' });
      const before = await executed();
      const all = await Promise.all([execute(c, a.actionDigest), execute(c, a.actionDigest), execute(c, a.actionDigest)]);
      assert.equal(new Set(all.map((o) => o.name)).size, 1, `one operation: ${all.map((o) => o.name).join(', ')}`);
      assert.equal(await executed(), before + 1, 'one execution');
      for (const o of all) {
        assert.equal(o.response.result?.exit_code, 0);
        assert.equal(await readBlob(c, o.response.result?.stdout_digest).then(String), 'merged\n');
      }
    });

    test('WaitExecution on the operation name follows it to the same result', async () => {
      const a = await uploadAction(c, { sh: 'sleep 1; echo waited' });
      let waited: Promise<ExecuteOutcome> | undefined;
      const exec = await execute(c, a.actionDigest, {
        onOperation: (op) => {
          waited ??= waitExecution(c, op.name);
        },
      });
      assert.ok(waited);
      const w = await waited;
      assert.equal(w.name, exec.name);
      assert.equal(w.stages.at(-1), 'COMPLETED');
      assert.equal(w.response.result?.stdout_digest?.hash, exec.response.result?.stdout_digest?.hash);
      assert.equal(await stdoutOf(c, w.response.result!), 'waited\n');
      // Still answerable after it is done.
      const late = await waitExecution(c, exec.name);
      assert.deepEqual(late.stages, ['COMPLETED']);
      assert.equal(late.response.result?.exit_code, 0);
    });

    test('ExecutionPolicy.priority is accepted', async () => {
      const [hi, lo] = await Promise.all([
        run(c, { sh: 'echo high' }, { priority: -5 }),
        run(c, { sh: 'echo low' }, { priority: 100 }),
      ]);
      assert.equal(await stdoutOf(c, hi.result), 'high\n');
      assert.equal(await stdoutOf(c, lo.result), 'low\n');
    });
  });

  describe('bad input', () => {
    test('Action missing: FAILED_PRECONDITION with a MISSING violation', async () => {
      const p = prepareAction({ sh: 'echo never' });
      await uploadBlobs(c, [...p.blobs].filter(([h]) => h !== p.actionDigest.hash).map(([, b]) => b));
      const f = await executeFailure(c, p.actionDigest);
      assert.equal(f.code, status.FAILED_PRECONDITION, f.message);
      assert.match(f.message, new RegExp(p.actionDigest.hash));
      assert.deepEqual(
        f.violations.map((v) => [v.type, v.subject]),
        [['MISSING', `blobs/${p.actionDigest.hash}/${p.actionDigest.size_bytes}`]],
      );
      await assertServing();
    });

    test('input file blobs missing: FAILED_PRECONDITION listing every missing digest', async () => {
      const files = { 'a.txt': 'missing a', 'b.txt': 'missing b', sub: { 'c.txt': 'missing c', deeper: { 'd.txt': 'missing d' } } };
      const contents = ['missing a', 'missing b', 'missing c', 'missing d'].map((s) => digestOf(Buffer.from(s)));
      const hashes = new Set(contents.map((d) => d.hash));
      const p = await uploadAction(c, { sh: 'cat a.txt', inputs: files }, (h) => hashes.has(h));
      const f = await executeFailure(c, p.actionDigest);
      assert.equal(f.code, status.FAILED_PRECONDITION, f.message);
      for (const d of contents) assert.match(f.message, new RegExp(`${d.hash}/${d.size_bytes}`));
      assert.deepEqual(
        f.violations.map((v) => `${v.type} ${v.subject}`).sort(),
        contents.map((d) => `MISSING blobs/${d.hash}/${d.size_bytes}`).sort(),
      );
      assert.equal(await cachedResult(c, p.actionDigest), undefined);
      await assertServing();
    });

    /** A tree whose root (or a subdirectory) holds exactly these raw entries. */
    async function badTree(entries: { files?: string[]; directories?: string[] }, nested: boolean): Promise<Digest> {
      const blobs = new Map<string, Buffer>();
      const content = Buffer.from('content');
      blobs.set(digestOf(content).hash, content);
      const empty = addMessage(blobs, 'Directory', {});
      const bad = addMessage(blobs, 'Directory', {
        files: (entries.files ?? []).map((name) => ({ name, digest: digestOf(content) })),
        directories: (entries.directories ?? []).map((name) => ({ name, digest: empty })),
      });
      const root = nested ? addMessage(blobs, 'Directory', { directories: [{ name: 'sub', digest: bad }] }) : bad;
      await uploadBlobs(c, blobs.values());
      return root;
    }

    const badDirectories: Array<{ what: string; entries: { files?: string[]; directories?: string[] }; nested: boolean; message: RegExp }> = [
      { what: 'a file named ".."', entries: { files: ['..'] }, nested: false, message: /file name "\.\." is "\.\."/ },
      { what: 'a directory named ".."', entries: { directories: ['..'] }, nested: true, message: /directory name "\.\." is "\.\."/ },
      { what: 'a name containing "/"', entries: { files: ['a/b'] }, nested: false, message: /"a\/b" contains "\/"/ },
      { what: 'an empty name', entries: { files: [''] }, nested: true, message: /file name "" is empty/ },
      { what: 'a duplicated name', entries: { files: ['dup'], directories: ['dup'] }, nested: false, message: /"dup" has the same name as a file/ },
      { what: 'a duplicated file', entries: { files: ['x', 'x'] }, nested: true, message: /"x" has the same name/ },
      { what: 'unsorted entries', entries: { files: ['b', 'a'] }, nested: true, message: /"a" is out of order \(after "b"/ },
    ];
    for (const t of badDirectories) {
      test(`Directory with ${t.what}: INVALID_ARGUMENT naming the entry`, async () => {
        const root = await badTree(t.entries, t.nested);
        const p = await uploadAction(c, { sh: 'true', inputRoot: root });
        const f = await executeFailure(c, p.actionDigest);
        assert.equal(f.code, status.INVALID_ARGUMENT, f.message);
        assert.match(f.message, t.message);
        assert.match(f.message, /Directory [0-9a-f]{64}\/\d+/);
      });
    }

    test('output path escaping the root: INVALID_ARGUMENT', async () => {
      for (const outputs of [{ outputFiles: ['../x'] }, { outputDirectories: ['a/../../x'] }, { outputPaths: ['/etc/x'] }]) {
        const p = await uploadAction(c, { sh: 'true', ...outputs });
        const f = await executeFailure(c, p.actionDigest);
        assert.equal(f.code, status.INVALID_ARGUMENT, f.message);
        assert.match(f.message, /escapes the input root|is absolute/);
        assert.match(f.message, /\.\.\/x|\/etc\/x/);
      }
      await assertServing();
    });

    test('output symlink pointing outside the exec root: FAILED_PRECONDITION, nothing cached', async () => {
      for (const target of ['/etc/passwd', '../../../etc/passwd']) {
        const p = await uploadAction(c, { sh: `ln -s ${target} out`, outputFiles: ['out'] });
        const f = await executeFailure(c, p.actionDigest);
        assert.equal(f.code, status.FAILED_PRECONDITION, f.message);
        assert.match(f.message, /output symlink "out"/);
        assert.equal(await cachedResult(c, p.actionDigest), undefined);
      }
    });

    test('a declared output that was not produced is absent from the result', async () => {
      const r = await run(c, { sh: 'echo yes > made.txt', outputFiles: ['made.txt', 'not-made.txt'], outputDirectories: ['nodir'] });
      assert.equal(r.result.exit_code, 0);
      assert.deepEqual(r.result.output_files.map((f) => f.path), ['made.txt']);
      assert.deepEqual(r.result.output_directories, []);
    });

    test(`100 MiB of stdout is cut at maxOutputBytes (${MAX_OUTPUT} bytes) and the action completes`, async () => {
      const r = await run(c, { sh: 'head -c 104857600 /dev/zero; echo done >&2' });
      assert.equal(r.result.exit_code, 0);
      assert.equal(Number(r.result.stdout_digest?.size_bytes), MAX_OUTPUT);
      assert.ok((await readBlob(c, r.result.stdout_digest)).equals(Buffer.alloc(MAX_OUTPUT)));
      assert.match(await stderrOf(c, r.result), /^done\n[^]*were cut there/);
      assert.match(r.response.message, /exceeded \d+ bytes and were cut/);
      assert.equal(await cachedResult(c, r.action.actionDigest), undefined, "a cut result is never cached");
    });

    test('an unknown platform property fails fast with FAILED_PRECONDITION naming it', async () => {
      const p = await uploadAction(c, { sh: 'true', platform: { OSFamily: 'Linux', gpu: 'h100' } });
      const started = Date.now();
      const f = await executeFailure(c, p.actionDigest, { deadlineMs: 10_000 });
      assert.ok(Date.now() - started < 5000, `answered in ${Date.now() - started} ms`);
      assert.equal(f.code, status.FAILED_PRECONDITION, f.message);
      assert.match(f.message, /gpu=h100/);
      assert.doesNotMatch(f.message, /OSFamily/, 'only the property no worker offers is named');
    });

    test('Action.timeout exceeded: DEADLINE_EXCEEDED, nothing cached', async () => {
      const p = await uploadAction(c, { sh: 'echo started; sleep 30', timeoutSeconds: 1 });
      const started = Date.now();
      const f = await executeFailure(c, p.actionDigest);
      const ms = Date.now() - started;
      assert.equal(f.code, status.DEADLINE_EXCEEDED, f.message);
      assert.match(f.message, /timed out after 1 s/);
      assert.ok(ms < 10_000, `took ${ms} ms`);
      // The partial result comes along for debugging.
      assert.equal(await stdoutOf(c, f.response!.result!), 'started\n');
      assert.equal(await cachedResult(c, p.actionDigest), undefined);
    });

    test('Action.timeout over the maximum: INVALID_ARGUMENT', async () => {
      const p = await uploadAction(c, { sh: 'true', timeoutSeconds: MAX_TIMEOUT_S + 1 });
      const f = await executeFailure(c, p.actionDigest);
      assert.equal(f.code, status.INVALID_ARGUMENT, f.message);
      assert.match(f.message, new RegExp(`timeout of ${MAX_TIMEOUT_S + 1} s exceeds .* maximum of ${MAX_TIMEOUT_S} s`));
      await assertServing();
    });
  });

  describe('hostile actions are contained', () => {
    let listener: Server;
    let port: number;
    let connections = 0;

    before(async () => {
      listener = createServer((s) => {
        connections++;
        s.end('hello from the host\n');
      });
      await new Promise<void>((r) => listener.listen(0, '127.0.0.1', r));
      port = (listener.address() as { port: number }).port;
    });
    after(async () => {
      await new Promise<void>((r) => listener?.close(() => r()));
    });

    test('cat /etc/shadow fails', async () => {
      const p = await uploadAction(c, { sh: 'cat /etc/shadow' });
      const r = await execute(c, p.actionDigest);
      const result = r.response.result!;
      assert.notEqual(result.exit_code, 0);
      assert.equal(await stdoutOf(c, result), '');
      assert.match(await stderrOf(c, result), /shadow/);
      assert.equal(await cachedResult(c, p.actionDigest), undefined);
    });

    test('actions do not run as root', async () => {
      const r = await run(c, { sh: 'id -u; id -g', doNotCache: true });
      const [uid, gid] = (await stdoutOf(c, r.result)).trim().split('\n');
      assert.notEqual(uid, '0');
      assert.notEqual(gid, '0');
    });

    test('no network: a TCP port open on the host loopback is unreachable', async () => {
      // Sanity check: the port answers from outside the sandbox.
      // (async: the listener lives in this process's event loop)
      await promisify(execFile)('bash', ['-c', `exec 3<>/dev/tcp/127.0.0.1/${port}; head -1 <&3`]);
      const before = connections;
      const p = await uploadAction(c, { sh: `exec 3<>/dev/tcp/127.0.0.1/${port} && head -1 <&3 && echo CONNECTED` });
      const r = await execute(c, p.actionDigest);
      const result = r.response.result!;
      assert.notEqual(result.exit_code, 0);
      assert.doesNotMatch(await stdoutOf(c, result), /CONNECTED|hello/);
      assert.match(await stderrOf(c, result), /Connection refused|Network is unreachable|Cannot assign/);
      assert.equal(connections, before, 'no connection reached the host');
      assert.equal(await cachedResult(c, p.actionDigest), undefined);
    });

    test('a fork bomb ends with the process limit named', async () => {
      const p = await uploadAction(c, { sh: 'bomb() { bomb | bomb & }; bomb; sleep 30', timeoutSeconds: 25 });
      const started = Date.now();
      const r = await execute(c, p.actionDigest);
      const ms = Date.now() - started;
      const result = r.response.result!;
      assert.notEqual(result.exit_code, 0);
      assert.equal(r.response.status?.code ?? 0, 0, r.response.status?.message);
      assert.match(r.response.message, new RegExp(`process limit of ${MAX_PROCESSES} reached`));
      assert.match(await stderrOf(c, result), /reapi: process limit/);
      assert.ok(ms < 20_000, `ended by the limit, not the timeout (${ms} ms)`);
      assert.equal(await cachedResult(c, p.actionDigest), undefined);
    });

    test('a memory hog ends with the memory limit named', async () => {
      const p = await uploadAction(c, { sh: 'tail /dev/zero', timeoutSeconds: 25 });
      const started = Date.now();
      const r = await execute(c, p.actionDigest);
      const ms = Date.now() - started;
      const result = r.response.result!;
      assert.notEqual(result.exit_code, 0);
      assert.match(r.response.message, /memory limit of 128 MiB exceeded/);
      assert.match(await stderrOf(c, result), /reapi: memory limit/);
      assert.ok(ms < 20_000, `ended by the limit, not the timeout (${ms} ms)`);
      assert.equal(await cachedResult(c, p.actionDigest), undefined);
      await assertServing();
    });
  });
});
