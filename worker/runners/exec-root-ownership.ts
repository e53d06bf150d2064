// Making a prepared exec root writable by the sandbox's non-root user without touching inputs:
// directories change owner, files (possibly hardlinks into the content cache) stay root's.
import { lchown, opendir } from 'node:fs/promises';
import { join } from 'node:path';

/** lchown every directory under (and including) `root`; files and symlinks are left alone. */
export async function chownDirs(root: string, uid: number, gid: number): Promise<void> {
  await lchown(root, uid, gid);
  const dir = await opendir(root);
  const subdirs: string[] = [];
  for await (const entry of dir) if (entry.isDirectory()) subdirs.push(join(root, entry.name));
  await Promise.all(subdirs.map((d) => chownDirs(d, uid, gid)));
}
