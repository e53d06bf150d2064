// Turns an input root (a Directory Merkle tree in the CAS) into a real directory: fetch and check
// every Directory, fetch every file into the local content cache, then hardlink files from it.
// Also creates the parents of declared outputs, which REAPI makes the server's job.
import { lstat, mkdir, realpath, symlink } from 'node:fs/promises';
import { join, sep } from 'node:path';
import { digestKey, validateDigest, type Digest } from '../common/digest.ts';
import { invalidArgument, missingBlobs, ReapiError } from '../common/errors.ts';
import { readBlob } from '../cas/blob-io.ts';
import { decodeDirectory } from '../cas/tree.ts';
import type { MessageInput } from '../protos/index.ts';
import { forEachLimit } from '../common/concurrency.ts';
import type { LocalContentCache } from './content-cache.ts';
import { declaredOutputs, validateDirectory, type Directory } from './directory-validation.ts';

/**
 * FAILED_PRECONDITION because blobs the action needs are not in the CAS: `details` holds one
 * packed google.rpc.PreconditionFailure with a MISSING violation (`blobs/<hash>/<size>`) for every
 * blob found missing (what clients act on: upload and retry); `missing` is the same list, typed.
 */
export class MissingBlobsError extends ReapiError {
  constructor(readonly missing: readonly Digest[]) {
    const e = missingBlobs([...missing], 'input root');
    super(e.code, e.message, e.details);
    this.name = 'MissingBlobsError';
  }
}

export interface MaterializedInputs {
  /** Files created (a file reachable by two paths counts twice). */
  files: number;
  /** Their total size. */
  bytes: number;
  directories: number;
  symlinks: number;
  /** Bytes downloaded from the remote CAS for this input root (Directories and files). */
  fetchedBytes: number;
  /** Unpin the inputs in the local cache; call when the action is done with the exec root. */
  release(): void;
}

const READ_CONCURRENCY = 32;
const LINK_CONCURRENCY = 64;

/**
 * Build the input root `inputRootDigest` at `execRoot` (created if needed; must not contain any
 * of the entries). Every Directory is fetched breadth-first and validated (INVALID_ARGUMENT naming
 * the digest and entry). Blobs missing from the CAS are collected over the whole reachable tree
 * and reported together as a MissingBlobsError (FAILED_PRECONDITION). Files are hardlinked from
 * the local cache (0444, or 0555 for executables) and stay pinned there until `release()`.
 */
