import { strict as assert } from 'node:assert';
import { lstat, mkdir, mkdtemp, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import { putBlob } from '../../cas/blob-io.ts';
import { MemoryBlobStore } from '../../cas/memory-blob-store.ts';
import { digestOf, EMPTY_DIGEST, type Digest } from '../../common/digest.ts';
import { ReapiError } from '../../common/errors.ts';
import { decode, encode, unpackAny, type MessageInput } from '../../protos/index.ts';
import { LocalContentCache } from '../../worker/content-cache.ts';
import { validateDirectory, declaredOutputs } from '../../worker/directory-validation.ts';
import { createOutputParents, materializeInputRoot, MissingBlobsError } from '../../worker/materializer.ts';

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'reapi-mat-'));
  dirs.push(d);
  return d;
}
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

function rejectsWith(p: Promise<unknown> | (() => unknown), code: status, pattern?: RegExp): Promise<void> {
  const check = (err: unknown): true => {
    assert.ok(err instanceof ReapiError, `expected ReapiError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (pattern) assert.match(err.message, pattern);
    return true;
  };
  if (typeof p === 'function') {
    assert.throws(p, check);
    return Promise.resolve();
  }
  return assert.rejects(p, check);
}

type Dir = MessageInput<'Directory'>;

async function putDir(store: MemoryBlobStore, dir: Dir): Promise<Digest> {
  return putBlob(store, encode('Directory', dir));
}
const dirDigest = (dir: Dir): Digest => digestOf(encode('Directory', dir));

async function setup(): Promise<{ remote: MemoryBlobStore; cache: LocalContentCache }> {
  const remote = new MemoryBlobStore();
  const cache = await LocalContentCache.open({ root: await tempDir(), maxBytes: 1 << 30, remote });
  return { remote, cache };
}

const asDirectory = (dir: Dir) => decode('Directory', encode('Directory', dir));

describe('materializeInputRoot', () => {
  it('builds a nested tree with hardlinks, modes, executables and symlinks', async () => {
    const { remote, cache } = await setup();
    const a = await putBlob(remote, Buffer.from('hello a\n'));
    const b = await putBlob(remote, Buffer.from('hello b\n'));
    const tool = await putBlob(remote, Buffer.from('#!/bin/sh\necho tool\n'));
    const sub: Dir = {
      files: [
        { name: 'b.txt', digest: b },
        { name: 'empty', digest: EMPTY_DIGEST },
        { name: 'tool-copy', digest: tool }, // same blob as run.sh, but not executable
      ],
      symlinks: [{ name: 'up', target: '../a.txt' }],
    };
    const subDigest = await putDir(remote, sub);
    const root: Dir = {
      files: [
        { name: 'a.txt', digest: a },
        { name: 'run.sh', digest: tool, is_executable: true },
      ],
      directories: [
        { name: 'sub', digest: subDigest },
        { name: 'sub2', digest: subDigest },
      ],
      symlinks: [{ name: 'link', target: 'sub/b.txt' }],
    };
    const rootDigest = await putDir(remote, root);

    const execRoot = join(await tempDir(), 'exec');
    const m = await materializeInputRoot(cache, rootDigest, execRoot);
    assert.equal(m.files, 8);
    assert.equal(m.directories, 2);
    assert.equal(m.symlinks, 3);
    assert.equal(m.bytes, a.size_bytes + tool.size_bytes + 2 * (b.size_bytes + tool.size_bytes));
    assert.ok(m.fetchedBytes >= a.size_bytes + b.size_bytes + tool.size_bytes);

    assert.equal(await readFile(join(execRoot, 'a.txt'), 'utf8'), 'hello a\n');
    assert.equal(await readFile(join(execRoot, 'sub2/b.txt'), 'utf8'), 'hello b\n');
    assert.equal((await stat(join(execRoot, 'sub/empty'))).size, 0);

    const mode = async (p: string) => (await lstat(join(execRoot, p))).mode & 0o777;
    assert.equal(await mode('a.txt'), 0o444);
    assert.equal(await mode('run.sh'), 0o555);
    assert.equal(await mode('sub/tool-copy'), 0o444);
    assert.equal(await mode('sub/empty'), 0o444);
    assert.ok((await lstat(join(execRoot, 'sub'))).isDirectory());

    const ino = async (p: string) => (await stat(p)).ino;
    assert.equal(await ino(join(execRoot, 'a.txt')), await ino(cache.pathOf(a)));
    assert.equal(await ino(join(execRoot, 'sub/b.txt')), await ino(join(execRoot, 'sub2/b.txt')));
    assert.equal(await ino(join(execRoot, 'run.sh')), await ino(cache.pathOf(tool, true)));
    assert.equal(await ino(join(execRoot, 'sub/tool-copy')), await ino(cache.pathOf(tool)));
    assert.notEqual(await ino(cache.pathOf(tool)), await ino(cache.pathOf(tool, true)));
    assert.equal((await stat(cache.pathOf(a))).mode & 0o777, 0o444);

    assert.equal(await readlink(join(execRoot, 'link')), 'sub/b.txt');
    assert.equal(await readlink(join(execRoot, 'sub/up')), '../a.txt');
    assert.equal(await readFile(join(execRoot, 'sub/up'), 'utf8'), 'hello a\n');

    // A second exec root comes entirely from the local cache.
    const before = { ...cache.stats };
    const m2 = await materializeInputRoot(cache, rootDigest, join(await tempDir(), 'exec2'));
    assert.equal(m2.fetchedBytes, 0);
    assert.equal(cache.stats.fetchedBlobs, before.fetchedBlobs);
    assert.ok(cache.stats.hitBlobs > before.hitBlobs);
    m.release();
    m2.release();
    m2.release(); // idempotent
  });

  it('materialises the empty input root', async () => {
    const { cache } = await setup();
    const execRoot = join(await tempDir(), 'exec');
    const m = await materializeInputRoot(cache, EMPTY_DIGEST, execRoot);
    assert.equal(m.files, 0);
    assert.ok((await stat(execRoot)).isDirectory());
    m.release();
  });

  it('lists every missing blob in one FAILED_PRECONDITION', async () => {
    const { remote, cache } = await setup();
    const present = await putBlob(remote, Buffer.from('present'));
    const missing1 = digestOf(Buffer.from('missing one'));
    const missing2 = digestOf(Buffer.from('missing two'));
    const missingDir = dirDigest({ files: [{ name: 'x', digest: present }] });
    const sub = await putDir(remote, { files: [{ name: 'gone', digest: missing2 }, { name: 'ok', digest: present }] });
    const root = await putDir(remote, {
      files: [{ name: 'f', digest: missing1 }],
      directories: [
        { name: 'a', digest: sub },
        { name: 'b', digest: missingDir },
      ],
    });
    const err = await materializeInputRoot(cache, root, join(await tempDir(), 'exec')).then(
      () => assert.fail('expected an error'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof MissingBlobsError);
    assert.equal(err.code, status.FAILED_PRECONDITION);
    const key = (d: Digest) => `blobs/${d.hash}/${d.size_bytes}`;
    const expected = [missing1, missing2, missingDir].map(key).sort();
    assert.deepEqual(err.missing.map(key).sort(), expected);
    assert.equal(err.details.length, 1);
    const pf = unpackAny(err.details[0]!, 'PreconditionFailure');
    assert.deepEqual(pf.violations.map((v) => v.subject).sort(), expected);
    assert.ok(pf.violations.every((v) => v.type === 'MISSING'));
    for (const d of [missing1, missing2, missingDir]) assert.match(err.message, new RegExp(d.hash.slice(0, 16)));
  });

  it('rejects an invalid Directory anywhere in the tree, naming digest and entry', async () => {
    const { remote, cache } = await setup();
    const bad: Dir = { symlinks: [{ name: 'esc', target: '../../outside' }] };
    const badDigest = await putDir(remote, bad);
    const root = await putDir(remote, { directories: [{ name: 'd', digest: badDigest }] });
    await rejectsWith(
      materializeInputRoot(cache, root, join(await tempDir(), 'exec')),
      status.INVALID_ARGUMENT,
      new RegExp(`${badDigest.hash}/${badDigest.size_bytes}.*symlink "esc".*escapes`),
    );
    // The same Directory two levels down is fine: '../../outside' stays inside the root.
    const mid = await putDir(remote, { directories: [{ name: 'd', digest: badDigest }] });
    const ok = await putDir(remote, { directories: [{ name: 'x', digest: mid }] });
    const execRoot = join(await tempDir(), 'exec');
    (await materializeInputRoot(cache, ok, execRoot)).release();
    assert.equal(await readlink(join(execRoot, 'x/d/esc')), '../../outside');
  });

  it('rejects a blob that is not a Directory', async () => {
    const { remote, cache } = await setup();
    const junk = await putBlob(remote, Buffer.from([0xff, 0xff, 0xff]));
    await rejectsWith(materializeInputRoot(cache, junk, join(await tempDir(), 'exec')), status.INVALID_ARGUMENT, /not a valid Directory/);
  });
});

describe('validateDirectory', () => {
  const d1 = digestOf(Buffer.from('1'));
  const d2 = digestOf(Buffer.from('2'));
  const digest = dirDigest({});
  const bad = (dir: Dir, entry: RegExp, depth = 0) =>
    rejectsWith(() => validateDirectory(asDirectory(dir), digest, depth), status.INVALID_ARGUMENT, entry);

  it('accepts a canonical directory', () => {
    validateDirectory(
      asDirectory({
        files: [{ name: 'a', digest: d1 }, { name: 'b', digest: d2 }],
        directories: [{ name: 'c', digest }],
        symlinks: [{ name: 'd', target: 'c/../a' }],
      }),
      digest,
      0,
    );
    // UTF-8 byte order: U+FF61 (EF BD A1) sorts before U+1F600 (F0 9F 98 80), unlike UTF-16 order.
    validateDirectory(asDirectory({ files: [{ name: '\uff61', digest: d1 }, { name: '\u{1f600}', digest: d2 }] }), digest, 0);
  });

  it('names the digest and the entry for each rule', async () => {
    const where = `${digest.hash}/${digest.size_bytes}`;
    await bad({ files: [{ name: '', digest: d1 }] }, new RegExp(`Directory ${where}: file name "" is empty`));
    await bad({ files: [{ name: 'a/b', digest: d1 }] }, /file name "a\/b" contains "\/"/);
    await bad({ directories: [{ name: '.', digest }] }, /directory name "\." is "\."/);
    await bad({ directories: [{ name: '..', digest }] }, /directory name "\.\." is "\.\."/);
    await bad({ symlinks: [{ name: 'a\0b', target: 'x' }] }, /symlink name "a\\u0000b" contains a NUL/);
    await bad({ files: [{ name: 'b', digest: d1 }, { name: 'a', digest: d2 }] }, /file "a" is out of order \(after "b"/);
    await bad({ files: [{ name: 'a', digest: d1 }, { name: 'a', digest: d2 }] }, /file "a" has the same name as a file/);
    await bad({ directories: [{ name: 'z', digest }, { name: 'y', digest }] }, /directory "y" is out of order/);
    await bad({ symlinks: [{ name: 'z', target: 'a' }, { name: 'y', target: 'a' }] }, /symlink "y" is out of order/);
    await bad({ files: [{ name: '\u{1f600}', digest: d1 }, { name: '\uff61', digest: d2 }] }, /out of order/);
    await bad({ files: [{ name: 'x', digest: d1 }], directories: [{ name: 'x', digest }] }, /directory "x" has the same name as a file/);
    await bad({ directories: [{ name: 'x', digest }], symlinks: [{ name: 'x', target: 'y' }] }, /symlink "x" has the same name as a directory/);
    await bad({ symlinks: [{ name: 's', target: '/etc/passwd' }] }, /symlink "s" has an absolute target/);
    await bad({ symlinks: [{ name: 's', target: '../x' }] }, /symlink "s" has target "\.\.\/x", which escapes/);
    await bad({ symlinks: [{ name: 's', target: 'a/../../../x' }] }, /symlink "s".*escapes/, 1);
    await bad({ symlinks: [{ name: 's', target: '' }] }, /symlink "s" has an empty target/);
    await bad({ files: [{ name: 'f' }] }, /file "f": digest is missing/);
    await bad({ files: [{ name: 'f', digest: { hash: 'abc', size_bytes: 1 } }] }, /file "f": hash "abc"/);
    // '../x' one level down stays inside the root.
    validateDirectory(asDirectory({ symlinks: [{ name: 's', target: '../x' }] }), digest, 1);
  });
});

describe('createOutputParents', () => {
  it('creates the parents of outputs relative to the working directory, not the outputs', async () => {
    const root = await tempDir();
    await mkdir(join(root, 'pkg'));
    await createOutputParents(root, {
      working_directory: 'pkg',
      output_files: ['out/a/file.o', 'top.txt', '../sibling/x.txt'],
      output_directories: ['gen/dir', ''],
    });
    assert.ok((await stat(join(root, 'pkg/out/a'))).isDirectory());
    await assert.rejects(stat(join(root, 'pkg/out/a/file.o')), { code: 'ENOENT' });
    assert.ok((await stat(join(root, 'pkg/gen'))).isDirectory());
    await assert.rejects(stat(join(root, 'pkg/gen/dir')), { code: 'ENOENT' });
    assert.ok((await stat(join(root, 'sibling'))).isDirectory());
  });

  it('uses output_paths when set (v2.1)', async () => {
    const root = await tempDir();
    await createOutputParents(root, { output_paths: ['x/y/z'], output_files: ['ignored/f'] });
    assert.ok((await stat(join(root, 'x/y'))).isDirectory());
    await assert.rejects(stat(join(root, 'ignored')), { code: 'ENOENT' });
  });

  it('rejects absolute and escaping paths with INVALID_ARGUMENT', async () => {
    const root = await tempDir();
    await rejectsWith(createOutputParents(root, { output_files: ['/etc/x'] }), status.INVALID_ARGUMENT, /output_files "\/etc\/x" is absolute/);
    await rejectsWith(createOutputParents(root, { output_paths: ['a/../../x'] }), status.INVALID_ARGUMENT, /escapes the input root/);
    await rejectsWith(
      createOutputParents(root, { working_directory: 'pkg', output_directories: ['../../x'] }),
      status.INVALID_ARGUMENT,
      /escapes/,
    );
    await rejectsWith(createOutputParents(root, { working_directory: '/abs', output_files: ['x'] }), status.INVALID_ARGUMENT, /working_directory/);
    await rejectsWith(createOutputParents(root, { output_files: [''] }), status.INVALID_ARGUMENT, /cannot be a file/);
    await rejectsWith(
      createOutputParents(root, { output_files: ['same'], output_directories: ['same'] }),
      status.INVALID_ARGUMENT,
      /both as an output file and as an output directory/,
    );
  });

  it('refuses parents that are input files or symlinks leading out of the root', async () => {
    const outside = await tempDir();
    const root = await tempDir();
    await writeFile(join(root, 'file'), 'x');
    await symlink(outside, join(root, 'out'));
    await mkdir(join(root, 'real'));
    await symlink('real', join(root, 'inside'));
    await rejectsWith(createOutputParents(root, { output_files: ['file/x'] }), status.INVALID_ARGUMENT, /parent "file" is a file/);
    await rejectsWith(createOutputParents(root, { output_files: ['out/a/b'] }), status.INVALID_ARGUMENT, /parent "out" is a symlink/);
    await assert.rejects(stat(join(outside, 'a')), { code: 'ENOENT' });
    await createOutputParents(root, { output_files: ['inside/a/b'] });
    assert.ok((await stat(join(root, 'real/a'))).isDirectory());
  });

  it('declaredOutputs normalises paths and keeps the declared form', () => {
    assert.deepEqual(declaredOutputs({ working_directory: 'w', output_files: ['./a//b'], output_directories: ['..'] }), [
      { declared: './a//b', path: 'w/a/b', kind: 'file' },
      { declared: '..', path: '', kind: 'directory' },
    ]);
  });
});

describe('LocalContentCache', () => {
  it('fetches each blob once under concurrent ensure calls and counts hits and misses', async () => {
    const remote = new MemoryBlobStore();
    let reads = 0;
    const counting = {
      findMissing: (ds: Digest[]) => remote.findMissing(ds),
      read: (dg: Digest, o?: number, l?: number) => {
        reads++;
        return remote.read(dg, o, l);
      },
      write: (dg: Digest) => remote.write(dg),
      digestFunction: remote.digestFunction,
    };
    const cache = await LocalContentCache.open({ root: await tempDir(), maxBytes: 1 << 20, remote: counting });
    const blob = await putBlob(remote, Buffer.from('shared'));
    const absent = digestOf(Buffer.from('absent'));
    const [r1, r2] = await Promise.all([cache.ensure([blob, absent]), cache.ensure([blob, blob])]);
    assert.equal(reads, 1);
    assert.equal(r1.fetchedBlobs + r2.fetchedBlobs, 1);
    assert.deepEqual(r1.missing, [absent]);
    assert.deepEqual(r2.missing, []);
    const r3 = await cache.ensure([blob, EMPTY_DIGEST]);
    assert.equal(r3.fetchedBlobs, 0);
    assert.equal(cache.stats.fetchedBlobs, 1);
    assert.equal(cache.stats.fetchedBytes, 6);
    assert.equal(cache.stats.hitBlobs, 1);
    assert.equal(cache.stats.missBlobs, 3); // blob twice (once in flight), absent once
    assert.equal((await stat(cache.pathOf(blob))).mode & 0o777, 0o444);
    assert.equal((await stat(cache.pathOf(EMPTY_DIGEST, true))).mode & 0o777, 0o555);
  });

  it('copies an executable too large for the executable cache instead of linking it', async () => {
    const remote = new MemoryBlobStore();
    const cache = await LocalContentCache.open({ root: await tempDir(), maxBytes: 1 << 20, executableMaxBytes: 4, remote });
    const tool = await putBlob(remote, Buffer.from('#!/bin/sh\nexit 0\n'));
    const root = await putDir(remote, { files: [{ name: 'tool', digest: tool, is_executable: true }] });
    const execRoot = join(await tempDir(), 'exec');
    const m = await materializeInputRoot(cache, root, execRoot);
    const st = await stat(join(execRoot, 'tool'));
    assert.equal(st.mode & 0o777, 0o555);
    assert.notEqual(st.ino, (await stat(cache.pathOf(tool))).ino);
    assert.equal(await readFile(join(execRoot, 'tool'), 'utf8'), '#!/bin/sh\nexit 0\n');
    assert.equal(cache.stats.copiedFiles, 1);
    m.release();
  });
});
