// Collects the declared outputs of a finished action from its exec root into the CAS and describes
// them as ActionResult fields.
//
// - v2.1 `output_paths` when set, else v2.0 `output_files` + `output_directories`; all relative
//   to `working_directory`. An output that was not produced is left out (REAPI) and named in
//   `missing` for the caller's log.
// - A regular file -> OutputFile (is_executable only when the owner x bit is set).
// - A directory -> a Tree (root + deduplicated children, every Directory canonical: entries
//   sorted by UTF-8 bytes, no default-valued fields) -> OutputDirectory. Symlinks inside become
//   SymlinkNodes; sockets, FIFOs and devices inside are skipped (reported in `skipped`).
// - A symlink -> OutputSymlink: in `output_symlinks` only for `output_paths` clients (REAPI v2.1:
//   "only populated if the command output_paths field was used"), and in the deprecated
//   `output_file_symlinks` / `output_directory_symlinks` by what it points to, for v2.0 clients
//   (a dangling link of an `output_paths` client appears in `output_symlinks` only).
//
// Errors are FAILED_PRECONDITION, as REAPI prescribes for outputs that contradict the Command
// (an output file that is a directory, ...) and, under SymlinkAbsolutePathStrategy DISALLOWED,
// for output symlinks with absolute targets: we also reject any symlink (declared output or
// inside an output directory) whose target leaves the exec root, lexically or really, and any
// output reached through a symlinked parent outside the exec root. Outputs are always read with
// lstat/readlink, never through a symlink, so a hostile action cannot make the worker upload
// host files.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readlink, realpath, stat } from 'node:fs/promises';
import { basename, dirname, join, relative, sep } from 'node:path';
import type { Stats } from 'node:fs';
import { putBlob } from '../cas/blob-io.ts';
import type { BlobStore } from '../cas/blob-store.ts';
import { digestKey, digestOf, type Digest } from '../common/digest.ts';
import { failedPrecondition } from '../common/errors.ts';
import { encode, type MessageInput } from '../protos/index.ts';
import { forEachLimit } from '../common/concurrency.ts';
import { badSymlinkTargetReason, compareNames, declaredOutputs, type DeclaredOutput } from './directory-validation.ts';

type OutputCommand = Pick<
  MessageInput<'Command'>,
  'output_files' | 'output_directories' | 'output_paths' | 'working_directory' | 'output_directory_format'
>;

export type OutputResultFields = Required<
  Pick<
    MessageInput<'ActionResult'>,
    'output_files' | 'output_directories' | 'output_symlinks' | 'output_file_symlinks' | 'output_directory_symlinks'
  >
>;

export interface CollectedOutputs {
  /** To spread into the ActionResult. */
  result: OutputResultFields;
  /** Declared outputs (as declared) that the action did not produce. */
  missing: string[];
  /** Entries inside output directories that are not files, directories or symlinks (exec-root relative). */
  skipped: string[];
  /** Distinct blobs the outputs consist of (files, Trees, Directories) and their total size. */
  blobs: number;
  bytes: number;
  /** Of those, what the CAS did not have and was uploaded. */
  uploadedBlobs: number;
  uploadedBytes: number;
}

interface Upload {
  digest: Digest;
  /** A file to stream, or bytes in memory. */
  file?: string;
  data?: Buffer;
}

const HASH_CONCURRENCY = 16;
const UPLOAD_CONCURRENCY = 8;
const FIND_MISSING_BATCH = 10_000;

/** A tiny semaphore, so nested directory walks share one bound on open files. */
class Limiter {
  private active = 0;
  private readonly queue: Array<() => void> = [];
  constructor(private readonly limit: number) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.limit) await new Promise<void>((resolve) => this.queue.push(resolve));
    this.active++;
    try {
      return await fn();
    } finally {
      this.active--;
      this.queue.shift()?.();
    }
  }
}

async function hashFile(path: string): Promise<Digest> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { hash: hash.digest('hex'), size_bytes: size };
}

function isInside(root: string, path: string): boolean {
  return path === root || path.startsWith(root.endsWith(sep) ? root : root + sep);
}

const isExecutable = (st: Stats): boolean => (st.mode & 0o100) !== 0;

function ignoreMissing(err: NodeJS.ErrnoException): undefined {
  if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return undefined;
  throw err;
}

class Collector {
  readonly uploads = new Map<string, Upload>();
  readonly skipped: string[] = [];
  private readonly limiter = new Limiter(HASH_CONCURRENCY);

  constructor(private readonly rootReal: string) {}

  rel(abs: string): string {
    return relative(this.rootReal, abs).split(sep).join('/');
  }

  async file(abs: string): Promise<Digest> {
    const digest = await this.limiter.run(() => hashFile(abs));
    if (!this.uploads.has(digest.hash)) this.uploads.set(digest.hash, { digest, file: abs });
    return digest;
  }

