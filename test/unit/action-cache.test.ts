import { strict as assert } from 'node:assert';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import type { ActionCache } from '../../cas/action-cache.ts';
import { putBlob } from '../../cas/blob-io.ts';
import { CompletenessCheckingActionCache } from '../../cas/completeness-checking-action-cache.ts';
import { DiskActionCache } from '../../cas/disk-action-cache.ts';
import { MemoryActionCache } from '../../cas/memory-action-cache.ts';
import { MemoryBlobStore } from '../../cas/memory-blob-store.ts';
import { digestOf } from '../../common/digest.ts';
import { ReapiError } from '../../common/errors.ts';
import { encode } from '../../protos/index.ts';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'reapi-ac-'));
  dirs.push(d);
  return d;
}

const action = digestOf(Buffer.from('an action'));

const backends: Array<[string, () => Promise<ActionCache>]> = [
  ['memory', async () => new MemoryActionCache()],
  ['disk', async () => new DiskActionCache(await tempDir())],
];

for (const [name, make] of backends) {
  describe(`${name} ActionCache`, () => {
    it('keeps entries per instance name, and removes them', async () => {
      const ac = await make();
      await ac.put('main', action, { exit_code: 3 });
      assert.equal((await ac.get('main', action))?.exit_code, 3);
      assert.equal(await ac.get('other', action), undefined);
      assert.equal(await ac.get('', action), undefined);
      await ac.put('team/a', action, { exit_code: 4 }); // instance names may hold slashes
      assert.equal((await ac.get('team/a', action))?.exit_code, 4);
      await ac.remove('main', action);
      assert.equal(await ac.get('main', action), undefined);
      await ac.remove('main', action); // absent: no error
    });
  });
}

describe('DiskActionCache', () => {
  it('reports an unreadable entry as DATA_LOSS once and removes it', async () => {
    const root = await tempDir();
    const ac = new DiskActionCache(root);
    await ac.put('main', action, { exit_code: 0 });
    const [dir] = await readdir(root);
    await writeFile(join(root, dir!, `${action.hash}-${action.size_bytes}`), Buffer.from([0xff, 0xff, 0xff]));
    await assert.rejects(ac.get('main', action), (e: unknown) => e instanceof ReapiError && e.code === status.DATA_LOSS);
    assert.equal(await ac.get('main', action), undefined);
  });
});

describe('CompletenessCheckingActionCache', () => {
  async function setup() {
    const blobs = new MemoryBlobStore();
    const ac = new CompletenessCheckingActionCache(new MemoryActionCache(), blobs);
    const file = await putBlob(blobs, Buffer.from('output file'));
    const stdout = await putBlob(blobs, Buffer.from('stdout'));
    const inTree = digestOf(Buffer.from('file inside a tree'));
    const tree = encode('Tree', { root: { files: [{ name: 'f', digest: inTree }] } });
    const treeDigest = await putBlob(blobs, tree);
    return { blobs, ac, file, stdout, inTree, treeDigest };
  }

  it('serves an entry whose blobs are all present', async () => {
    const { blobs, ac, file, stdout, inTree, treeDigest } = await setup();
    await putBlob(blobs, Buffer.from('file inside a tree'));
    await ac.put('main', action, {
      output_files: [{ path: 'out', digest: file }],
      output_directories: [{ path: 'dir', tree_digest: treeDigest }],
      stdout_digest: stdout,
    });
    assert.ok(await ac.get('main', action));
    assert.deepEqual(await blobs.findMissing([inTree]), []);
  });

  it('treats an entry as a miss when a file inside an output directory is gone', async () => {
    const { ac, file, treeDigest } = await setup();
    await ac.put('main', action, {
      output_files: [{ path: 'out', digest: file }],
      output_directories: [{ path: 'dir', tree_digest: treeDigest }],
    });
    assert.equal(await ac.get('main', action), undefined);
  });

  it('treats an entry as a miss when stdout or an output file is gone', async () => {
    const { ac, file } = await setup();
    const gone = digestOf(Buffer.from('never stored'));
    await ac.put('main', action, { output_files: [{ path: 'out', digest: file }], stdout_digest: gone });
    assert.equal(await ac.get('main', action), undefined);
    await ac.put('main', action, { output_files: [{ path: 'out', digest: gone }] });
    assert.equal(await ac.get('main', action), undefined);
  });
});