export async function materializeInputRoot(
  cache: LocalContentCache,
  inputRootDigest: Digest,
  execRoot: string,
  opts: { copy?: boolean } = {},
): Promise<MaterializedInputs> {
  const rootDigest = validateDigest(inputRootDigest, 'input_root_digest');
  const releases: Array<() => void> = [];
  const release = (): void => {
    for (const r of releases.splice(0)) r();
  };
  try {
    const dirs = new Map<string, Directory>();
    const missing: Digest[] = [];
    let fetchedBytes = 0;

    let level: Digest[] = [rootDigest];
    const seen = new Set<string>([digestKey(rootDigest)]);
    for (let depth = 0; level.length > 0; depth++) {
      releases.push(cache.pin(level));
      const got = await cache.ensure(level);
      fetchedBytes += got.fetchedBytes;
      missing.push(...got.missing);
      const absent = new Set(got.missing.map((d) => d.hash));
      const present = level.filter((d) => !absent.has(d.hash));
      const decoded: Directory[] = new Array(present.length);
      await forEachLimit([...present.keys()], READ_CONCURRENCY, async (i) => {
        const d = present[i]!;
        decoded[i] = decodeDirectory(await readBlob(cache.local, d), d);
      });
      const next: Digest[] = [];
      present.forEach((d, i) => {
        const dir = decoded[i]!;
        validateDirectory(dir, d, depth);
        dirs.set(digestKey(d), dir);
        for (const child of dir.directories) {
          const key = digestKey(child.digest!);
          if (seen.has(key)) continue;
          seen.add(key);
          next.push({ hash: child.digest!.hash, size_bytes: Number(child.digest!.size_bytes) });
        }
      });
      level = next;
    }

    const plain: Digest[] = [];
    const executable: Digest[] = [];
    for (const dir of dirs.values()) {
      for (const f of dir.files) {
        const d = { hash: f.digest!.hash, size_bytes: Number(f.digest!.size_bytes) };
        plain.push(d);
        if (f.is_executable) executable.push(d);
      }
    }
    releases.push(cache.pin(plain), cache.pin(executable, true));
    const got = await cache.ensure(plain);
    fetchedBytes += got.fetchedBytes;
    missing.push(...got.missing);
    if (missing.length > 0) throw new MissingBlobsError(missing);
    await cache.ensureExecutable(executable);

    // Directories first (parents before children), then files and symlinks in parallel.
    const stats = { files: 0, bytes: 0, directories: 0, symlinks: 0 };
    const leaves: Array<() => Promise<unknown>> = [];
    await mkdir(execRoot, { recursive: true });
    const build = async (digest: Digest, path: string): Promise<void> => {
      const dir = dirs.get(digestKey(digest))!;
      for (const f of dir.files) {
        const d = { hash: f.digest!.hash, size_bytes: Number(f.digest!.size_bytes) };
        stats.files++;
        stats.bytes += d.size_bytes;
        leaves.push(() => cache.materialize(d, f.is_executable, join(path, f.name), opts.copy));
      }
      for (const s of dir.symlinks) {
        stats.symlinks++;
        leaves.push(() => symlink(s.target, join(path, s.name)));
      }
      for (const sub of dir.directories) {
        const child = join(path, sub.name);
        await mkdir(child, { mode: 0o755 });
        stats.directories++;
        await build({ hash: sub.digest!.hash, size_bytes: Number(sub.digest!.size_bytes) }, child);
      }
    };
    await build(rootDigest, execRoot);
    await forEachLimit(leaves, LINK_CONCURRENCY, (op) => op().then(() => {}));
    return { ...stats, fetchedBytes, release };
  } catch (err) {
    release();
    throw err;
  }
}

type OutputCommand = Pick<
  MessageInput<'Command'>,
  'output_files' | 'output_directories' | 'output_paths' | 'working_directory'
>;

function isInside(root: string, path: string): boolean {
  return path === root || path.startsWith(root.endsWith(sep) ? root : root + sep);
}

/**
 * Create the directories leading up to every declared output (not the outputs themselves), as
 * REAPI requires of the server: `output_paths`, or `output_files` + `output_directories`, all
 * relative to `working_directory`. INVALID_ARGUMENT for absolute paths or paths escaping the
 * exec root (also through a symlink of the input root), and when a parent is an input file.
 */
export async function createOutputParents(execRoot: string, command: OutputCommand): Promise<void> {
  const outputs = declaredOutputs(command);
  const rootReal = await realpath(execRoot);
  /** Parent path relative to the exec root -> the real directory it leads to. */
  const resolved = new Map<string, string>();
  for (const out of outputs) {
    const parts = out.path === '' ? [] : out.path.split('/');
    parts.pop();
    let cur = rootReal;
    let rel = '';
    for (const part of parts) {
      rel = rel === '' ? part : `${rel}/${part}`;
      const known = resolved.get(rel);
      if (known !== undefined) {
        cur = known;
        continue;
      }
      const next = join(cur, part);
      const st = await lstat(next).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return undefined;
        throw err;
      });
      if (!st) {
        await mkdir(next, { mode: 0o755 }).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'EEXIST') throw err;
        });
        cur = next;
      } else if (st.isDirectory()) {
        cur = next;
      } else if (st.isSymbolicLink()) {
        const real = await realpath(next).catch(() => undefined);
        if (!real || !isInside(rootReal, real) || !(await lstat(real)).isDirectory()) {
          throw invalidArgument(
            `output "${out.declared}": its parent "${rel}" is a symlink that does not lead to a directory inside the input root`,
          );
        }
        cur = real;
      } else {
        throw invalidArgument(`output "${out.declared}": its parent "${rel}" is a file of the input root, not a directory`);
      }
      resolved.set(rel, cur);
    }
  }
}
