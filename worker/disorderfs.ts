// The opt-in directory-order variation: the exec root is served through disorderfs (FUSE), which
// returns directory entries in a shuffled order, for the duration of one run.
import { execFile } from 'node:child_process';
import { mkdir, rmdir } from 'node:fs/promises';
import { promisify } from 'node:util';
import type { Logger } from '../common/logger.ts';

const run = promisify(execFile);

/**
 * Run `fn` on a shuffled view of `execRoot`. When the mount fails (no /dev/fuse, say) the run
 * goes ahead on `execRoot` itself and the failure is logged: the other variations still apply.
 */
export async function withShuffledDirectories<T>(disorderfs: string, execRoot: string, log: Logger, fn: (root: string) => Promise<T>): Promise<T> {
  const mountpoint = `${execRoot}.shuffled`;
  await mkdir(mountpoint, { mode: 0o755 });
  try {
    // allow_other: the action runs as the sandbox user, not as the worker that mounts.
    await run(disorderfs, ['--shuffle-dirents=yes', '--multi-user=yes', '-o', 'allow_other', execRoot, mountpoint]);
  } catch (err) {
    await rmdir(mountpoint).catch(() => {});
    log.warn({ err }, 'disorderfs could not mount; this verification run keeps the directory order');
    return fn(execRoot);
  }
  try {
    return await fn(mountpoint);
  } finally {
    await run('fusermount', ['-u', mountpoint]).catch(() => run('umount', ['-l', mountpoint]));
    await rmdir(mountpoint).catch(() => {});
  }
}
