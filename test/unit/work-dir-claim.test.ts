// One worker process per work dir: a default one held by a live worker is passed over, an explicit
// one is refused naming the owner, and a dead owner's claim is taken over.
import { strict as assert } from 'node:assert';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { processStartTime } from '../../worker/runners/docker-support.ts';
import { claimWorkDir } from '../../worker/work-dir-claim.ts';

const root = await mkdtemp(join(tmpdir(), 'reapi-claim-'));
after(() => rm(root, { recursive: true, force: true }));

/** Mark `dir` as held by another live process (this test's parent). */
async function heldByParent(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'owner'), `${process.ppid} ${await processStartTime(process.ppid)}`);
}

test('a default work dir held by a live worker is passed over for the next one', async () => {
  const base = join(root, 'default');
  await heldByParent(base);
  const claim = await claimWorkDir(undefined, base);
  assert.equal(claim.dir, `${base}-2`);
  assert.match(await readFile(join(claim.dir, 'owner'), 'utf8'), new RegExp(`^${process.pid} `));
  await claim.release();
});

test('an explicit work dir held by a live worker is refused, naming it', async () => {
  const dir = join(root, 'explicit');
  await heldByParent(dir);
  await assert.rejects(claimWorkDir(dir, join(root, 'unused')), new RegExp(`work dir ${dir} is in use by another worker \\(pid ${process.ppid}\\): give each worker its own --work-dir`));
});

test('a dead owner\u2019s claim is taken over, and a released dir can be claimed again', async () => {
  const dir = join(root, 'crashed');
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'owner'), '2147483646 12345');
  const claim = await claimWorkDir(dir, join(root, 'unused'));
  assert.equal(claim.dir, dir);
  await claim.release();
  const again = await claimWorkDir(undefined, dir);
  assert.equal(again.dir, dir);
  await again.release();
});
