// What a failed build script is told: which limit ended it and the policy setting that raises
// it, and what its trace of failed system calls says was refused (paths outside the visible
// directories, writes outside OUT_DIR, network connections, programs the sandbox does not have).
import { basename, posix } from 'node:path';
import { allowHint, CANONICAL_ROOT, LAYOUT, type ActionPolicy } from '../../execution/build-script.ts';
import type { RunFailure } from '../../execution/runner.ts';
import { ConfinedDir } from '../confined-dir.ts';

const MAX_TRACE_BYTES = 32 * 1024 * 1024;
/** Paths whose failed accesses say nothing (the loader's probes, locale and time zone lookups). */
const NOISE = [/^\/etc\/ld\.so\./, /^\/etc\/(localtime|gai\.conf|host\.conf|nsswitch\.conf|passwd|group|hosts)$/, /^\/(proc|sys|dev)\//, /^\/usr\/local\//, /^\/usr\/lib/, /^\/usr\/share\/(locale|zoneinfo)/, /^\/tmp\//, /^\/run\/reapi\//];

/** What the diagnosis needs to know of the worker. */
export interface TraceHost {
  /** How the host mirrors /bin, /lib...: symlink target or 'dir'. */
  rootLinks: Array<{ path: string; link?: string }>;
  /** The operator's allowlist (worker.buildScripts.visiblePaths). */
  visible: string[];
  /** Where the sandbox keeps its helpers (always visible). */
  helpers: string;
  /** Directories programs are looked up in. */
  toolDirs: ReadonlySet<string>;
}

export function within(path: string, roots: readonly string[]): boolean {
  return roots.some((r) => r === '/' || path === r || path.startsWith(`${r}/`));
}

/** A limit's failure, said as the build script's, with the policy setting that raises it. */
export function explainLimit(f: RunFailure, policy: ActionPolicy): RunFailure {
  const who = `build script of ${policy.crate}`;
  switch (f.kind) {
    case 'memory-limit':
      return { ...f, message: `${who}: ${f.message}; ${allowHint(policy, 'limits', `{"memory": "${Math.ceil((policy.limits.memoryBytes * 2) / 2 ** 20)}MiB"}`).replace('allow it', 'raise it')}` };
    case 'process-limit':
      return { ...f, message: `${who}: ${f.message} (too many processes: a fork bomb?); ${allowHint(policy, 'limits', `{"processes": ${policy.limits.processes * 2}}`).replace('allow it', 'raise it')}` };
    case 'timeout':
      return { ...f, message: `${who}: ${f.message}; ${allowHint(policy, 'limits', `{"timeoutSeconds": ${policy.limits.timeoutSeconds * 2}}`).replace('allow it', 'raise it')}` };
    case 'file-size-limit':
      return { ...f, message: `${who}: ${f.message}` };
    default:
      return f;
  }
}

/** What the failed system calls in the trace say was refused (deduplicated, in order, at most 8). */
export function diagnose(text: string, policy: ActionPolicy, mount: string, tools: Map<string, string>, host: TraceHost): string[] {
  const visible = [...policy.readOnlyPaths, mount, '/tmp', '/proc', '/dev', host.helpers];
  // Paths through the root symlinks (/lib -> usr/lib) are the paths they point to.
  const links = host.rootLinks.filter((l) => l.link !== undefined).map((l) => ({ from: l.path, to: posix.resolve('/', l.link!) }));
  const real = (p: string) => {
    const n = posix.normalize(p);
    const l = links.find((x) => n === x.from || n.startsWith(`${x.from}/`));
    return l ? l.to + n.slice(l.from.length) : n;
  };
  const isVisible = (p: string) => visible.some((v) => p === v || p.startsWith(v === '/' ? '/' : `${v}/`));
  const canonical = (p: string) => (p === mount || p.startsWith(`${mount}/`) ? CANONICAL_ROOT + p.slice(mount.length) : p);
  const out: string[] = [];
  const add = (s: string) => {
    if (!out.includes(s)) out.push(s);
  };
  const missingTools = new Set<string>();
  for (const line of text.split('\n')) {
    const m = /^\d+\s+(\w+)\((.*)\)\s+=\s+-1\s+(E[A-Z]+)/.exec(line);
    if (!m) continue;
    const call = m[1]!;
    const args = m[2]!;
    const errno = m[3]!;
    if (call === 'connect' || call === 'sendto' || call === 'sendmsg' || call === 'bind') {
      const addr = /sin6?_port=htons\((\d+)\).*?(?:inet_addr|inet_pton\(AF_INET6,)\s*\(?"([^"]+)"/.exec(args);
      // A non-blocking connect fails later (EINPROGRESS here): the errno says nothing then.
      if (addr) add(`it opened a network connection to ${addr[2]}:${addr[1]}${errno === 'EINPROGRESS' ? '' : ` (${errno})`}: build scripts have no network access, and no setting allows it`);
      continue;
    }
    const raw = /"((?:[^"\\]|\\.)*)"/.exec(args)?.[1];
    if (!raw) continue;
    // Relative paths: relative to the working directory (the source directory) in all likelihood.
    if (!raw.startsWith('/') && errno !== 'EROFS') continue;
    const path = real(raw.startsWith('/') ? raw : posix.join(mount, LAYOUT.src, raw));
    if (call === 'execve' || call === 'execveat') {
      if (errno === 'ENOENT' && host.toolDirs.has(posix.dirname(path))) {
        const tool = basename(path);
        if (!tools.has(tool) && !missingTools.has(tool)) {
          missingTools.add(tool);
          add(`it ran ${tool}, which is neither allowed by the build-script policy nor installed on this worker; ${allowHint(policy, 'tools', `["${tool}"]`)} (and install it on the workers)`);
        }
      }
      continue;
    }
    if (path === '/etc/resolv.conf') {
      add('it looked up a host name (/etc/resolv.conf): build scripts have no network access, and no setting allows it');
      continue;
    }
    if (errno === 'EROFS' || (errno === 'EACCES' && isVisible(path))) {
      const c = canonical(path);
      const where = c.startsWith(`${CANONICAL_ROOT}/${LAYOUT.src}/`) || c === `${CANONICAL_ROOT}/${LAYOUT.src}`
        ? `its source directory (${c.slice(CANONICAL_ROOT.length + LAYOUT.src.length + 2) || '.'})`
        : c;
      add(`it wrote to ${where} (${call}: ${errno}): build scripts may write only to OUT_DIR and temporary files, and no setting allows more`);
      continue;
    }
    if ((errno === 'ENOENT' || errno === 'EACCES' || errno === 'EPERM') && !isVisible(path) && !NOISE.some((r) => r.test(path))) {
      const top = path.split('/').slice(0, 3).join('/') || path;
      const operator = within(top, host.visible) ? '' : ` (and the workers' operator must add it to worker.buildScripts.visiblePaths, now ${host.visible.join(', ')})`;
      add(`it accessed ${path} (${errno}), which is outside the directories visible to build scripts; ${allowHint(policy, 'readOnlyPaths', `["${top}"]`)}${operator}`);
    }
    if (out.length >= 8) break;
  }
  return out;
}

/** strace's output (written by the sandbox user, so read without following links); '' when there is none. */
export async function readTrace(scratch: string): Promise<string> {
  const dir = await ConfinedDir.openRoot(scratch);
  try {
    return (await dir.readFileAt(['trace', 'trace'], MAX_TRACE_BYTES)).toString('utf8');
  } catch {
    return '';
  } finally {
    await dir.close();
  }
}
