// Nondeterminism detection against `startServe` (in-process queue, local bwrap worker); one file
// because its suites share one server and its corpora (starting one costs seconds):
// - verification (verifyRate 1): a corpus of nondeterministic actions, every one flagged (report
//   with the right `what`, not cached, metric, warning in ExecuteResponse.message), and a corpus of
//   deterministic ones run twice 200+ times, none flagged, each cached as verified;
// - onMismatch 'fail' answers FAILED_PRECONDITION;
// - audits (auditRate 1): a contradicted entry stops being served, a correct one stays; the
//   quarantine write policy serves a client write only once an execution agrees;
// - `reapi reports --json` and GET /api/reports: newest first, filters.
// Needs root and bwrap; disorderfs, libfaketime, an en_US.UTF-8 locale and rustc where noted.
// Run: node --import tsx --test test/integration/determinism.test.ts
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, rm, writeFile, readFile } from 'node:fs/promises';
import { availableParallelism, homedir, tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { startServe } from '../../cli/roles.ts';
import { provenanceOf } from '../../cas/provenance.ts';
import { mergeConfig } from '../../common/config.ts';
import { digestOf, type Digest } from '../../common/digest.ts';
import { REQUEST_METADATA_KEY } from '../../common/grpc.ts';
import { encode, type MessageInput } from '../../protos/index.ts';
import type { Report } from '../../execution/report-store.ts';
import { detectVariationSupport, type VariationSupport } from '../../worker/variations.ts';
import {
  cachedResult,
  exe,
  executeFailure,
  followStream,
  link,
  outputFile,
  outputTree,
  stdoutOf,
  uploadAction,
  uploadBlobs,
  type ActionResult,
  type ActionSpec,
  type ExecClients,
  type ExecuteOutcome,
  type PreparedAction,
  type TreeSpec,
} from '../support/execution.ts';
import { unary } from '../support/storage.ts';
import { sandboxSkip } from '../support/sandbox.ts';
import { startTestServe, type TestServe } from '../support/serve.ts';
import { waitFor } from '../support/fleet.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const run = promisify(execFile);

const skip = sandboxSkip;

// ---------------------------------------------------------------------------
// Fixtures

type Fixture = TestServe;

function startFixture(overrides: Record<string, unknown>): Promise<Fixture> {
  return startTestServe(
    mergeConfig({ storage: { backend: 'memory' }, worker: { limits: { memoryBytes: 512 * 1024 * 1024, maxProcesses: 256 } } }, overrides),
    { name: 'reapi-det' },
  );
}

interface Labels {
  mnemonic: string;
  target: string;
}

const INVOCATION = 'determinism-test-invocation';

/** The RequestMetadata header Bazel sends with every call. */
function requestMetadata(l: Labels): grpc.Metadata {
  const md = new grpc.Metadata();
  md.set(
    REQUEST_METADATA_KEY,
    encode('RequestMetadata', {
      tool_details: { tool_name: 'determinism-test', tool_version: '1' },
      tool_invocation_id: INVOCATION,
      action_mnemonic: l.mnemonic,
      target_id: l.target,
    }),
  );
  return md;
}

/** Upload and Execute with request metadata (mnemonic, target). */
async function executeAs(f: Fixture, spec: ActionSpec, l: Labels): Promise<{ action: PreparedAction; outcome: ExecuteOutcome; result: ActionResult }> {
  const action = await uploadAction(f.c, spec);
  const outcome = await executeDigest(f, action.actionDigest, l);
  const st = outcome.response.status;
  if (st && st.code !== 0) throw new Error(`Execute answered status ${st.code}: ${st.message}`);
  assert.ok(outcome.response.result, 'ExecuteResponse without a result');
  return { action, outcome, result: outcome.response.result };
}

function executeDigest(f: Fixture, actionDigest: Digest, l: Labels): Promise<ExecuteOutcome> {
  return followStream(
    f.c.execution.Execute({ instance_name: f.c.instance, action_digest: actionDigest }, requestMetadata(l), { deadline: Date.now() + 120_000 }),
  );
}

/** GetActionResult with request metadata; undefined for NOT_FOUND. */
function getActionResult(f: Fixture, actionDigest: Digest, l: Labels): Promise<ActionResult | undefined> {
  return new Promise((resolvePromise, reject) => {
    f.c.actionCache.GetActionResult({ instance_name: f.c.instance, action_digest: actionDigest }, requestMetadata(l), (err, res) => {
      if (err?.code === grpc.status.NOT_FOUND) resolvePromise(undefined);
      else if (err) reject(err);
      else resolvePromise(res);
    });
  });
}

function updateActionResult(f: Fixture, actionDigest: Digest, result: MessageInput<'ActionResult'>, l: Labels): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    f.c.actionCache.UpdateActionResult(
      { instance_name: f.c.instance, action_digest: actionDigest, action_result: result },
      requestMetadata(l),
      (err) => (err ? reject(err) : resolvePromise()),
    );
  });
}

async function counter(m: { get(): Promise<{ values: Array<{ labels: Record<string, unknown>; value: number }> }> }, labels: Record<string, string> = {}): Promise<number> {
  const { values } = await m.get();
  return values.filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((n, v) => n + v.value, 0);
}

