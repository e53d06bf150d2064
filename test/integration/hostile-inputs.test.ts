// Hostile input roots against a real `reapi serve` (gRPC, in-process queue, a local worker that
// runs as root): symlink chains that each stay inside the input root lexically but lead out when
// followed, aimed at the worker's own file operations (the wasm runner's output, the build-script
// runner's policy and scratch files), a build-script policy that asks to see more than the worker
// allows, and a Directory DAG that expands to 2^30 directories. Needs root and bwrap.
// Run: node --import tsx --test test/integration/hostile-inputs.test.ts
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { status } from '@grpc/grpc-js';
import { addMessage, executeFailure, link, run, stderrOf, uploadMissing, type TreeSpec } from '../support/execution.ts';
import { sandboxSkip } from '../support/sandbox.ts';
import { startTestServe, type TestServe } from '../support/serve.ts';
import { CANONICAL_ROOT, LAYOUT } from '../../execution/build-script.ts';
import { prepareAction, type Blobs } from '../../clients/remote-execution.ts';

/**
 * Symlinks that climb `levels` directories above the exec root when followed, though every one
 * stays inside the input root lexically: `a/b/up -> ../..` is the root, `esc1 -> a/b/up/..` its
 * parent, `escN -> esc(N-1)/..` one more level up.
 */
function climbers(levels: number): TreeSpec {
  const tree: TreeSpec = { a: { b: { up: link('../..') } }, esc1: link('a/b/up/..') };
  for (let i = 2; i <= levels; i++) tree[`esc${i}`] = link(`esc${i - 1}/..`);
  return tree;
}

/** Levels from an exec root (WORKDIR/exec/UUID) up to the filesystem root. */
function levelsToRoot(workDir: string): number {
  return workDir.split('/').filter(Boolean).length + 2;
}

describe('hostile input roots', { skip: sandboxSkip }, () => {
  let s: TestServe;
  let victim: string;
  let levels: number;

  before(async () => {
    s = await startTestServe({}, { name: 'reapi-hostile' });
    victim = await mkdtemp(join(tmpdir(), 'reapi-victim-'));
    levels = levelsToRoot(s.workDir);
  });
  after(async () => {
    await s?.close();
    if (victim) await rm(victim, { recursive: true, force: true });
  });

  const outside = (...rest: string[]): string => [`esc${levels}`, ...victim.split('/').filter(Boolean), ...rest].join('/');

  test('a wasm macro cannot make the worker write through a symlink chain into a directory that does not exist yet', async () => {
    const r = await run(s.c, {
      argv: ['reapi-wasm-macro', '--module', 'm.wasm', '--entry', 'derive_x', '--input', 'in.rs', '--output', outside('made-by-action', 'pwned.rs')],
      platform: { runtime: 'wasm-macro' },
      inputs: { ...climbers(levels), 'm.wasm': Buffer.from([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]), 'in.rs': 'struct X;' },
    });
    assert.equal(r.result.exit_code, 2);
    assert.match(await stderrOf(s.c, r.result), /--output .* resolves \(through a symlink\) outside the exec root/);
    assert.deepEqual(await readdir(victim), [], 'nothing was created outside the exec root');
  });

  test('a wasm macro cannot read its module or input through a symlink chain', async () => {
    const r = await run(s.c, {
      argv: ['reapi-wasm-macro', '--module', 'm.wasm', '--entry', 'derive_x', '--input', outside('secret.rs'), '--output', 'out.rs'],
      platform: { runtime: 'wasm-macro' },
      inputs: { ...climbers(levels), 'm.wasm': Buffer.from([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]) },
    });
    assert.equal(r.result.exit_code, 2);
    assert.match(await stderrOf(s.c, r.result), /--input .* outside the exec root/);
  });

  const buildScript = (inputs: TreeSpec, policy: Record<string, unknown> | undefined) => {
    const reapi: TreeSpec = { ...((inputs['.reapi'] as TreeSpec | undefined) ?? {}) };
    if (policy) {
      reapi['policy.json'] = JSON.stringify({
        version: 1,
        crate: 'hostile v0.1.0',
        crateName: 'hostile',
        policyFile: null,
        tools: [],
        readOnlyPaths: ['/usr/lib', '/usr/lib64'],
        limits: { memoryBytes: 256 * 2 ** 20, processes: 64, timeoutSeconds: 30 },
        ...policy,
      });
    }
    return run(s.c, {
      argv: ['/run/reapi/sh', '-c', 'exit 3'],
      platform: { 'cargo-build-script': '1' },
      env: { OUT_DIR: `${CANONICAL_ROOT}/${LAYOUT.out}` },
      inputs: { ...inputs, '.reapi': reapi, src: { 'build.rs': 'fn main() {}' }, out: {} },
      outputDirectories: [LAYOUT.out],
    });
  };

  test("a build script's scratch files are the worker's: a .reapi-trace symlink in the input root is never written through", async () => {
    const r = await buildScript({ ...climbers(levels), '.reapi-trace': link(outside()) }, {});
    assert.equal(r.result.exit_code, 3, await stderrOf(s.c, r.result));
    assert.deepEqual(await readdir(victim), [], 'no denial or trace file was written outside the exec root');
  });

  test("a build script's policy file is never read through a symlink (e.g. to /etc/shadow)", async () => {
    const r = await buildScript({ ...climbers(levels), '.reapi': { 'policy.json': link(['..', `esc${levels}`, 'etc', 'shadow'].join('/')) } }, undefined);
    assert.equal(r.result.exit_code, 2);
    const stderr = await stderrOf(s.c, r.result);
    assert.match(stderr, /needs \.reapi\/policy\.json in its input root, a regular file of JSON/);
    assert.doesNotMatch(stderr, /root:/, 'nothing of /etc/shadow is quoted');
  });

  test("a build-script policy cannot widen what the sandbox sees beyond the worker's visiblePaths", async () => {
    const r = await buildScript({}, { readOnlyPaths: ['/usr/lib', '/usr/lib64', s.dataDir] });
    assert.equal(r.result.exit_code, 2);
    assert.match(await stderrOf(s.c, r.result), /makes .* visible, which this worker never shows build scripts \(the worker's worker\.buildScripts\.visiblePaths: \/usr\)/);
  });

  test('an input root that is a DAG expanding to 2^30 directories is refused before anything is created', async () => {
    // 31 Directory blobs of a few KiB: level k holds two entries naming level k-1.
    const blobs: Blobs = new Map();
    let d = addMessage(blobs, 'Directory', {});
    for (let i = 0; i < 30; i++) d = addMessage(blobs, 'Directory', { directories: [{ name: 'a', digest: d }, { name: 'b', digest: d }] });
    const action = prepareAction({ argv: ['/bin/true'], inputRoot: d });
    for (const [k, v] of blobs) action.blobs.set(k, v);
    await uploadMissing(s.c, action.blobs);
    const before = Date.now();
    const err = await executeFailure(s.c, action.actionDigest);
    assert.equal(err.code, status.INVALID_ARGUMENT);
    assert.match(err.message, /expands to \d+ entries, over this worker's limit of \d+ \(worker\.inputLimits\.maxEntries\)/);
    assert.ok(Date.now() - before < 60_000);
    // The worker still serves.
    const ok = await run(s.c, { sh: 'echo fine' });
    assert.equal(ok.result.exit_code, 0);
    const execDir = join(s.workDir, 'exec');
    assert.deepEqual(await readdir(execDir).catch(() => []), [], 'no exec root was left behind');
  });
});
