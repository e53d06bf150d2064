// Turns an input root (a Directory Merkle tree in the CAS) into a real directory: fetch and check
// every Directory, fetch every file into the local content cache, then hardlink files from it.
// Also creates the parents of declared outputs, which REAPI makes the server's job.
import { mkdir, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { parseConfig } from '../common/config.ts';
import { digestKey, validateDigest, type Digest } from '../common/digest.ts';
import { invalidArgument, missingBlobs, ReapiError } from '../common/errors.ts';
import { readBlob } from '../cas/blob-io.ts';
import { decodeDirectory } from '../cas/tree.ts';
import type { MessageInput } from '../protos/index.ts';
import { forEachLimit } from '../common/concurrency.ts';
import type { LocalContentCache } from './content-cache.ts';
import { components, ConfinedDir, EscapeError, NotFoundError } from './confined-dir.ts';
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

/** Bounds on what one input root may expand to (a Directory DAG can name a subtree many times). */
export interface InputLimits {
  /** Files, directories and symlinks of the expanded tree. */
  maxEntries: number;
  maxFiles: number;
  /** Total size of the expanded tree's files. */
  maxBytes: number;
  /** Directory levels below the root. */
  maxDepth: number;
}

/** The config's defaults (worker.inputLimits), for callers that pass none. */
export const DEFAULT_INPUT_LIMITS: InputLimits = parseConfig({}).worker.inputLimits;

interface TreeSize {
  entries: number;
  files: number;
  bytes: number;
  depth: number;
}

/** Saturating sum: expanded sizes of a DAG can pass 2^53. */
const add = (a: number, b: number): number => Math.min(Number.MAX_SAFE_INTEGER, a + b);

/**
 * What the tree under `rootKey` expands to, from the deduplicated Directories (iteratively: a deep
 * chain must not overflow the stack). Content addressing rules out cycles.
 */
function expandedSize(rootKey: string, dirs: Map<string, Directory>): TreeSize {
  const memo = new Map<string, TreeSize>();
  const stack: Array<{ key: string; next: number }> = [{ key: rootKey, next: 0 }];
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    const dir = dirs.get(top.key)!;
    if (top.next < dir.directories.length) {
      const child = digestKey(dir.directories[top.next++]!.digest!);
      if (!memo.has(child)) stack.push({ key: child, next: 0 });
      continue;
    }
    const size: TreeSize = { entries: dir.files.length + dir.symlinks.length + dir.directories.length, files: dir.files.length, bytes: 0, depth: 0 };
    for (const f of dir.files) size.bytes = add(size.bytes, Number(f.digest!.size_bytes));
    for (const sub of dir.directories) {
      const c = memo.get(digestKey(sub.digest!))!;
      size.entries = add(size.entries, c.entries);
      size.files = add(size.files, c.files);
      size.bytes = add(size.bytes, c.bytes);
      size.depth = Math.max(size.depth, c.depth + 1);
    }
    memo.set(top.key, size);
    stack.pop();
  }
  return memo.get(rootKey)!;
}

function checkLimits(size: TreeSize, limits: InputLimits, root: Digest): void {
  const over = (what: string, n: number, limit: number, key: keyof InputLimits) =>
    invalidArgument(
      `input root ${digestKey(root)} expands to ${n >= Number.MAX_SAFE_INTEGER ? 'more than 2^53' : n} ${what}, over this worker's limit of ${limit} ` +
        `(worker.inputLimits.${key}); a Directory named many times counts each time it appears`,
    );
  if (size.depth > limits.maxDepth) throw over('directory levels', size.depth, limits.maxDepth, 'maxDepth');
  if (size.entries > limits.maxEntries) throw over('entries', size.entries, limits.maxEntries, 'maxEntries');
  if (size.files > limits.maxFiles) throw over('files', size.files, limits.maxFiles, 'maxFiles');
  if (size.bytes > limits.maxBytes) throw over('bytes of files', size.bytes, limits.maxBytes, 'maxBytes');
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
  opts: { copy?: boolean; limits?: InputLimits; signal?: AbortSignal } = {},
): Promise<MaterializedInputs> {
  const limits = opts.limits ?? DEFAULT_INPUT_LIMITS;
  const checkAborted = (): void => {
    if (opts.signal?.aborted) throw opts.signal.reason instanceof Error ? opts.signal.reason : new Error(String(opts.signal.reason));
  };
  const rootDigest = validateDigest(inputRootDigest, 'input_root_digest', cache.digestFunction);
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
      checkAborted();
      if (depth > limits.maxDepth) checkLimits({ entries: 0, files: 0, bytes: 0, depth }, limits, rootDigest);
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
        validateDirectory(dir, d, depth, cache.digestFunction);
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

    // Refused before a single file is fetched or created: a DAG of a few KiB can stand for 2^30
    // directories.
    if (missing.length === 0) checkLimits(expandedSize(digestKey(rootDigest), dirs), limits, rootDigest);

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
      checkAborted();
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
    await forEachLimit(leaves, LINK_CONCURRENCY, (op) => {
      checkAborted();
      return op().then(() => {});
    });
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

/**
 * Create the directories leading up to every declared output (not the outputs themselves), as
 * REAPI requires of the server: `output_paths`, or `output_files` + `output_directories`, all
 * relative to `working_directory`. INVALID_ARGUMENT for absolute paths or paths escaping the
 * exec root (also through symlinks of the input root, chained or not), and when a parent is an
 * input file. Symlinks are followed only by a confined walk (worker/confined-dir.ts), never by
 * the kernel, so nothing is ever created outside the exec root.
 */
export async function createOutputParents(execRoot: string, command: OutputCommand): Promise<void> {
  const outputs = declaredOutputs(command);
  const root = await ConfinedDir.openRoot(execRoot);
  try {
    const done = new Set<string>();
    for (const out of outputs) {
      const parts = components(out.path);
      parts.pop();
      const key = parts.join('/');
      if (parts.length === 0 || done.has(key)) continue;
      done.add(key);
      try {
        await (await root.openDir(parts, { follow: true, create: true })).close();
      } catch (err) {
        if (err instanceof EscapeError) {
          const where = err.link !== undefined ? `its parent "${err.link}" is a symlink that does not lead to a directory inside the input root` : err.message;
          throw invalidArgument(`output "${out.declared}": ${where} (${err.message})`);
        }
        if (err instanceof NotFoundError) throw invalidArgument(`output "${out.declared}": its parent ${err.message.replace('is a file,', 'is a file of the input root,')}`);
        throw err;
      }
    }
  } finally {
    await root.close();
  }
}
