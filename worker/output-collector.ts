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
// output reached through a symlinked parent outside the exec root. Every path is walked through
// worker/confined-dir.ts (each component opened with O_NOFOLLOW from its parent's handle), so a
// hostile action cannot make the worker read, hash or upload anything outside its exec root.
import type { Stats } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { putBlob } from '../cas/blob-io.ts';
import type { BlobStore } from '../cas/blob-store.ts';
import { digestKey, type Digest } from '../common/digest.ts';
import type { DigestFunction } from '../common/digest-function.ts';
import { failedPrecondition } from '../common/errors.ts';
import { encode, type MessageInput } from '../protos/index.ts';
import { forEachLimit } from '../common/concurrency.ts';
import { components, ConfinedDir, EscapeError, NotFoundError } from './confined-dir.ts';
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
  /** A file to stream (its physical path from the exec root, walked again without following links), or bytes in memory. */
  file?: readonly string[];
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

async function hashHandle(fh: FileHandle, fn: DigestFunction): Promise<Digest> {
  const hash = fn.hasher();
  let size = 0;
  for await (const chunk of fh.createReadStream({ highWaterMark: 1024 * 1024, autoClose: false, start: 0 })) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { hash: hash.hex(), size_bytes: size };
}

const isExecutable = (st: Stats): boolean => (st.mode & 0o100) !== 0;

/** Opens the file at physical path `parts` of the tree (no symlink followed) and runs `fn` on it. */
function withFile<T>(root: ConfinedDir, parts: readonly string[], fn: (fh: FileHandle) => Promise<T>): Promise<T> {
  return root.atPath(parts, async (dir, name) => {
    const fh = await dir.openFile(name);
    try {
      return await fn(fh);
    } finally {
      await fh.close();
    }
  });
}

class Collector {
  readonly uploads = new Map<string, Upload>();
  readonly skipped: string[] = [];
  private readonly limiter = new Limiter(HASH_CONCURRENCY);

  constructor(
    readonly root: ConfinedDir,
    /** The store's digest function: outputs are hashed as the action's inputs were. */
    private readonly fn: DigestFunction,
  ) {}

  /** Hash the regular file `name` of `dir` and remember it for upload. */
  async file(dir: ConfinedDir, name: string): Promise<Digest> {
    const parts = [...dir.components, name];
    const digest = await this.limiter.run(async () => {
      const fh = await dir.openFile(name);
      try {
        return await hashHandle(fh, this.fn);
      } finally {
        await fh.close();
      }
    });
    if (!this.uploads.has(digest.hash)) this.uploads.set(digest.hash, { digest, file: parts });
    return digest;
  }

  blob(data: Buffer): Digest {
    const digest = this.fn.digestOf(data);
    if (!this.uploads.has(digest.hash)) this.uploads.set(digest.hash, { digest, data });
    return digest;
  }

  /**
   * Check the symlink `name` of `dir` (already lstat'ed as one); returns its target and what it
   * leads to (undefined when dangling). FAILED_PRECONDITION when it leaves the exec root.
   */
  async symlink(dir: ConfinedDir, name: string): Promise<{ target: string; kind?: 'file' | 'directory' | 'other' }> {
    const target = await dir.readlink(name);
    const rel = [...dir.components, name].join('/');
    const bad = badSymlinkTargetReason(target, dir.components.length);
    if (bad) throw failedPrecondition(`output symlink "${rel}" ${bad.replace('input root', 'exec root')}`);
    let kind: Awaited<ReturnType<ConfinedDir['resolveKind']>>;
    try {
      kind = await this.root.resolveKind([...dir.components, name]);
    } catch (err) {
      if (err instanceof EscapeError) {
        throw failedPrecondition(`output symlink "${rel}" -> "${target}" resolves outside the exec root (through other symlinks: ${err.message})`);
      }
      throw err;
    }
    return kind === undefined ? { target } : { target, kind };
  }