  blob(data: Buffer): Digest {
    const digest = digestOf(data);
    if (!this.uploads.has(digest.hash)) this.uploads.set(digest.hash, { digest, data });
    return digest;
  }

  /**
   * Check the symlink at `abs` (already lstat'ed as one); returns its target and what the target
   * is (undefined when dangling). FAILED_PRECONDITION when it leaves the exec root.
   */
  async symlink(abs: string): Promise<{ target: string; kind?: 'file' | 'directory' | 'other' }> {
    const target = await readlink(abs);
    const rel = this.rel(abs);
    const parentDepth = rel.split('/').length - 1;
    const bad = badSymlinkTargetReason(target, parentDepth);
    if (bad) throw failedPrecondition(`output symlink "${rel}" ${bad.replace('input root', 'exec root')}`);
    let real: string | undefined;
    try {
      real = await realpath(abs);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ELOOP') return { target };
      throw err;
    }
    if (!isInside(this.rootReal, real)) {
      throw failedPrecondition(`output symlink "${rel}" -> "${target}" resolves outside the exec root (through other symlinks)`);
    }
    const st = await stat(real);
    return { target, kind: st.isFile() ? 'file' : st.isDirectory() ? 'directory' : 'other' };
  }

  /** Build the Tree of the directory at `abs`; returns its root Directory and the children by digest. */
  async tree(abs: string): Promise<{ root: MessageInput<'Directory'>; children: Map<string, MessageInput<'Directory'>> }> {
    const children = new Map<string, MessageInput<'Directory'>>();
    const visit = async (dir: string): Promise<MessageInput<'Directory'>> => {
      const names = (await readdir(dir)).sort(compareNames);
      const entries = await Promise.all(
        names.map(async (name) => {
          const path = join(dir, name);
          return { name, path, st: await lstat(path) };
        }),
      );
      const files: Array<MessageInput<'FileNode'>> = [];
      const directories: Array<MessageInput<'DirectoryNode'>> = [];
      const symlinks: Array<MessageInput<'SymlinkNode'>> = [];
      // Children in parallel, results kept in name order.
      await Promise.all(
        entries.map(async ({ name, path, st }, i) => {
          if (st.isFile()) {
            const digest = await this.file(path);
            files[i] = isExecutable(st) ? { name, digest, is_executable: true } : { name, digest };
          } else if (st.isDirectory()) {
            const sub = await visit(path);
            const digest = digestOf(encode('Directory', sub));
            if (!children.has(digestKey(digest))) children.set(digestKey(digest), sub);
            directories[i] = { name, digest };
          } else if (st.isSymbolicLink()) {
            symlinks[i] = { name, target: (await this.symlink(path)).target };
          } else {
            this.skipped.push(this.rel(path));
          }
        }),
      );
      const dense = <T>(xs: T[]): T[] => xs.filter((x) => x !== undefined);
      const message: MessageInput<'Directory'> = {};
      if (files.length > 0) message.files = dense(files);
      if (directories.length > 0) message.directories = dense(directories);
      if (symlinks.length > 0) message.symlinks = dense(symlinks);
      return message;
    };
    const root = await visit(abs);
    return { root, children };
  }
}

function directoryFormat(command: OutputCommand): { tree: boolean; directories: boolean } {
  const f = command.output_directory_format;
  if (f === 'DIRECTORY_ONLY' || f === 1) return { tree: false, directories: true };
  if (f === 'TREE_AND_DIRECTORY' || f === 2) return { tree: true, directories: true };
  return { tree: true, directories: false };
}

/**
 * Upload the declared outputs of `command` found in `execRoot` to `store` and describe them.
 * INVALID_ARGUMENT for bad output paths (see `declaredOutputs`); FAILED_PRECONDITION for outputs
 * of the wrong kind and symlinks leaving the exec root.
 */
