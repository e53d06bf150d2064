import { strict as assert } from 'node:assert';
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import { readBlob } from '../../cas/blob-io.ts';
import { MemoryBlobStore } from '../../cas/memory-blob-store.ts';
import { digestOf, type Digest } from '../../common/digest.ts';
import { ReapiError } from '../../common/errors.ts';
import { decode, encode } from '../../protos/index.ts';
import { collectOutputs, uploadStdStreams } from '../../worker/output-collector.ts';

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'reapi-out-'));
  dirs.push(d);
  return d;
}
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function rejectsWith(p: Promise<unknown>, code: status, pattern?: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof ReapiError, `expected ReapiError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (pattern) assert.match(err.message, pattern);
    return true;
  });
}

/** Create files: path -> content (string), or {content, mode}, or {symlink}, or 'dir/'. */
type Spec = Record<string, string | { content: string; mode: number } | { symlink: string }>;
async function makeTree(root: string, spec: Spec): Promise<void> {
  for (const [path, what] of Object.entries(spec)) {
    const full = join(root, path);
    if (path.endsWith('/')) {
      await mkdir(full, { recursive: true });
      continue;
    }
    await mkdir(join(full, '..'), { recursive: true });
    if (typeof what === 'string') await writeFile(full, what, { mode: 0o644 });
    else if ('symlink' in what) await symlink(what.symlink, full);
    else {
      await writeFile(full, what.content);
      await chmod(full, what.mode);
    }
  }
}

const d = (text: string): Digest => digestOf(Buffer.from(text));

describe('collectOutputs', () => {
  it('collects output files with digests and the executable bit, and reports missing outputs', async () => {
    const root = await tempDir();
    await makeTree(root, { 'out/a.txt': 'aaa', 'out/tool': { content: '#!/bin/sh\n', mode: 0o755 } });
    const store = new MemoryBlobStore();
    const c = await collectOutputs(root, { output_files: ['out/a.txt', 'out/missing', 'out/tool'] }, store);
    assert.deepEqual(c.result.output_files, [
      { path: 'out/a.txt', digest: d('aaa') },
      { path: 'out/tool', digest: d('#!/bin/sh\n'), is_executable: true },
    ]);
    assert.ok(!('is_executable' in c.result.output_files[0]!), 'is_executable must be left unset when false');
    assert.deepEqual(c.missing, ['out/missing']);
    assert.equal((await readBlob(store, d('aaa'))).toString(), 'aaa');
    assert.equal(c.uploadedBlobs, 2);
    assert.equal(c.uploadedBytes, 3 + 10);

    // Everything is in the CAS now: nothing is uploaded again.
    const again = await collectOutputs(root, { output_files: ['out/a.txt', 'out/tool'] }, store);
    assert.equal(again.uploadedBlobs, 0);
    assert.equal(again.blobs, 2);
  });

  it('resolves outputs against the working directory and reports the declared path', async () => {
    const root = await tempDir();
    await makeTree(root, { 'pkg/out.txt': 'in pkg', 'shared.txt': 'up' });
    const c = await collectOutputs(root, { working_directory: 'pkg', output_files: ['out.txt', '../shared.txt'] }, new MemoryBlobStore());
    assert.deepEqual(
      c.result.output_files.map((f) => [f.path, f.digest]),
      [
        ['out.txt', d('in pkg')],
        ['../shared.txt', d('up')],
      ],
    );
  });

  it('turns a nested output directory into a canonical, deduplicated Tree', async () => {
    const root = await tempDir();
    await makeTree(root, {
      'out/dir/x.txt': 'x',
      'out/dir/sub/y.sh': { content: 'y', mode: 0o755 },
      'out/dir/sub/deeper/z.txt': 'z',
      'out/dir/link': { symlink: 'sub/y.sh' },
      'out/dir/twin1/same.txt': 'same',
      'out/dir/twin2/same.txt': 'same',
      'out/dir/emptydir/': '',
    });
    const store = new MemoryBlobStore();
    const c = await collectOutputs(root, { output_directories: ['out/dir'] }, store);
    assert.equal(c.result.output_directories.length, 1);
    const od = c.result.output_directories[0]!;
    assert.equal(od.path, 'out/dir');
    assert.ok(!('is_topologically_sorted' in od));
    assert.ok(!('root_directory_digest' in od));
    const treeBytes = await readBlob(store, od.tree_digest as Digest);
    const tree = decode('Tree', treeBytes);
    // Canonical: re-encoding the decoded Tree gives the stored bytes (no explicit defaults).
    assert.deepEqual(encode('Tree', tree), treeBytes);

    const rootDir = tree.root!;
    assert.deepEqual(rootDir.files.map((f) => [f.name, f.is_executable]), [['x.txt', false]]);
    assert.deepEqual(rootDir.directories.map((n) => n.name), ['emptydir', 'sub', 'twin1', 'twin2']);
    assert.deepEqual(rootDir.symlinks.map((s) => [s.name, s.target]), [['link', 'sub/y.sh']]);
    assert.deepEqual(rootDir.directories[2]!.digest, rootDir.directories[3]!.digest);

    // children: emptydir, sub, sub/deeper, twin (deduplicated) = 4
    assert.equal(tree.children.length, 4);
    const byDigest = new Map(tree.children.map((ch) => [digestOf(encode('Directory', ch)).hash, ch]));
    assert.equal(byDigest.size, 4);
    for (const node of rootDir.directories) assert.ok(byDigest.has(node.digest!.hash), `child ${node.name} in the Tree`);
    const sub = byDigest.get(rootDir.directories[1]!.digest!.hash)!;
    assert.deepEqual(sub.files.map((f) => [f.name, f.is_executable]), [['y.sh', true]]);
    assert.ok(byDigest.has(sub.directories[0]!.digest!.hash));
    assert.equal(sub.directories[0]!.digest!.size_bytes, encode('Directory', byDigest.get(sub.directories[0]!.digest!.hash)!).length);

    for (const text of ['x', 'y', 'z', 'same']) assert.equal((await readBlob(store, d(text))).toString(), text);
    assert.equal(c.uploadedBlobs, 5); // x, y, z, same, the Tree
  });

  it('uploads Directory blobs when the Command asks for DIRECTORY_ONLY', async () => {
    const root = await tempDir();
    await makeTree(root, { 'out/sub/f': 'f' });
    const store = new MemoryBlobStore();
    const c = await collectOutputs(root, { output_paths: ['out'], output_directory_format: 'DIRECTORY_ONLY' }, store);
    const od = c.result.output_directories[0]!;
    assert.ok(!('tree_digest' in od));
    const top = decode('Directory', await readBlob(store, od.root_directory_digest as Digest));
    const sub = decode('Directory', await readBlob(store, top.directories[0]!.digest!));
    assert.equal(sub.files[0]!.name, 'f');
  });

  it('reports v2.0 output symlinks in output_file_symlinks / output_directory_symlinks only', async () => {
    const root = await tempDir();
    await makeTree(root, { 'a.txt': 'a', 'd/f': 'f', 'lf': { symlink: 'a.txt' }, 'ld': { symlink: 'd' }, 'dang': { symlink: 'nowhere' } });
    const c = await collectOutputs(root, { output_files: ['lf', 'dang'], output_directories: ['ld'] }, new MemoryBlobStore());
    assert.deepEqual(c.result.output_file_symlinks, [
      { path: 'lf', target: 'a.txt' },
      { path: 'dang', target: 'nowhere' },
    ]);
    assert.deepEqual(c.result.output_directory_symlinks, [{ path: 'ld', target: 'd' }]);
    assert.deepEqual(c.result.output_symlinks, []);
    assert.deepEqual(c.result.output_files, []);

    await rejectsWith(collectOutputs(root, { output_files: ['ld'] }, new MemoryBlobStore()), status.FAILED_PRECONDITION, /symlink to a directory/);
    await rejectsWith(collectOutputs(root, { output_directories: ['lf'] }, new MemoryBlobStore()), status.FAILED_PRECONDITION, /symlink to a file/);
    await rejectsWith(collectOutputs(root, { output_files: ['d'] }, new MemoryBlobStore()), status.FAILED_PRECONDITION, /is a directory, not a regular file/);
    await rejectsWith(collectOutputs(root, { output_directories: ['a.txt'] }, new MemoryBlobStore()), status.FAILED_PRECONDITION, /is a regular file, not a directory/);
  });

  it('uses output_paths (v2.1): any kind, symlinks in output_symlinks', async () => {
    const root = await tempDir();
    await makeTree(root, { 'f': 'f', 'd/g': 'g', 'ls': { symlink: 'f' }, 'lds': { symlink: 'd' }, 'dang': { symlink: 'nope' } });
    const c = await collectOutputs(
      root,
      { output_paths: ['d', 'dang', 'f', 'gone', 'lds', 'ls'], output_files: ['ignored'] },
      new MemoryBlobStore(),
    );
    assert.deepEqual(c.result.output_files.map((f) => f.path), ['f']);
    assert.deepEqual(c.result.output_directories.map((o) => o.path), ['d']);
    assert.deepEqual(c.result.output_symlinks, [
      { path: 'dang', target: 'nope' },
      { path: 'lds', target: 'd' },
      { path: 'ls', target: 'f' },
    ]);
    assert.deepEqual(c.result.output_file_symlinks, [{ path: 'ls', target: 'f' }]);
    assert.deepEqual(c.result.output_directory_symlinks, [{ path: 'lds', target: 'd' }]);
    assert.deepEqual(c.missing, ['gone']);
  });

  it('fails with FAILED_PRECONDITION on symlinks that leave the exec root', async () => {
    const outside = await tempDir();
    await writeFile(join(outside, 'secret'), 'host file');
    const root = await tempDir();
    await makeTree(root, {
      'esc': { symlink: '../../../../../../etc/passwd' },
      'abs': { symlink: '/etc/passwd' },
      'dir/inner': { symlink: '../../x' },
      'okdir/inner': { symlink: '../esc' }, // stays inside lexically, but leads to a link that leaves
      'parent': { symlink: outside },
    });
    const store = new MemoryBlobStore();
    await rejectsWith(collectOutputs(root, { output_files: ['esc'] }, store), status.FAILED_PRECONDITION, /"esc".*escapes the exec root/);
    await rejectsWith(collectOutputs(root, { output_paths: ['abs'] }, store), status.FAILED_PRECONDITION, /"abs" has an absolute target/);
    await rejectsWith(collectOutputs(root, { output_directories: ['dir'] }, store), status.FAILED_PRECONDITION, /"dir\/inner".*escapes/);
    await rejectsWith(collectOutputs(root, { output_directories: ['okdir'] }, store), status.FAILED_PRECONDITION, /"okdir\/inner".*esc/);
    await rejectsWith(collectOutputs(root, { output_files: ['parent/secret'] }, store), status.FAILED_PRECONDITION, /under a symlink leading outside/);
    assert.deepEqual(await store.findMissing([d('host file')]), [d('host file')]);
  });

  it('rejects bad output paths with INVALID_ARGUMENT', async () => {
    const root = await tempDir();
    await rejectsWith(collectOutputs(root, { output_files: ['/abs'] }, new MemoryBlobStore()), status.INVALID_ARGUMENT, /absolute/);
    await rejectsWith(collectOutputs(root, { output_paths: ['../x'] }, new MemoryBlobStore()), status.INVALID_ARGUMENT, /escapes/);
  });
});

describe('uploadStdStreams', () => {
  it('uploads non-empty streams and leaves empty ones unset', async () => {
    const store = new MemoryBlobStore();
    const r = await uploadStdStreams(Buffer.alloc(0), Buffer.from('warning\n'), store);
    assert.ok(!('stdout_digest' in r));
    assert.deepEqual(r.stderr_digest, d('warning\n'));
    assert.equal((await readBlob(store, r.stderr_digest!)).toString(), 'warning\n');
    const both = await uploadStdStreams(Buffer.from('same'), Buffer.from('same'), store);
    assert.deepEqual(both, { stdout_digest: d('same'), stderr_digest: d('same') });
    assert.deepEqual(await uploadStdStreams(Buffer.alloc(0), Buffer.alloc(0), store), {});
  });
});