async function reports(f: Fixture, query = ''): Promise<Report[]> {
  const res = await fetch(`http://127.0.0.1:${f.server.httpPort}/api/reports${query}`);
  assert.equal(res.status, 200);
  return (await res.json()) as Report[];
}

/** Run `fn` over `items` with at most `limit` at once. */
async function pool<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

function findRustc(): string | undefined {
  const candidates = [...(process.env.PATH ?? '').split(delimiter).map((d) => join(d, 'rustc')), join(homedir(), '.cargo/bin/rustc'), '/usr/local/cargo/bin/rustc', '/usr/bin/rustc'];
  return candidates.find((p) => existsSync(p));
}

function findGcc(): string | undefined {
  return ['/usr/bin/gcc', '/usr/bin/cc'].find((p) => existsSync(p));
}

const HASHMAP_RS = `use std::collections::HashMap;
fn main() {
    let mut m = HashMap::new();
    for i in 0..64 { m.insert(format!("key{}", i), i); }
    for (k, v) in &m { println!("{} {}", k, v); }
}
`;

// ---------------------------------------------------------------------------
// Corpora

interface NondeterministicCase {
  name: string;
  spec: () => ActionSpec;
  /** The first difference a report must name ('stdout', 'exit code', an output path). */
  what: string;
  /** A reason to skip (a missing tool). */
  skip?: () => string | false;
}

/** Many files in an input directory: their order is all `ls -f` sees. */
const manyFiles = (n: number, content = (i: number) => `file ${i}\n`): TreeSpec =>
  Object.fromEntries(Array.from({ length: n }, (_, i) => [`f${String(i).padStart(3, '0')}.txt`, content(i)]));

let hashmapBinary: Buffer | undefined;
let rustSkip: string | false = 'rustc was not looked for';
let support: VariationSupport = {};

const NONDETERMINISTIC: NondeterministicCase[] = [
  { name: 'timestamp', spec: () => ({ sh: 'date +%s%N > stamp.txt', outputFiles: ['stamp.txt'] }), what: 'stamp.txt' },
  { name: 'bash-random', spec: () => ({ sh: 'echo $RANDOM' }), what: 'stdout' },
  { name: 'dev-urandom', spec: () => ({ sh: 'head -c 32 /dev/urandom > rand.bin', outputFiles: ['rand.bin'] }), what: 'rand.bin' },
  // Inside an output directory: the report names the file in the tree.
  { name: 'absolute-path', spec: () => ({ sh: 'mkdir -p out && realpath . > out/where.txt', outputDirectories: ['out'] }), what: 'out/where.txt' },
  { name: 'hostname', spec: () => ({ sh: 'hostname' }), what: 'stdout' },
  { name: 'umask', spec: () => ({ sh: 'touch made && stat -c %a made > mode.txt', outputFiles: ['mode.txt'] }), what: 'mode.txt' },
  { name: 'mktemp', spec: () => ({ sh: 'basename "$(mktemp)" > tmpname.txt', outputFiles: ['tmpname.txt'] }), what: 'tmpname.txt' },
  // The epoch in the local time zone: no clock involved, only TZ.
  { name: 'timezone', spec: () => ({ sh: 'date -d @0 +%H > hour.txt', outputFiles: ['hour.txt'] }), what: 'hour.txt' },
  {
    name: 'locale',
    spec: () => ({ sh: `printf "%'d\\n" 1234567 > number.txt`, outputFiles: ['number.txt'] }),
    what: 'number.txt',
    skip: () => (support.locale ? false : 'no second locale (en_US.UTF-8) is installed'),
  },
  {
    name: 'directory-order',
    spec: () => ({ sh: 'ls -f listing > order.txt', inputs: { listing: manyFiles(64) }, outputFiles: ['order.txt'] }),
    what: 'order.txt',
    skip: () => (support.disorderfs ? false : 'disorderfs is not installed'),
  },
  {
    name: 'rust-hashmap',
    spec: () => ({ argv: ['./hashmap'], inputs: { hashmap: exe(hashmapBinary!) } }),
    what: 'stdout',
    skip: () => rustSkip,
  },
  {
    // Two writers appending to one file: the interleaving depends on scheduling (2 CPUs vs 1).
    name: 'parallel-race',
    spec: () => ({
      sh: ': > race.txt; w() { for i in $(seq 1 1000); do echo "$1 $i" >> race.txt; done; }; w a & w b & wait',
      outputFiles: ['race.txt'],
    }),
    what: 'race.txt',
  },
  { name: 'uid', spec: () => ({ sh: 'id -u' }), what: 'stdout' },
  { name: 'cpu-count', spec: () => ({ sh: 'nproc > cpus.txt', outputFiles: ['cpus.txt'] }), what: 'cpus.txt', skip: () => (availableParallelism() < 2 ? 'one CPU only' : false) },
  // Hardlinked input on one run, copied on the other.
  { name: 'inode', spec: () => ({ sh: 'stat -c %i input.txt', inputs: { 'input.txt': 'some input\n' } }), what: 'stdout' },
  { name: 'aslr', spec: () => ({ sh: 'head -n 1 /proc/self/maps | cut -d " " -f 1' }), what: 'stdout' },
  // A symlink inside an output directory whose target embeds a random name.
  { name: 'symlink-target', spec: () => ({ sh: 'mkdir -p out && ln -s "$(basename "$(mktemp -u)")" out/link', outputDirectories: ['out'] }), what: 'out/link' },
  // Same bytes, different executable bit.
  {
    name: 'executable-bit',
    spec: () => ({ sh: 'echo tool > tool.sh && { [ "$(nproc)" -gt 1 ] && chmod +x tool.sh || true; }', outputFiles: ['tool.sh'] }),
    what: 'tool.sh',
    skip: () => (availableParallelism() < 2 ? 'one CPU only' : false),
  },
  // Only the exit code differs (success on all CPUs, failure on one).
  { name: 'exit-code', spec: () => ({ sh: '[ "$(nproc)" -gt 1 ]' }), what: 'exit code', skip: () => (availableParallelism() < 2 ? 'one CPU only' : false) },
];

