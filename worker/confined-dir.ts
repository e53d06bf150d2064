// File operations inside a directory tree that an action controls, for a worker that runs as root.
//
// Every path is walked one component at a time from an open directory handle: each component is
// opened with O_NOFOLLOW (through /proc/self/fd/N/NAME, Node's stand-in for openat), so no symlink
// is ever followed by the kernel, and a rename of an ancestor while we walk cannot move us out of
// the tree. Where REAPI lets a symlink of the tree lead somewhere (an output's parent, an output
// symlink's kind), the walk follows it itself: its target is spliced into the remaining path, '..'
// pops a directory the walk holds, and any target that is absolute or climbs above the root is
// refused with EscapeError. Nothing here follows a link out of the tree, whatever it is chained to.
import { constants, type Stats } from 'node:fs';
import { lstat, mkdir, open, readdir, readlink, unlink, type FileHandle } from 'node:fs/promises';

const { O_RDONLY, O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW, O_DIRECTORY } = constants;
/** As the kernel's own limit on symlinks followed in one lookup. */
const MAX_LINKS = 40;

/** A path of the tree leads (through symlinks) outside it. */
export class EscapeError extends Error {
  override name = 'EscapeError';
  constructor(
    message: string,
    /** The symlink (path from the root) whose target led out, when a symlink did. */
    readonly link?: string,
  ) {
    super(message);
  }
}

/** A component of the path is missing, or is not a directory where one is needed. */
export class NotFoundError extends Error {
  override name = 'NotFoundError';
  constructor(
    message: string,
    readonly code: 'ENOENT' | 'ENOTDIR',
  ) {
    super(message);
  }
}

export type EntryKind = 'file' | 'directory' | 'symlink' | 'other';

export function kindOf(st: Stats): EntryKind {
  return st.isFile() ? 'file' : st.isDirectory() ? 'directory' : st.isSymbolicLink() ? 'symlink' : 'other';
}

/** Splits a relative path into components ('' and '.' dropped; '..' kept for the walk). */
export function components(path: string): string[] {
  return path.split('/').filter((c) => c !== '' && c !== '.');
}

function errno(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException).code;
}

/** An open directory of the tree; close it when done (the root's close() closes only the root). */
export class ConfinedDir {
  private constructor(
    private readonly handle: FileHandle,
    /** Physical components from the root (no symlinks, no '..'). */
    readonly components: readonly string[],
  ) {}

