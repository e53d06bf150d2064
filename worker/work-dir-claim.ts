// One worker process per work directory. Two workers sharing one (two `reapi worker`s started in
// the same directory, so with the same default) would delete each other's exec roots at start and
// evict each other's cache files under running actions. A worker claims its work dir with an
// owner file (pid and process start time, so a recycled pid does not count); a default work dir
// already claimed by a live worker is passed over for the next one (`-2`, `-3`, ...), and an
// explicit one is refused with a message naming the owner.
import { mkdir, open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { processStartTime } from './runners/docker-support.ts';

const OWNER_FILE = 'owner';

async function ownerOf(dir: string): Promise<{ pid: number; start: string } | undefined> {
  try {
    const [pid, start] = (await readFile(join(dir, OWNER_FILE), 'utf8')).trim().split(' ');
    return { pid: Number(pid), start: start ?? '' };
  } catch {
    return undefined;
  }
}

async function alive(owner: { pid: number; start: string }): Promise<boolean> {
  if (!Number.isInteger(owner.pid) || owner.pid <= 0) return false;
  return (await processStartTime(owner.pid)) === owner.start;
}

/** Claim `dir` for this process; undefined when a live process holds it. */
async function tryClaim(dir: string): Promise<{ release(): Promise<void> } | undefined> {
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const me = `${process.pid} ${(await processStartTime(process.pid)) ?? ''}`;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await open(join(dir, OWNER_FILE), 'wx', 0o644);
      await fh.writeFile(me);
      await fh.close();
      return { release: () => rm(join(dir, OWNER_FILE), { force: true }) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const owner = await ownerOf(dir);
      if (owner && owner.pid !== process.pid && (await alive(owner))) return undefined;
      // A dead owner's claim (a crash): take it over.
      await rm(join(dir, OWNER_FILE), { force: true });
    }
  }
  return undefined;
}

export interface ClaimedWorkDir {
  dir: string;
  release(): Promise<void>;
}

/** Claim the configured work dir, or the first free one of `base`, `base-2`, `base-3`, .... */
export async function claimWorkDir(configured: string | undefined, base: string): Promise<ClaimedWorkDir> {
  if (configured !== undefined) {
    const claim = await tryClaim(configured);
    if (!claim) {
      const owner = await ownerOf(configured);
      throw new Error(`work dir ${configured} is in use by another worker (pid ${owner?.pid ?? '?'}): give each worker its own --work-dir`);
    }
    return { dir: configured, ...claim };
  }
  for (let i = 1; i <= 64; i++) {
    const dir = i === 1 ? base : `${base}-${i}`;
    const claim = await tryClaim(dir);
    if (claim) return { dir, ...claim };
  }
  throw new Error(`no free work dir among ${base}, ${base}-2 ... ${base}-64: pass --work-dir`);
}