interface DeterministicKind {
  name: string;
  spec: (i: number) => ActionSpec;
  /** Checks the first result is what the action should produce. */
  check?: (c: ExecClients, r: ActionResult, i: number) => Promise<void>;
  skip?: () => string | false;
}

const words = (i: number) => ['pear', 'apple', 'fig', 'kiwi', 'banana', `melon${i}`, 'cherry', 'date', 'grape', 'lime'].join('\n') + '\n';
const nums = (i: number) => Array.from({ length: 50 }, (_, j) => String(((j * 37 + i) % 101) + 1)).join('\n') + '\n';
const HELLO_C = '#include <stdio.h>\nint add(int a, int b) { return a + b; }\nint main(void) { printf("%d\\n", add(IDX, 2)); return 0; }\n';
const TAR = 'tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf pkg.tar src';

const DETERMINISTIC: DeterministicKind[] = [
  {
    name: 'cat',
    spec: (i) => ({ sh: 'cat a.txt b.txt > cat.txt', inputs: { 'a.txt': `a ${i}\n`, 'b.txt': 'b\n' }, outputFiles: ['cat.txt'] }),
    check: async (c, r, i) => assert.equal((await outputFile(c, r, 'cat.txt'))!.data.toString(), `a ${i}\nb\n`),
  },
  { name: 'sort', spec: (i) => ({ sh: 'sort words.txt > sorted.txt && sort -n nums.txt >> sorted.txt', inputs: { 'words.txt': words(i), 'nums.txt': nums(i) }, outputFiles: ['sorted.txt'] }) },
  { name: 'sha256sum', spec: (i) => ({ sh: 'sha256sum a.txt b/c.txt > sums.txt', inputs: { 'a.txt': `${i}\n`, b: { 'c.txt': 'c\n' } }, outputFiles: ['sums.txt'] }) },
  { name: 'tr', spec: (i) => ({ sh: 'tr a-z A-Z < in.txt > up.txt', inputs: { 'in.txt': words(i) }, outputFiles: ['up.txt'] }) },
  { name: 'gzip-n', spec: (i) => ({ sh: 'gzip -n -9 -c in.txt > in.txt.gz', inputs: { 'in.txt': words(i).repeat(20) }, outputFiles: ['in.txt.gz'] }) },
  {
    name: 'tar',
    spec: (i) => ({ sh: TAR, inputs: { src: { 'a.txt': `${i}\n`, tool: exe('#!/bin/sh\n'), sub: manyFiles(5) } }, outputFiles: ['pkg.tar'] }),
  },
  {
    name: 'seq',
    spec: (i) => ({ sh: 'seq 1 "$N" > seq.txt', env: { N: String(100 + i) }, outputFiles: ['seq.txt'] }),
    check: async (c, r, i) => assert.equal((await outputFile(c, r, 'seq.txt'))!.data.toString().split('\n').length, 100 + i + 1),
  },
  { name: 'awk', spec: (i) => ({ argv: ['/usr/bin/awk', '{ s += $1 } END { print s, NR }', 'nums.txt'], inputs: { 'nums.txt': nums(i) } }) },
  {
    name: 'cc-compile',
    spec: (i) => ({
      sh: `gcc -O2 -g -DIDX=${i} -ffile-prefix-map="$PWD"=. -c src/hello.c -o hello.o && gcc hello.o -o hello && ./hello > run.txt`,
      inputs: { src: { 'hello.c': HELLO_C } },
      outputFiles: ['hello.o', 'hello', 'run.txt'],
    }),
    check: async (c, r, i) => {
      assert.equal((await outputFile(c, r, 'run.txt'))!.data.toString(), `${i + 2}\n`);
      assert.equal((await outputFile(c, r, 'hello'))!.executable, true);
    },
    skip: () => (findGcc() ? false : 'no C compiler'),
  },
  {
    name: 'output-directory',
    spec: (i) => ({
      sh: 'mkdir -p out/sub/deeper && for j in 1 2 3 4; do echo "$j $IDX" > out/f$j.txt; done && echo deep > out/sub/deeper/d.txt && : > out/sub/empty',
      env: { IDX: String(i) },
      outputDirectories: ['out'],
    }),
    check: async (c, r) => assert.equal((await outputTree(c, r, 'out'))!.size, 8),
  },
  {
    name: 'executables',
    spec: (i) => ({ sh: 'printf "#!/bin/sh\\necho tool %s\\n" "$IDX" > tool.sh && chmod +x tool.sh && cp tool.sh plain.txt && chmod -x plain.txt', env: { IDX: String(i) }, outputFiles: ['tool.sh', 'plain.txt'] }),
    check: async (c, r) => {
      assert.equal((await outputFile(c, r, 'tool.sh'))!.executable, true);
      assert.equal((await outputFile(c, r, 'plain.txt'))!.executable, false);
    },
  },
  {
    name: 'symlinks',
    spec: (i) => ({
      sh: 'mkdir -p out && echo "$IDX" > out/target.txt && ln -s target.txt out/link.txt && ln -s ../out out/up && ln -s out/target.txt top-link',
      env: { IDX: String(i) },
      outputDirectories: ['out'],
      outputFiles: ['top-link'],
    }),
    check: async (c, r) => assert.deepEqual((await outputTree(c, r, 'out'))!.get('link.txt'), { symlink: 'target.txt' }),
  },
  { name: 'ls-sort', spec: (i) => ({ sh: 'ls -f listing | sort > names.txt', inputs: { listing: manyFiles(20 + (i % 5)) }, outputFiles: ['names.txt'] }) },
  {
    // Exactly the Command's environment (the action sets TZ and LANG itself, so neither is varied).
    name: 'env',
    spec: (i) => ({ argv: ['/usr/bin/env'], env: { PATH: '/usr/bin:/bin', TZ: 'UTC', LANG: 'C.UTF-8', IDX: String(i) } }),
    check: async (c, r, i) => assert.equal(await stdoutOf(c, r), `IDX=${i}\nLANG=C.UTF-8\nPATH=/usr/bin:/bin\nTZ=UTC\n`),
  },
  {
    // Time zone and locale set by the action: honoured, never varied.
    name: 'tz-and-locale-set',
    spec: (i) => ({ sh: `date -d @${i * 3600} "+%F %H" && printf "%'d\\n" 1234567`, env: { TZ: 'Asia/Tokyo', LC_ALL: 'C' } }),
    check: async (c, r, i) => assert.match(await stdoutOf(c, r), new RegExp(`^1970-01-0\\d ${String((9 + i) % 24).padStart(2, '0')}\\n1234567\\n$`)),
  },
];