  /** Opens `path` (a directory the worker made, never a symlink) as the root of a tree. */
  static async openRoot(path: string): Promise<ConfinedDir> {
    return new ConfinedDir(await open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW), []);
  }

  /** Path the kernel resolves to entry `name` of this directory without following `name`. */
  at(name: string): string {
    if (name === '' || name === '.' || name === '..' || name.includes('/')) throw new Error(`not a single path component: ${JSON.stringify(name)}`);
    return `/proc/self/fd/${this.handle.fd}/${name}`;
  }

  get relPath(): string {
    return this.components.join('/');
  }

  close(): Promise<void> {
    return this.handle.close().catch(() => {});
  }

  lstat(name: string): Promise<Stats> {
    return lstat(this.at(name));
  }

  /** lstat, or undefined when the entry does not exist. */
  async lstatOrUndefined(name: string): Promise<Stats | undefined> {
    try {
      return await this.lstat(name);
    } catch (err) {
      if (errno(err) === 'ENOENT' || errno(err) === 'ENOTDIR') return undefined;
      throw err;
    }
  }

  readlink(name: string): Promise<string> {
    return readlink(this.at(name));
  }

  async list(): Promise<string[]> {
    return readdir(`/proc/self/fd/${this.handle.fd}`);
  }

  /** The subdirectory `name` (ELOOP/ENOTDIR/ENOENT as the kernel says when it is not one). */
  async child(name: string): Promise<ConfinedDir> {
    return new ConfinedDir(await open(this.at(name), O_RDONLY | O_DIRECTORY | O_NOFOLLOW), [...this.components, name]);
  }

  /** Opens regular file `name` for reading; refuses symlinks, directories, FIFOs and devices. */
  async openFile(name: string): Promise<FileHandle> {
    // O_NONBLOCK: a FIFO planted where a file was expected must not block the worker in open().
    const fh = await open(this.at(name), O_RDONLY | O_NOFOLLOW | constants.O_NONBLOCK);
    const st = await fh.stat();
    if (!st.isFile()) {
      await fh.close();
      throw new NotFoundError(`${this.describe(name)} is not a regular file`, 'ENOENT');
    }
    return fh;
  }

  /** Reads regular file `name`, refusing one larger than `maxBytes`. */
  async readFile(name: string, maxBytes: number): Promise<Buffer> {
    const fh = await this.openFile(name);
    try {
      const { size } = await fh.stat();
      if (size > maxBytes) throw new Error(`${this.describe(name)} is larger than ${maxBytes} bytes`);
      const buf = Buffer.alloc(size);
      let off = 0;
      while (off < size) {
        const { bytesRead } = await fh.read(buf, off, size - off, off);
        if (bytesRead === 0) break;
        off += bytesRead;
      }
      return buf.subarray(0, off);
    } finally {
      await fh.close();
    }
  }

  /**
   * Writes a new regular file `name` with `data`. Whatever was there (an input file hard-linked
   * from the content cache, a symlink) is unlinked first, never written through: the file is
   * created with O_EXCL, so a link planted in between makes the write fail rather than follow it.
   */
  async writeFile(name: string, data: Uint8Array, mode = 0o644): Promise<void> {
    const st = await this.lstatOrUndefined(name);
    if (st?.isDirectory()) throw new Error(`${this.describe(name)} is a directory`);
    if (st) await unlink(this.at(name));
    const fh = await open(this.at(name), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode);
    try {
      await fh.writeFile(data);
    } finally {
      await fh.close();
    }
  }

  describe(name?: string): string {
    const rel = name === undefined ? this.relPath : [...this.components, name].join('/');
    return `"${rel || '.'}"`;
  }

  /**
   * The directory at `path` (relative to this one), walked without letting the kernel follow any
   * symlink. `follow`: symlinks met on the way are followed by the walk itself, as long as they
   * stay inside the tree (EscapeError otherwise); else a symlink is NotFoundError('ENOTDIR').
   * `create`: missing directories are made (mode 0755). The caller closes the result.
   */
  async openDir(path: string | readonly string[], opts: { follow?: boolean; create?: boolean } = {}): Promise<ConfinedDir> {
    const stack: ConfinedDir[] = [this];
    const rest = typeof path === 'string' ? components(path) : [...path];
    let links = 0;
    let lastLink: string | undefined;
    try {
      while (rest.length > 0) {
        const name = rest.shift()!;
        if (name === '.' || name === '') continue;
        if (name === '..') {
          if (stack.length === 1) {
            throw new EscapeError(lastLink ? `symlink "${lastLink}" leads above the root` : `the path climbs above ${this.describe()}`, lastLink);
          }
          await stack.pop()!.close();
          continue;
        }
        const top = stack[stack.length - 1]!;
        try {
          stack.push(await top.child(name));
          continue;
        } catch (err) {
          const code = errno(err);
          if (code === 'ENOENT' && opts.create) {
            await mkdir(top.at(name), { mode: 0o755 }).catch((e: unknown) => {
              if (errno(e) !== 'EEXIST') throw e;
            });
            rest.unshift(name);
            continue;
          }
          if (code === 'ENOENT') throw new NotFoundError(`${top.describe(name)} does not exist`, 'ENOENT');
          if (code !== 'ELOOP' && code !== 'ENOTDIR') throw err;
        }
        const st = await top.lstat(name);
        if (!st.isSymbolicLink() || !opts.follow) {
          throw new NotFoundError(`${top.describe(name)} is a ${kindOf(st)}, not a directory`, 'ENOTDIR');
        }
        const target = await top.readlink(name);
        lastLink = [...top.components, name].join('/');
        if (target.startsWith('/')) throw new EscapeError(`symlink "${lastLink}" has the absolute target "${target}"`, lastLink);
        if (++links > MAX_LINKS) throw new NotFoundError(`${top.describe(name)}: too many levels of symlinks`, 'ENOENT');
        rest.unshift(...components(target));
      }
      const found = stack.pop()!;
      return found === this ? await this.reopen() : found;
    } finally {
      for (const d of stack) if (d !== this) await d.close();
    }
  }

  private async reopen(): Promise<ConfinedDir> {
    return new ConfinedDir(await open(`/proc/self/fd/${this.handle.fd}`, O_RDONLY | O_DIRECTORY), this.components);
  }

  /**
   * Opens the directory holding the last component of `path` (walked as by openDir) and runs
   * `fn` on it and that component's name; the directory is closed afterwards.
   */
  async atPath<T>(path: string | readonly string[], fn: (dir: ConfinedDir, name: string) => Promise<T>, opts: { follow?: boolean } = {}): Promise<T> {
    const parts = typeof path === 'string' ? components(path) : [...path];
    const name = parts.pop();
    if (name === undefined || name === '..') throw new NotFoundError(`"${parts.join('/')}" names a directory, not an entry in one`, 'ENOENT');
    const dir = await this.openDir(parts, opts);
    try {
      return await fn(dir, name);
    } finally {
      await dir.close();
    }
  }

  /** Reads regular file `path` (no symlink followed anywhere on it), refusing one larger than `maxBytes`. */
  readFileAt(path: string | readonly string[], maxBytes: number): Promise<Buffer> {
    return this.atPath(path, (dir, name) => dir.readFile(name, maxBytes));
  }

  /**
   * Where `path` finally leads once every symlink on the way (the last component's included) is
   * followed inside the tree: the directory holding the entry, its name and kind (no name: the
   * path is that directory itself), or undefined when it dangles. EscapeError when it leads
   * outside. Call it on the root: `path` is relative to it. The caller closes `dir`.
   */
  async resolve(path: string | readonly string[]): Promise<{ dir: ConfinedDir; name?: string; kind: Exclude<EntryKind, 'symlink'> } | undefined> {
    const rest = typeof path === 'string' ? components(path) : [...path];
    const dangling = (err: unknown): undefined => {
      if (err instanceof NotFoundError) return undefined;
      throw err;
    };
    for (let links = 0; links <= MAX_LINKS; links++) {
      const name = rest.pop();
      if (name === undefined || name === '..') {
        // A directory, if the walk to it stays inside (it throws EscapeError otherwise).
        const dir = await this.openDir(name === undefined ? rest : [...rest, name], { follow: true }).catch(dangling);
        return dir && { dir, kind: 'directory' };
      }
      const dir = await this.openDir(rest, { follow: true }).catch(dangling);
      if (!dir) return undefined;
      let found = false;
      try {
        const st = await dir.lstatOrUndefined(name);
        if (!st) return undefined;
        const kind = kindOf(st);
        if (kind !== 'symlink') {
          found = true;
          return { dir, name, kind };
        }
        const target = await dir.readlink(name);
        const link = [...dir.components, name].join('/');
        if (target.startsWith('/')) throw new EscapeError(`symlink "${link}" has the absolute target "${target}"`, link);
        rest.splice(0, rest.length, ...dir.components, ...components(target));
      } finally {
        if (!found) await dir.close();
      }
    }
    return undefined;
  }

  /** What `path` finally is (see resolve), or undefined when it dangles. */
  async resolveKind(path: string | readonly string[]): Promise<Exclude<EntryKind, 'symlink'> | undefined> {
    const found = await this.resolve(path);
    await found?.dir.close();
    return found?.kind;
  }
}
