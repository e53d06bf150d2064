// Checks on what clients send the worker: Directory messages of an input root (names, canonical
// order, symlink targets) and the output paths of a Command. Every rejection is INVALID_ARGUMENT
// naming the Directory digest (or Command field) and the offending entry.
//
// Symlink targets are checked lexically ('..' counted against the depth of the Directory in the
// input root). REAPI does not canonicalise '..' through other symlinks, so a chain of symlinks can
// still point outside the root at run time; the materializer never follows input symlinks and the
// output collector checks real paths, so this check is a policy, not the only line of defence.
import { SHA256, type DigestFunction } from '../common/digest-function.ts';
import { digestKey, validateDigest, type Digest } from '../common/digest.ts';
import { invalidArgument } from '../common/errors.ts';
import type { MessageInput, MessageOutput } from '../protos/index.ts';

export type Directory = MessageOutput<'Directory'>;

/** Why `name` is not a valid single path segment, or undefined when it is. */
export function badNameReason(name: string): string | undefined {
  if (name === '') return 'is empty';
  if (name === '.' || name === '..') return `is "${name}"`;
  if (name.includes('/')) return 'contains "/"';
  if (name.includes('\0')) return 'contains a NUL byte';
  return undefined;
}

/** Compare by UTF-8 bytes (= code points), the order REAPI requires; JS `<` compares UTF-16 units. */
export function compareNames(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/**
 * Why a symlink `target` found in a directory `depth` levels below the root (root = 0) is not
 * allowed, or undefined when it stays inside the root.
 */
export function badSymlinkTargetReason(target: string, depth: number): string | undefined {
  if (target === '') return 'has an empty target';
  if (target.includes('\0')) return 'has a target containing a NUL byte';
  if (target.startsWith('/')) return `has an absolute target "${target}" (absolute symlinks are not allowed)`;
  let d = depth;
  for (const part of target.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      d -= 1;
      if (d < 0) return `has target "${target}", which escapes the input root`;
    } else {
      d += 1;
    }
  }
  return undefined;
}

/**
 * Validate one Directory of an input root found `depth` levels below the root. With breadth-first
 * traversal the first depth a digest is met at is its smallest, and a symlink that stays inside
 * the root there stays inside at every greater depth, so each digest needs checking once.
 */
export function validateDirectory(dir: Directory, digest: Digest, depth: number, fn: DigestFunction = SHA256): void {
  const where = `Directory ${digestKey(digest)}`;
  const seen = new Map<string, string>();
  const check = (kind: 'file' | 'directory' | 'symlink', names: string[]): void => {
    let prev: string | undefined;
    for (const name of names) {
      const bad = badNameReason(name);
      if (bad) throw invalidArgument(`${where}: ${kind} name ${JSON.stringify(name)} ${bad}`);
      const other = seen.get(name);
      if (other !== undefined) {
        throw invalidArgument(`${where}: ${kind} "${name}" has the same name as a ${other} in the same directory`);
      }
      seen.set(name, kind);
      if (prev !== undefined && compareNames(prev, name) >= 0) {
        throw invalidArgument(`${where}: ${kind} "${name}" is out of order (after "${prev}"; entries must be sorted by name)`);
      }
      prev = name;
    }
  };
  check('file', dir.files.map((f) => f.name));
  check('directory', dir.directories.map((d) => d.name));
  check('symlink', dir.symlinks.map((s) => s.name));
  for (const f of dir.files) validateDigest(f.digest, `${where}: file "${f.name}"`, fn);
  for (const d of dir.directories) validateDigest(d.digest, `${where}: directory "${d.name}"`, fn);
  for (const s of dir.symlinks) {
    const bad = badSymlinkTargetReason(s.target, depth);
    if (bad) throw invalidArgument(`${where}: symlink "${s.name}" ${bad}`);
  }
}

type CommandPaths = Pick<
  MessageInput<'Command'>,
  'output_files' | 'output_directories' | 'output_paths' | 'working_directory'
>;

export interface DeclaredOutput {
  /** The path exactly as the Command declares it (relative to the working directory). */
  declared: string;
  /** Normalised path relative to the exec root; '' is the exec root itself. */
  path: string;
  /** v2.0 clients say which kind they expect; v2.1 `output_paths` accept either. */
  kind: 'file' | 'directory' | 'any';
}

/** Split a relative path and resolve '.'/'..' lexically below `base` (segments); throws on escape. */
function resolveBelow(base: string[], path: string, what: string): string[] {
  if (path.includes('\0')) throw invalidArgument(`${what} ${JSON.stringify(path)} contains a NUL byte`);
  if (path.startsWith('/')) throw invalidArgument(`${what} "${path}" is absolute; it must be relative`);
  const out = [...base];
  for (const part of path.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (out.length === 0) throw invalidArgument(`${what} "${path}" escapes the input root`);
      out.pop();
    } else {
      out.push(part);
    }
  }
  return out;
}

/**
 * The outputs a Command declares: `output_paths` when set (v2.1+), else `output_files` and
 * `output_directories` (v2.0). Paths are relative to `working_directory`, which is relative to
 * the input root. INVALID_ARGUMENT for absolute paths, paths escaping the root, NUL bytes, an
 * empty output file path, or one path declared both as a file and as a directory.
 */
export function declaredOutputs(command: CommandPaths): DeclaredOutput[] {
  const wd = resolveBelow([], command.working_directory ?? '', 'working_directory');
  const out: DeclaredOutput[] = [];
  const add = (declared: string, kind: DeclaredOutput['kind'], field: string): void => {
    const parts = resolveBelow(wd, declared, field);
    if (kind !== 'directory' && parts.length === 0) {
      throw invalidArgument(`${field} "${declared}" names the input root itself, which cannot be a file`);
    }
    out.push({ declared, path: parts.join('/'), kind });
  };
  const paths = command.output_paths ?? [];
  if (paths.length > 0) {
    for (const p of paths) add(p, 'any', 'output_paths');
  } else {
    for (const p of command.output_files ?? []) add(p, 'file', 'output_files');
    for (const p of command.output_directories ?? []) add(p, 'directory', 'output_directories');
  }
  const kinds = new Map<string, DeclaredOutput['kind']>();
  for (const o of out) {
    const k = kinds.get(o.path);
    if (k !== undefined && k !== o.kind) {
      throw invalidArgument(`output "${o.declared}" is declared both as an output file and as an output directory`);
    }
    kinds.set(o.path, o.kind);
  }
  return out;
}