export async function collectOutputs(execRoot: string, command: OutputCommand, store: BlobStore): Promise<CollectedOutputs> {
  const outputs = declaredOutputs(command);
  const rootReal = await realpath(execRoot);
  const c = new Collector(rootReal);
  const format = directoryFormat(command);
  const result: OutputResultFields = {
    output_files: [],
    output_directories: [],
    output_symlinks: [],
    output_file_symlinks: [],
    output_directory_symlinks: [],
  };
  const missing: string[] = [];

  const collectOne = async (out: DeclaredOutput): Promise<void> => {
    const what = out.kind === 'any' ? 'output path' : out.kind === 'file' ? 'output file' : 'output directory';
    let abs: string;
    if (out.path === '') {
      abs = rootReal;
    } else {
      const parent = await realpath(join(rootReal, dirname(out.path))).catch(ignoreMissing);
      if (parent === undefined) return void missing.push(out.declared);
      if (!isInside(rootReal, parent)) {
        throw failedPrecondition(`${what} "${out.declared}" lies under a symlink leading outside the exec root`);
      }
      abs = join(parent, basename(out.path));
    }
    const st = await lstat(abs).catch(ignoreMissing);
    if (!st) return void missing.push(out.declared);

    if (st.isFile()) {
      if (out.kind === 'directory') throw failedPrecondition(`${what} "${out.declared}" is a regular file, not a directory`);
      const digest = await c.file(abs);
      result.output_files.push(isExecutable(st) ? { path: out.declared, digest, is_executable: true } : { path: out.declared, digest });
    } else if (st.isDirectory()) {
      if (out.kind === 'file') throw failedPrecondition(`${what} "${out.declared}" is a directory, not a regular file`);
      const { root, children } = await c.tree(abs);
      const entry: MessageInput<'OutputDirectory'> = { path: out.declared };
      if (format.tree) entry.tree_digest = c.blob(encode('Tree', { root, children: [...children.values()] }));
      if (format.directories) {
        entry.root_directory_digest = c.blob(encode('Directory', root));
        for (const child of children.values()) c.blob(encode('Directory', child));
      }
      result.output_directories.push(entry);
    } else if (st.isSymbolicLink()) {
      const { target, kind } = await c.symlink(abs);
      const link = { path: out.declared, target };
      if (out.kind === 'file' && kind !== undefined && kind !== 'file') {
        throw failedPrecondition(`${what} "${out.declared}" is a symlink to a ${kind === 'other' ? 'special file' : kind}, not to a regular file`);
      }
      if (out.kind === 'directory' && kind !== undefined && kind !== 'directory') {
        throw failedPrecondition(`${what} "${out.declared}" is a symlink to a ${kind === 'other' ? 'special file' : kind}, not to a directory`);
      }
      if (out.kind === 'any') result.output_symlinks.push(link);
      if (out.kind === 'file' || (out.kind === 'any' && kind === 'file')) result.output_file_symlinks.push(link);
      if (out.kind === 'directory' || (out.kind === 'any' && kind === 'directory')) result.output_directory_symlinks.push(link);
    } else {
      throw failedPrecondition(`${what} "${out.declared}" is neither a regular file, a directory nor a symlink`);
    }
  };
  for (const out of outputs) await collectOne(out);

  const uploads = [...c.uploads.values()];
  const absent = new Set<string>();
  for (let i = 0; i < uploads.length; i += FIND_MISSING_BATCH) {
    const batch = uploads.slice(i, i + FIND_MISSING_BATCH).map((u) => u.digest);
    for (const d of await store.findMissing(batch)) absent.add(d.hash);
  }
  let uploadedBlobs = 0;
  let uploadedBytes = 0;
  await forEachLimit(
    uploads.filter((u) => absent.has(u.digest.hash)),
    UPLOAD_CONCURRENCY,
    async (u) => {
      if (u.data) await putBlob(store, u.data, u.digest);
      else await uploadFile(store, u.file!, u.digest);
      uploadedBlobs++;
      uploadedBytes += u.digest.size_bytes;
    },
  );
  return {
    result,
    missing,
    skipped: c.skipped.sort(),
    blobs: uploads.length,
    bytes: uploads.reduce((n, u) => n + u.digest.size_bytes, 0),
    uploadedBlobs,
    uploadedBytes,
  };
}

/** Stream a file into the store; the writer re-checks the hash, so a file changed since hashing fails. */
async function uploadFile(store: BlobStore, path: string, digest: Digest): Promise<void> {
  const writer = await store.write(digest);
  if (writer.alreadyExists) return;
  try {
    for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) await writer.append(chunk as Buffer);
    await writer.commit();
  } catch (err) {
    await writer.abort();
    throw err;
  }
}

/** Upload stdout and stderr; an empty stream gets no digest (the field stays unset). */
export async function uploadStdStreams(
  stdout: Buffer,
  stderr: Buffer,
  store: BlobStore,
): Promise<{ stdout_digest?: Digest; stderr_digest?: Digest }> {
  const out: { stdout_digest?: Digest; stderr_digest?: Digest } = {};
  if (stdout.length > 0) out.stdout_digest = digestOf(stdout);
  if (stderr.length > 0) out.stderr_digest = digestOf(stderr);
  const wanted = [out.stdout_digest, out.stderr_digest].filter((d): d is Digest => d !== undefined);
  if (wanted.length === 0) return out;
  const absent = new Set((await store.findMissing(wanted)).map((d) => d.hash));
  if (out.stdout_digest && absent.has(out.stdout_digest.hash)) await putBlob(store, stdout, out.stdout_digest);
  if (out.stderr_digest && absent.has(out.stderr_digest.hash) && out.stderr_digest.hash !== out.stdout_digest?.hash) {
    await putBlob(store, stderr, out.stderr_digest);
  }
  return out;
}