  /**
   * Build the Tree of directory `dir`; returns its root Directory and the children by digest.
   * Subdirectories are walked one after another (open handles stay bounded by the depth), the
   * files of one directory in parallel.
   */
  async tree(dir: ConfinedDir): Promise<{ root: MessageInput<'Directory'>; children: Map<string, MessageInput<'Directory'>> }> {
    const children = new Map<string, MessageInput<'Directory'>>();
    const visit = async (d: ConfinedDir): Promise<MessageInput<'Directory'>> => {
      const names = (await d.list()).sort(compareNames);
      const entries = await Promise.all(names.map(async (name) => ({ name, st: await d.lstat(name) })));
      const files: Array<MessageInput<'FileNode'>> = [];
      const directories: Array<MessageInput<'DirectoryNode'>> = [];
      const symlinks: Array<MessageInput<'SymlinkNode'>> = [];
      await Promise.all(
        entries.map(async ({ name, st }) => {
          if (st.isFile()) {
            const digest = await this.file(d, name);
            files.push(isExecutable(st) ? { name, digest, is_executable: true } : { name, digest });
          } else if (st.isSymbolicLink()) {
            symlinks.push({ name, target: (await this.symlink(d, name)).target });
          } else if (!st.isDirectory()) {
            this.skipped.push([...d.components, name].join('/'));
          }
        }),
      );
      for (const { name, st } of entries) {
        if (!st.isDirectory()) continue;
        const sub = await d.child(name);
        try {
          const message = await visit(sub);
          const digest = this.fn.digestOf(encode('Directory', message));
          if (!children.has(digestKey(digest))) children.set(digestKey(digest), message);
          directories.push({ name, digest });
        } finally {
          await sub.close();
        }
      }
      const byName = <T extends { name?: string | null }>(xs: T[]): T[] => xs.sort((a, b) => compareNames(a.name ?? '', b.name ?? ''));
      const message: MessageInput<'Directory'> = {};
      if (files.length > 0) message.files = byName(files);
      if (directories.length > 0) message.directories = directories;
      if (symlinks.length > 0) message.symlinks = byName(symlinks);
      return message;
    };
    const root = await visit(dir);
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
  const root = await ConfinedDir.openRoot(execRoot);
  const c = new Collector(root, store.digestFunction);
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
    const parts = components(out.path);
    const name = parts.pop();
    let parent: ConfinedDir;
    try {
      parent = await root.openDir(parts, { follow: true });
    } catch (err) {
      if (err instanceof NotFoundError) return void missing.push(out.declared);
      if (err instanceof EscapeError) throw failedPrecondition(`${what} "${out.declared}" lies under a symlink leading outside the exec root (${err.message})`);
      throw err;
    }
    try {
      if (name === undefined) {
        // The exec root itself, as an output directory.
        const { root: top, children } = await c.tree(parent);
        addDirectory(out, top, children);
        return;
      }
      const st = await parent.lstatOrUndefined(name);
      if (!st) return void missing.push(out.declared);

      if (st.isFile()) {
        if (out.kind === 'directory') throw failedPrecondition(`${what} "${out.declared}" is a regular file, not a directory`);
        const digest = await c.file(parent, name);
        result.output_files.push(isExecutable(st) ? { path: out.declared, digest, is_executable: true } : { path: out.declared, digest });
      } else if (st.isDirectory()) {
        if (out.kind === 'file') throw failedPrecondition(`${what} "${out.declared}" is a directory, not a regular file`);
        const dir = await parent.child(name);
        try {
          const { root: top, children } = await c.tree(dir);
          addDirectory(out, top, children);
        } finally {
          await dir.close();
        }
      } else if (st.isSymbolicLink()) {
        const { target, kind } = await c.symlink(parent, name);
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
    } finally {
      await parent.close();
    }
  };
  const addDirectory = (out: DeclaredOutput, top: MessageInput<'Directory'>, children: Map<string, MessageInput<'Directory'>>): void => {
    const entry: MessageInput<'OutputDirectory'> = { path: out.declared };
    if (format.tree) entry.tree_digest = c.blob(encode('Tree', { root: top, children: [...children.values()] }));
    if (format.directories) {
      entry.root_directory_digest = c.blob(encode('Directory', top));
      for (const child of children.values()) c.blob(encode('Directory', child));
    }
    result.output_directories.push(entry);
  };
  try {
    for (const out of outputs) await collectOne(out);
    return await upload(c, store, result, missing);
  } finally {
    await root.close();
  }
}

async function upload(c: Collector, store: BlobStore, result: OutputResultFields, missing: string[]): Promise<CollectedOutputs> {

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
      else await withFile(c.root, u.file!, (fh) => uploadFile(store, fh, u.digest));
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
async function uploadFile(store: BlobStore, fh: FileHandle, digest: Digest): Promise<void> {
  const writer = await store.write(digest);
  if (writer.alreadyExists) return;
  try {
    for await (const chunk of fh.createReadStream({ highWaterMark: 1024 * 1024, autoClose: false, start: 0 })) await writer.append(chunk as Buffer);
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
  if (stdout.length > 0) out.stdout_digest = store.digestFunction.digestOf(stdout);
  if (stderr.length > 0) out.stderr_digest = store.digestFunction.digestOf(stderr);
  const wanted = [out.stdout_digest, out.stderr_digest].filter((d): d is Digest => d !== undefined);
  if (wanted.length === 0) return out;
  const absent = new Set((await store.findMissing(wanted)).map((d) => d.hash));
  if (out.stdout_digest && absent.has(out.stdout_digest.hash)) await putBlob(store, stdout, out.stdout_digest);
  if (out.stderr_digest && absent.has(out.stderr_digest.hash) && out.stderr_digest.hash !== out.stdout_digest?.hash) {
    await putBlob(store, stderr, out.stderr_digest);
  }
  return out;
}