/** Double executions of deterministic actions, at least. */
const DOUBLE_EXECUTIONS = 200;

// ---------------------------------------------------------------------------

describe('determinism: verification, audits, write policy, reports (reapi serve)', { skip }, () => {
  let main: Fixture;

  before(async () => {
    support = await detectVariationSupport();
    const rustc = findRustc();
    if (!rustc) {
      rustSkip = 'rustc is not installed';
    } else {
      // Compiled on the host; the binary is an input and runs in the sandbox.
      const dir = await mkdtemp(join(tmpdir(), 'reapi-det-rust-'));
      try {
        await writeFile(join(dir, 'hashmap.rs'), HASHMAP_RS);
        await run(rustc, ['-O', '-o', join(dir, 'hashmap'), join(dir, 'hashmap.rs')], { timeout: 120_000 });
        hashmapBinary = await readFile(join(dir, 'hashmap'));
        rustSkip = false;
      } catch (err) {
        rustSkip = `rustc failed: ${(err as Error).message.slice(0, 200)}`;
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    }
    // Callers are anonymous clients with permissions (not the trusted local user): the server
    // treats them as the clients of a shared deployment.
    main = await startFixture({ verification: { verifyRate: 1, directoryOrder: true }, auth: { anonymous: ['cache-read', 'cache-write', 'execute', 'reports-read'] } });
  });

  after(async () => {
    await main?.close();
  });

  describe('verifyRate 1 (directory order shuffled too)', () => {
    for (const k of NONDETERMINISTIC) {
      test(`nondeterministic: ${k.name} is flagged, reported and not cached`, async (t) => {
        const why = k.skip?.();
        if (why) return t.skip(why);
        const labels = { mnemonic: `Nondet_${k.name}`, target: `//nondeterministic:${k.name}` };
        const before = await counter(main.metrics.nondeterministicActions, { mnemonic: labels.mnemonic });
        const { action, outcome, result } = await executeAs(main, k.spec(), labels);
        assert.equal(result.exit_code, 0, 'the client gets the first run, which succeeded');
        assert.match(outcome.response.message, /^reapi: nondeterministic action, result not cached: two runs disagreed/);
        assert.ok(outcome.response.message.includes(`first in ${k.what}:`), outcome.response.message);
        assert.match(outcome.response.message, /the second run varied .*hostname.*; report [0-9a-f-]{36}$/);
        assert.equal(await cachedResult(main.c, action.actionDigest), undefined, 'not in the ActionCache');
        assert.equal(await counter(main.metrics.nondeterministicActions, { mnemonic: labels.mnemonic }), before + 1);
        const [report, ...more] = await reports(main, `?mnemonic=${labels.mnemonic}`);
        assert.ok(report, 'a report is stored');
        assert.equal(more.length, 0);
        assert.equal(report.kind, 'nondeterministic');
        assert.equal(report.target, labels.target);
        assert.equal(report.toolInvocationId, INVOCATION);
        assert.equal(report.actionDigest.hash, action.actionDigest.hash);
        assert.equal(report.differences[0]!.what, k.what, JSON.stringify(report.differences));
        assert.ok(outcome.response.message.includes(report.id));
        assert.equal(report.results.length, 2);
        // Both ActionResults are kept in the CAS.
        const missing = await unary(main.c.cas, main.c.cas.FindMissingBlobs, { instance_name: main.c.instance, blob_digests: report.results });
        assert.deepEqual(missing.missing_blob_digests, []);
        // Executing it again runs it again (no cache hit) and is flagged again.
        const again = await executeDigest(main, action.actionDigest, labels);
        assert.equal(again.response.cached_result, false);
        assert.match(again.response.message, /nondeterministic action/);
      });
    }

    test('the report describes the difference (text: first differing line; binary: offset) and the variation', async () => {
      const [text] = await reports(main, '?mnemonic=Nondet_timezone');
      assert.ok(text, 'timezone report');
      assert.match(text.differences[0]!.detail, /^line 1: "00" vs "(?!00)\d\d"$/);
      assert.ok(text.variation.includes('TZ') && text.variation.includes('umask 077') && text.variation.includes('exec root path'));
      const [binary] = await reports(main, '?mnemonic=Nondet_dev-urandom');
      assert.ok(binary, 'urandom report');
      assert.match(binary.differences[0]!.detail, /^byte offset \d+: [0-9a-f]+ vs [0-9a-f]+ \(sizes 32 vs 32\)$/);
    });

    test(`deterministic: ${DETERMINISTIC.length} kinds, ${DOUBLE_EXECUTIONS}+ double executions, every one agrees and is cached as verified`, async () => {
      const kinds = DETERMINISTIC.filter((k) => !k.skip?.());
      assert.ok(kinds.length >= 12, `only ${kinds.length} deterministic kinds can run here`);
      const nondeterministicBefore = await counter(main.metrics.nondeterministicActions);
      const agreedBefore = await counter(main.metrics.verifications, { result: 'agreed' });
      const reportsBefore = (await reports(main, '?limit=10000')).length;
      const perKind = Math.ceil(DOUBLE_EXECUTIONS / kinds.length);
      const jobs = kinds.flatMap((k) => Array.from({ length: perKind }, (_, i) => ({ k, i })));
      const flagged: string[] = [];
      await pool(jobs, 4, async ({ k, i }) => {
        const labels = { mnemonic: `Det_${k.name}`, target: `//deterministic:${k.name}_${i}` };
        const { action, outcome, result } = await executeAs(main, k.spec(i), labels);
        if (outcome.response.message !== '') {
          flagged.push(`${k.name} #${i}: ${outcome.response.message}`);
          return;
        }
        assert.equal(result.exit_code, 0, `${k.name} #${i} failed`);
        await k.check?.(main.c, result, i);
        const cached = await cachedResult(main.c, action.actionDigest);
        assert.ok(cached, `${k.name} #${i} is cached`);
        const p = provenanceOf(cached);
        assert.equal(p.source, 'worker', `${k.name} #${i}`);
        assert.equal(p.verified, true, `${k.name} #${i} is cached as verified`);
        // A second Execute is a cache hit.
        const hit = await executeDigest(main, action.actionDigest, labels);
        assert.equal(hit.response.cached_result, true);
      });
      assert.deepEqual(flagged, [], 'no deterministic action is flagged');
      assert.equal(await counter(main.metrics.nondeterministicActions), nondeterministicBefore);
      assert.equal((await counter(main.metrics.verifications, { result: 'agreed' })) - agreedBefore, jobs.length);
      assert.ok(jobs.length >= DOUBLE_EXECUTIONS, `${jobs.length} double executions`);
      assert.equal((await reports(main, '?limit=10000')).length, reportsBefore);
    });

    test('a failing first run is not run twice (nothing to cache), and is not flagged', async () => {
      const skippedBefore = await counter(main.metrics.verifications, { result: 'skipped' });
      const { outcome, result } = await executeAs(main, { sh: 'date +%s%N; exit 3' }, { mnemonic: 'Failing', target: '//x:failing' });
      assert.equal(result.exit_code, 3);
      assert.equal(outcome.response.message, '');
      assert.equal(await counter(main.metrics.verifications, { result: 'skipped' }), skippedBefore + 1);
    });

    test('a second run ended by its timeout is inconclusive: not cached, and not reported as nondeterministic', async () => {
      const l = { mnemonic: 'SlowOnOneCpu', target: '//x:slow_on_one_cpu' };
      const differed = await counter(main.metrics.verifications, { result: 'differed' });
      // Quick on all CPUs, too slow on the one CPU of the verification run.
      const { action, outcome, result } = await executeAs(
        main,
        { sh: 'if [ "$(nproc)" -gt 1 ]; then :; else sleep 30; fi; echo done > out.txt', outputFiles: ['out.txt'], timeoutSeconds: 2 },
        l,
      );
      assert.equal(result.exit_code, 0, 'the client gets the first run');
      assert.match(outcome.response.message, /verification inconclusive.*timed out/);
      assert.equal(await cachedResult(main.c, action.actionDigest), undefined, 'an unverified result is not cached');
      assert.deepEqual(await reports(main, `?mnemonic=${l.mnemonic}`), []);
      assert.equal(await counter(main.metrics.nondeterministicActions, { mnemonic: l.mnemonic }), 0);
      assert.equal(await counter(main.metrics.verifications, { result: 'differed' }), differed);
      assert.equal(await counter(main.metrics.verifications, { result: 'inconclusive' }), 1);
    });

    test('cancelling an operation during its verification run reports nothing', async () => {
      const l = { mnemonic: 'CancelledDuringVerification', target: '//x:cancelled' };
      const action = await uploadAction(main.c, { sh: 'sleep 1; date +%s%N > stamp.txt', outputFiles: ['stamp.txt'] });
      let name = '';
      const started = Date.now();
      const stream = main.c.execution.Execute({ instance_name: main.c.instance, action_digest: action.actionDigest }, requestMetadata(l), { deadline: Date.now() + 60_000 });
      const cancel = new Promise<void>((resolvePromise, reject) => {
        stream.on('data', (op: { name: string }) => {
          if (name) return;
          name = op.name;
          // The first run takes a second; cancel in the middle of the second.
          setTimeout(() => main.c.operations.CancelOperation({ name }, (err) => (err ? reject(err) : resolvePromise())), 1500 - (Date.now() - started));
        });
      });
      const outcome = await followStream(stream).catch((err: unknown) => err);
      await cancel;
      if (!(outcome instanceof Error)) {
        assert.equal((outcome as ExecuteOutcome).response.status?.code, grpc.status.CANCELLED, JSON.stringify((outcome as ExecuteOutcome).response.status));
      }
      await new Promise((r) => setTimeout(r, 500));
      assert.deepEqual(await reports(main, `?mnemonic=${l.mnemonic}`), []);
      assert.equal(await counter(main.metrics.nondeterministicActions, { mnemonic: l.mnemonic }), 0);
      assert.equal(await cachedResult(main.c, action.actionDigest), undefined);
    });

    test('where actions are executed, client ActionCache writes are denied by default (clients other than the local user)', async () => {
      const action = await uploadAction(main.c, { sh: 'true' });
      await assert.rejects(updateActionResult(main, action.actionDigest, { exit_code: 0 }, { mnemonic: 'X', target: '//x' }), (err: grpc.ServiceError) => {
        assert.equal(err.code, grpc.status.PERMISSION_DENIED);
        return true;
      });
    });

    describe('reports', () => {
      test('GET /api/reports lists newest first and filters by mnemonic, target, kind and limit', async () => {
        const all = await reports(main, '?limit=1000');
        const ran = NONDETERMINISTIC.filter((k) => !k.skip?.());
        // Each case ran twice (flagged both times), in order.
        assert.equal(all.filter((r) => r.mnemonic?.startsWith('Nondet_')).length, ran.length * 2);
        const times = all.map((r) => Date.parse(r.createdAt));
        assert.deepEqual(times, [...times].sort((a, b) => b - a), 'newest first');
        const order = all.filter((r) => r.mnemonic?.startsWith('Nondet_')).map((r) => r.mnemonic);
        const expected = ran.flatMap((k) => [`Nondet_${k.name}`, `Nondet_${k.name}`]).reverse();
        assert.deepEqual(order, expected);
        const byTarget = await reports(main, `?target=${encodeURIComponent('//nondeterministic:hostname')}`);
        assert.equal(byTarget.length, 2);
        assert.ok(byTarget.every((r) => r.mnemonic === 'Nondet_hostname'));
        assert.equal((await reports(main, '?limit=3')).length, 3);
        assert.equal((await reports(main, '?kind=cache-poisoning')).length, 0);
        assert.equal((await reports(main, '?kind=nondeterministic&limit=1000')).length, all.length);
        assert.deepEqual(await reports(main, '?mnemonic=NoSuchMnemonic'), []);
      });

      test('`reapi reports --json` (the real CLI) prints the same, and filters', async () => {
        const http = `http://127.0.0.1:${main.server.httpPort}`;
        const cli = async (...args: string[]) =>
          (await run(process.execPath, [join(ROOT, 'bin/reapi.mjs'), 'reports', '--http', http, ...args], { cwd: ROOT, timeout: 60_000 })).stdout;
        const listed = JSON.parse(await cli('--json')) as Report[];
        assert.deepEqual(listed, await reports(main));
        const one = JSON.parse(await cli('--json', '--mnemonic', 'Nondet_umask')) as Report[];
        assert.equal(one.length, 2);
        assert.ok(one.every((r) => r.mnemonic === 'Nondet_umask' && r.target === '//nondeterministic:umask'));
        assert.ok(one[0]!.createdAt >= one[1]!.createdAt);
        assert.equal(one[0]!.differences[0]!.what, 'mode.txt');
        const text = await cli('--target', '//nondeterministic:umask');
        assert.match(text, /nondeterministic {2}\/\/nondeterministic:umask {2}Nondet_umask/);
        assert.match(text, /- mode\.txt: line 1: "644" vs "600"/);
      });
    });
  });

  describe('opt-in wall clock (libfaketime)', () => {
    let f: Fixture;
    before(async () => {
      f = await startFixture({ verification: { verifyRate: 1, faketime: true } });
    });
    after(async () => {
      await f?.close();
    });

    test('a dynamically linked program reading the clock (date +%Y) is flagged', async (t) => {
      if (!support.faketime) return t.skip('libfaketime is not installed');
      const { action, outcome } = await executeAs(f, { sh: 'date +%Y > year.txt', outputFiles: ['year.txt'] }, { mnemonic: 'Year', target: '//nondeterministic:year' });
      assert.match(outcome.response.message, /first in year\.txt: line 1: "\d{4}" vs "\d{4}"/);
      assert.match(outcome.response.message, /wall clock \(libfaketime\)/);
      assert.equal(await cachedResult(f.c, action.actionDigest), undefined);
      assert.equal(await counter(f.metrics.nondeterministicActions, { mnemonic: 'Year' }), 1);
      const [report] = await reports(f, '?mnemonic=Year');
      assert.equal(report?.differences[0]?.what, 'year.txt');
    });

    test('deterministic actions still agree under a faked clock', async (t) => {
      if (!support.faketime) return t.skip('libfaketime is not installed');
      const kinds = DETERMINISTIC.filter((k) => !k.skip?.() && ['gzip-n', 'tar', 'cc-compile', 'output-directory', 'symlinks', 'sort'].includes(k.name));
      await pool(
        kinds.flatMap((k) => [0, 1].map((i) => ({ k, i }))),
        4,
        async ({ k, i }) => {
          const { action, outcome } = await executeAs(f, k.spec(1000 + i), { mnemonic: `Det_${k.name}`, target: `//deterministic:${k.name}` });
          assert.equal(outcome.response.message, '', `${k.name}: ${outcome.response.message}`);
          assert.equal(provenanceOf((await cachedResult(f.c, action.actionDigest))!).verified, true);
        },
      );
      assert.equal(await counter(f.metrics.nondeterministicActions), 1);
    });
  });

  describe("onMismatch 'fail'", () => {
    let f: Fixture;
    before(async () => {
      f = await startFixture({ verification: { verifyRate: 1, onMismatch: 'fail' } });
    });
    after(async () => {
      await f?.close();
    });

    test('a nondeterministic action fails with FAILED_PRECONDITION explaining the difference', async () => {
      const action = await uploadAction(f.c, { sh: 'date +%s%N > stamp.txt', outputFiles: ['stamp.txt'] });
      const failure = await executeFailure(f.c, action.actionDigest);
      assert.equal(failure.code, grpc.status.FAILED_PRECONDITION);
      assert.match(failure.message, /nondeterministic action, result not cached: two runs disagreed \(1 difference\(s\), first in stamp\.txt: line 1: /);
      assert.match(failure.message, /the second run varied exec root path, hostname/);
      assert.equal(await cachedResult(f.c, action.actionDigest), undefined);
      assert.equal((await reports(f)).length, 1);
    });

    test('deterministic actions are unaffected', async () => {
      const action = await uploadAction(f.c, { sh: 'echo same > same.txt', outputFiles: ['same.txt'] });
      const outcome = await executeDigest(f, action.actionDigest, { mnemonic: 'Same', target: '//x:same' });
      assert.equal(outcome.response.status?.code ?? 0, 0);
      assert.ok(await cachedResult(f.c, action.actionDigest));
    });
  });

  describe('audits (auditRate 1, clientWrites allow)', () => {
    let f: Fixture;
    before(async () => {
      f = await startFixture({ verification: { verifyRate: 1, auditRate: 1 }, actionCache: { clientWrites: 'allow' } });
    });
    after(async () => {
      await f?.close();
    });

    /** A deterministic action writing "right", and an ActionResult claiming it wrote `content`. */
    async function seeded(content: string, l: Labels): Promise<PreparedAction> {
      const action = await uploadAction(f.c, { sh: 'echo right > out.txt', outputFiles: ['out.txt'] });
      const data = Buffer.from(content);
      await uploadBlobs(f.c, [data]);
      await updateActionResult(f, action.actionDigest, { exit_code: 0, output_files: [{ path: 'out.txt', digest: digestOf(data) }] }, l);
      return action;
    }

    test('a wrong entry served by GetActionResult is audited, removed and reported', async () => {
      const l = { mnemonic: 'AuditGet', target: '//audit:get' };
      const action = await seeded('wrong\n', l);
      const served = await getActionResult(f, action.actionDigest, l);
      assert.ok(served, 'the entry is served at first');
      assert.equal(provenanceOf(served).source, 'client');
      const report = await waitFor('the cache-poisoning report', async () => (await reports(f, '?mnemonic=AuditGet')).at(0));
      assert.equal(report.kind, 'cache-poisoning');
      assert.equal(report.target, '//audit:get');
      assert.equal(report.differences[0]!.what, 'out.txt');
      assert.match(report.differences[0]!.detail, /line 1: "wrong" vs "right"/);
      assert.equal(await getActionResult(f, action.actionDigest, l), undefined, 'no longer served');
      assert.equal(await counter(f.metrics.cachePoisoningSuspected, { mnemonic: 'AuditGet' }), 1);
      assert.equal(await counter(f.metrics.audits, { result: 'contradicted' }), 1);
      // Executing it now gives (and caches) the real result.
      const outcome = await executeDigest(f, action.actionDigest, l);
      assert.equal(outcome.response.cached_result, false);
      assert.equal((await outputFile(f.c, outcome.response.result!, 'out.txt'))!.data.toString(), 'right\n');
      assert.ok(await getActionResult(f, action.actionDigest, l));
    });

    test('a wrong entry served as an Execute cache hit is audited and removed', async () => {
      const l = { mnemonic: 'AuditExecute', target: '//audit:execute' };
      const action = await seeded('also wrong\n', l);
      const hit = await executeDigest(f, action.actionDigest, l);
      assert.equal(hit.response.cached_result, true);
      await waitFor('the cache-poisoning report', async () => (await reports(f, '?mnemonic=AuditExecute')).at(0));
      assert.equal(await cachedResult(f.c, action.actionDigest), undefined);
      assert.equal(await counter(f.metrics.cachePoisoningSuspected, { mnemonic: 'AuditExecute' }), 1);
    });

    test('a correct entry that spells empty stdout as the empty digest is confirmed, not contradicted', async () => {
      const l = { mnemonic: 'AuditEmptyDigest', target: '//audit:empty_digest' };
      const confirmed = await counter(f.metrics.audits, { result: 'confirmed' });
      const action = await uploadAction(f.c, { sh: 'echo right > out.txt', outputFiles: ['out.txt'] });
      const data = Buffer.from('right\n');
      await uploadBlobs(f.c, [data]);
      const empty = digestOf(Buffer.alloc(0));
      // Workers leave an empty stdout/stderr out; other writers name the empty blob.
      await updateActionResult(f, action.actionDigest, { exit_code: 0, stdout_digest: empty, stderr_digest: empty, output_files: [{ path: 'out.txt', digest: digestOf(data) }] }, l);
      assert.ok(await getActionResult(f, action.actionDigest, l));
      await waitFor('the audit', async () => (await counter(f.metrics.audits, { result: 'confirmed' })) > confirmed || (await reports(f, `?mnemonic=${l.mnemonic}`)).length > 0);
      assert.deepEqual(await reports(f, `?mnemonic=${l.mnemonic}`), []);
      assert.ok(await getActionResult(f, action.actionDigest, l), 'still served');
    });

    test('a correct entry is confirmed by its audit and stays served', async () => {
      const l = { mnemonic: 'AuditRight', target: '//audit:right' };
      const confirmed = await counter(f.metrics.audits, { result: 'confirmed' });
      const action = await seeded('right\n', l);
      assert.ok(await getActionResult(f, action.actionDigest, l));
      await waitFor('the audit', async () => (await counter(f.metrics.audits, { result: 'confirmed' })) > confirmed);
      assert.ok(await getActionResult(f, action.actionDigest, l), 'still served');
      assert.deepEqual(await reports(f, '?mnemonic=AuditRight'), []);
      assert.equal(await counter(f.metrics.cachePoisoningSuspected, { mnemonic: 'AuditRight' }), 0);
    });
  });

  describe("clientWrites 'quarantine'", () => {
    let f: Fixture;
    before(async () => {
      f = await startFixture({ verification: { verifyRate: 1 }, actionCache: { clientWrites: 'quarantine' } });
    });
    after(async () => {
      await f?.close();
    });

    // The action takes a second, so the write is certainly still unconfirmed right after it.
    const slowAction = () => uploadAction(f.c, { sh: 'sleep 1; echo right > out.txt', outputFiles: ['out.txt'] });

    test('a correct client write is not served until an execution agrees, then it is', async () => {
      const l = { mnemonic: 'QuarantineRight', target: '//quarantine:right' };
      const action = await slowAction();
      const data = Buffer.from('right\n');
      await uploadBlobs(f.c, [data]);
      await updateActionResult(f, action.actionDigest, { exit_code: 0, output_files: [{ path: 'out.txt', digest: digestOf(data) }] }, l);
      assert.equal(await getActionResult(f, action.actionDigest, l), undefined, 'not served while quarantined');
      const served = await waitFor('the confirmed write', () => getActionResult(f, action.actionDigest, l));
      const p = provenanceOf(served);
      assert.equal(p.source, 'client');
      assert.equal(p.verified, true);
      assert.equal(served.output_files[0]?.digest?.hash, digestOf(data).hash);
      assert.equal(await counter(f.metrics.audits, { result: 'confirmed' }), 1);
    });

    test('a wrong client write is never served', async () => {
      const l = { mnemonic: 'QuarantineWrong', target: '//quarantine:wrong' };
      const action = await slowAction();
      const data = Buffer.from('poison\n');
      await uploadBlobs(f.c, [data]);
      await updateActionResult(f, action.actionDigest, { exit_code: 0, output_files: [{ path: 'out.txt', digest: digestOf(data) }] }, l);
      assert.equal(await getActionResult(f, action.actionDigest, l), undefined);
      const report = await waitFor('the cache-poisoning report', async () => (await reports(f, '?mnemonic=QuarantineWrong')).at(0));
      assert.equal(report.kind, 'cache-poisoning');
      assert.equal(report.differences[0]!.what, 'out.txt');
      assert.equal(await getActionResult(f, action.actionDigest, l), undefined, 'never served');
      assert.equal(await counter(f.metrics.cachePoisoningSuspected, { mnemonic: 'QuarantineWrong' }), 1);
    });
  });
});
