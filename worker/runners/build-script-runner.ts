// Runs Cargo build scripts (platform `cargo-build-script`) under their build-script policy, on top
// of the BwrapRunner (same non-root user, namespaces, cgroup limits and timeout).
//
// The Action (made by clients/cargo/build-script-action.ts) carries:
//   .reapi/build-script-build   the compiled build script
//   .reapi/policy.json          the policy in force (clients/cargo/policy.ts, ActionPolicy)
//   .reapi/dep/N/               directories named by DEP_* variables
//   src/                        the package's sources (CARGO_MANIFEST_DIR; the working directory)
//   out/                        OUT_DIR, the one output directory
// with argv and environment naming those paths under CANONICAL_ROOT. This runner:
// - mounts the exec root at CANONICAL_ROOT, or where the verifier asks, rewriting the paths in
//   argv and environment to match and mapping the mount back to CANONICAL_ROOT in stdout and
//   stderr (so a run under a different exec-root path answers the same);
// - runs the build script with the Rust toolchain of the release its platform names
//   (`rustc-release`, the client's rustc): Debian's /usr/bin/rustc, or a rustup toolchain mounted
//   read-only at /opt/rust with /usr/bin/rustc and rustdoc linking into it (rust-toolchains.ts);
// - makes only the policy's system directories visible (read-only); /usr/bin (and /usr/sbin)
//   hold only the allowed tools; every other program name the worker has is a stub that says which
//   crate ran which tool and which setting allows it (exit 127), never a bare ENOENT;
// - mounts everything read-only except OUT_DIR and /tmp (source dir included); no network;
// - lowers memory and process limits and the timeout to the policy's;
// - shows only what the worker's operator allows (`visiblePaths`, default /usr, what every ordinary
//   action sees): the policy inside the action can narrow that, never widen it; a policy naming a
//   path outside it is refused before anything runs;
// - keeps its own scratch (the denial text, strace's trace) in a fresh per-run directory outside
//   the exec root, and reads the policy and the trace without following symlinks: nothing the
//   action's inputs or the action itself plant there can make the worker (root) read or write
//   elsewhere;
// - traces failed file, exec and network system calls (strace, when the worker has it) and, when
//   the build script fails, says what was refused: paths outside the visible directories, writes
//   outside OUT_DIR, network connections, programs that do not exist in the sandbox.
import { chmod, lchown, lstat, mkdir, mkdtemp, readdir, readlink, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';

import { actionPolicySchema, allowHint, TOOL_GROUPS, type ActionPolicy } from '../../execution/build-script.ts';
import type { Logger } from '../../common/logger.ts';
import { ConfinedDir } from '../confined-dir.ts';
import type { RunOutcome, RunSpec, Runner } from '../../execution/runner.ts';
import type { BwrapRunner, SandboxMounts } from './bwrap-runner.ts';
import { diagnose, explainLimit, readTrace, within } from './build-script-diagnosis.ts';
import { BUILD_SCRIPT_PROPERTY, BUILD_SCRIPT_PROTOCOL, CANONICAL_ROOT, LAYOUT, RUSTC_RELEASE_PROPERTY } from '../../execution/build-script.ts';
import { OFFER_SEPARATOR } from '../../execution/platform.ts';
import { defaultToolchainDirs, discoverToolchains, exposeToolchain, type RustToolchain } from './rust-toolchains.ts';

/** Where a rustup toolchain appears inside the sandbox (one per run). */
const TOOLCHAIN_MOUNT = '/opt/rust';
/** The programs of a toolchain that stand in for the system's. */
const TOOLCHAIN_TOOLS = ['rustc', 'rustdoc'];

const HELPERS = '/run/reapi';
/** Where strace writes inside the sandbox: the run's scratch directory, bound read-write. */
const TRACE_DIR = `${HELPERS}/trace`;
const TRACE_FILE = `${TRACE_DIR}/trace`;
/** Largest policy file and trace the worker reads. */
const MAX_POLICY_BYTES = 1024 * 1024;
const TOOL_DIRS = ['/usr/bin', '/usr/sbin', '/usr/local/bin', '/usr/local/sbin', '/bin', '/sbin'];
const TOOL_DIR_SET = new Set(TOOL_DIRS);
const ETC_FILES = ['/etc/ld.so.cache', '/etc/ld.so.conf', '/etc/ld.so.conf.d'];
const TRACED = 'open,openat,creat,mkdir,mkdirat,rename,renameat,renameat2,unlink,unlinkat,link,linkat,symlink,symlinkat,truncate,execve,execveat,connect,sendto,sendmsg,bind';
/** Failed lookups that are routine (dynamic loader, libc, compilers probing), never reported. */


export interface BuildScriptRunnerOptions {
  logger?: Logger;
  /** Private directory for the helper files (the denial stub). Default: a new one under the system temp dir. */
  stateDir?: string;
  /** Trace failed system calls to explain refusals (needs strace); default true. */
  trace?: boolean;
  /**
   * Host paths build scripts may be shown at most (the worker operator's allowlist; a policy can
   * only name paths inside them, and tools must live inside them). Default ['/usr'].
   */
  visiblePaths?: string[];
  /** Rust toolchain directories offered by release; default /usr and the rustup toolchains. */
  toolchains?: string[];
}

/** Is `path` equal to or below one of `roots`? */
interface Host {
  /** Every program name the worker has, per tool directory, for the denial stubs. */
  names: Map<string, string[]>;
  /** How the host mirrors /bin, /lib...: symlink target or 'dir'. */
  rootLinks: Array<{ path: string; link?: string }>;
  sh: string;
  strace?: string;
  stub: string;
  insideTools: string[];
  /** The Rust toolchains offered, by release. */
  toolchains: RustToolchain[];
  /** The operator's allowlist, as given and with symlinks resolved. */
  visible: string[];
  visibleReal: string[];
  sandbox: { uid: number; gid: number };
}

/** Replaces every occurrence of `from` by `to` in a buffer (byte-wise: output need not be UTF-8). */
export function replaceBytes(buf: Buffer, from: string, to: string): Buffer {
  if (from === to || from === '') return buf;
  const f = Buffer.from(from);
  const t = Buffer.from(to);
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = buf.indexOf(f); i !== -1; i = buf.indexOf(f, start)) {
    parts.push(buf.subarray(start, i), t);
    start = i + f.length;
  }
  if (start === 0) return buf;
  parts.push(buf.subarray(start));
  return Buffer.concat(parts);
}

/** `value` with CANONICAL_ROOT (as a whole path component) replaced by `mount`. */
function atMount(value: string, mount: string): string {
  if (mount === CANONICAL_ROOT) return value;
  return value.replace(/(^|[:;=\s])\/build-script(?=\/|$|[:;\s])/g, (_m, before: string) => before + mount);
}

const STUB = `#!${HELPERS}/sh
# reapi: stands in for a program the build-script policy does not make available.
{ IFS= read -r crate; IFS= read -r before; IFS= read -r after; } < ${HELPERS}/denial
tool=\${0##*/}
printf 'reapi: build script of %s ran %s, which the build-script policy does not allow; %s["%s"]%s\\n' "$crate" "$tool" "$before" "$tool" "$after" >&2
exit 127
`;

export class BuildScriptRunner implements Runner {
  readonly name = 'cargo-build-script';
  private constructor(
    private readonly bwrap: BwrapRunner,
    private readonly host: Host,
    private readonly stateDir: string,
    private readonly logger: Logger | undefined,
    /** The state dir was made by create() (and is removed by dispose()). */
    private readonly ownStateDir: boolean,
  ) {}

  static async create(bwrap: BwrapRunner, opts: BuildScriptRunnerOptions = {}): Promise<BuildScriptRunner> {
    const stateDir = opts.stateDir ?? (await mkdtemp(join(tmpdir(), 'reapi-build-scripts-')));
    await mkdir(stateDir, { recursive: true, mode: 0o755 });
    await chmod(stateDir, 0o755);
    const names = new Map<string, string[]>();
    for (const dir of TOOL_DIRS) {
      const st = await lstat(dir).catch(() => undefined);
      if (!st?.isDirectory()) continue;
      names.set(dir, (await readdir(dir)).filter((n) => /^[A-Za-z0-9._+-]+$/.test(n)).sort());
    }
    const rootLinks: Host['rootLinks'] = [];
    for (const path of ['/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32']) {
      const st = await lstat(path).catch(() => undefined);
      if (!st) continue;
      rootLinks.push(st.isSymbolicLink() ? { path, link: await readlink(path) } : { path });
    }
    const sh = await realpath('/bin/sh');
    const strace = opts.trace === false ? undefined : await realpath('/usr/bin/strace').catch(() => undefined);
    await rm(join(stateDir, 'tools'), { recursive: true, force: true });
    const stub = join(stateDir, 'denied');
    await writeFile(stub, STUB, { mode: 0o755 });
    await chmod(stub, 0o755);
    const insideTools = await bwrap.insideTools();
    // No working rustc at all: build scripts asking for a release are not routed here.
    const toolchains = await Promise.all(
      (await discoverToolchains(opts.toolchains ?? (await defaultToolchainDirs()), opts.logger)).map((t) => exposeToolchain(t, stateDir, opts.logger)),
    );
    if (toolchains.length) opts.logger?.info({ toolchains: toolchains.map((t) => `${t.release} ${t.dir}`) }, 'Rust toolchains offered to build scripts');
    const visible = (opts.visiblePaths ?? ['/usr']).map((p) => (p.length > 1 ? p.replace(/\/+$/, '') : p));
    const visibleReal = await Promise.all(visible.map((p) => realpath(p).catch(() => p)));
    const { user } = await bwrap.ready();
    const host: Host = { names, rootLinks, sh, strace, stub, insideTools, toolchains, visible, visibleReal, sandbox: { uid: user.uid, gid: user.gid } };
    const runner = new BuildScriptRunner(bwrap, host, stateDir, opts.logger, opts.stateDir === undefined);
    if (strace && !(await runner.straceWorks())) {
      opts.logger?.warn('strace cannot trace inside the sandbox: build-script refusals are explained without the path details');
      runner.host.strace = undefined;
    }
    return runner;
  }

  /** What a worker with this runner offers. */
  platform(): Record<string, string> {
    const p: Record<string, string> = { [BUILD_SCRIPT_PROPERTY]: BUILD_SCRIPT_PROTOCOL };
    if (this.host.toolchains.length) p[RUSTC_RELEASE_PROPERTY] = this.host.toolchains.map((t) => t.release).join(OFFER_SEPARATOR);
    return p;
  }

  async dispose(): Promise<void> {
    if (this.ownStateDir) return rm(this.stateDir, { recursive: true, force: true });
    await rm(join(this.stateDir, 'denied'), { force: true });
    await rm(join(this.stateDir, 'tools'), { recursive: true, force: true });
  }

  /** A traced `true` in the policy sandbox: does ptrace work there? */
  private async straceWorks(): Promise<boolean> {
    const root = await mkdtemp(join(tmpdir(), 'reapi-strace-probe-'));
    const scratch = await this.scratch('probe\n\n\n');
    try {
      await chmod(root, 0o755);
      await mkdir(join(root, LAYOUT.src), { recursive: true });
      await mkdir(join(root, LAYOUT.out), { recursive: true });
      const policy: ActionPolicy = {
        version: 1,
        crate: 'probe',
        crateName: 'probe',
        policyFile: null,
        tools: [],
        readOnlyPaths: ['/usr/lib', '/usr/lib64'],
        limits: { memoryBytes: 256 * 2 ** 20, processes: 16, timeoutSeconds: 20 },
      };
      const outcome = await this.bwrap.run(
        {
          execRoot: root,
          argv: [`${HELPERS}/strace`, '-f', '-qq', '-o', TRACE_FILE, `${HELPERS}/sh`, '-c', 'exit 0'],
          env: { PATH: '/usr/bin:/bin' },
          workingDirectory: LAYOUT.src,
          timeoutMs: 20_000,
          limits: { memoryBytes: 0, maxProcesses: 0, maxFileBytes: 0 },
          maxOutputBytes: 65536,
          variation: { execRootMount: CANONICAL_ROOT },
        },
        new AbortController().signal,
        await this.mounts((await this.visibleBinds(policy)).binds, (await this.toolBinds(policy)).binds, scratch.dir),
      );
      if (outcome.exitCode !== 0) this.logger?.warn({ stderr: outcome.stderr.toString().slice(0, 500), failure: outcome.failure }, 'strace probe failed');
      return outcome.exitCode === 0;
    } finally {
      await rm(root, { recursive: true, force: true });
      await scratch.remove();
    }
  }

  /**
   * A fresh scratch directory for one run, outside every exec root: `denial` (root's, read-only
   * inside) and `trace/` (the sandbox user's, where strace writes).
   */
  private async scratch(denial: string): Promise<{ dir: string; remove(): Promise<void> }> {
    const dir = await mkdtemp(join(this.stateDir, 'run-'));
    await chmod(dir, 0o755);
    await writeFile(join(dir, 'denial'), denial, { mode: 0o644, flag: 'wx' });
    await mkdir(join(dir, 'trace'), { mode: 0o755 });
    if (process.getuid?.() === 0) await lchown(join(dir, 'trace'), this.host.sandbox.uid, this.host.sandbox.gid);
    return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
  }

  private readonly toolBindCache = new Map<string, Promise<{ binds: Map<string, string>; missing: string[] }>>();

  /** Allowed tool name -> host file to bind at /usr/bin/NAME (per tool list, computed once). */
  private toolBinds(policy: ActionPolicy): Promise<{ binds: Map<string, string>; missing: string[] }> {
    const key = policy.tools.join('\0');
    let p = this.toolBindCache.get(key);
    if (!p) {
      p = this.resolveTools(policy);
      this.toolBindCache.set(key, p);
      if (this.toolBindCache.size > 256) this.toolBindCache.delete(this.toolBindCache.keys().next().value!);
    }
    return p;
  }

  private async resolveTools(policy: ActionPolicy): Promise<{ binds: Map<string, string>; missing: string[] }> {
    const wanted = new Set<string>();
    const all = [...this.host.names.values()].flat();
    for (const t of policy.tools) {
      const group = TOOL_GROUPS[t];
      if (!group) {
        wanted.add(t);
        continue;
      }
      for (const n of group.names) wanted.add(n);
      if (group.pattern) for (const n of all) if (group.pattern.test(n)) wanted.add(n);
    }
    const binds = new Map<string, string>();
    const missing: string[] = [];
    for (const name of [...wanted].sort()) {
      let found: string | undefined;
      for (const [dir, names] of this.host.names) {
        if (!names.includes(name)) continue;
        found = await realpath(join(dir, name)).catch(() => undefined);
        // A tool outside what the operator makes visible (e.g. /usr/local/bin/x -> /opt/...) is not offered.
        if (found && !within(found, this.host.visibleReal)) found = undefined;
        if (found) break;
      }
      if (found) binds.set(name, found);
      else if (!TOOL_GROUPS[name]) missing.push(name);
    }
    return { binds, missing };
  }

  private readonly binDirCache = new Map<string, Promise<{ bin: string; sbin: string }>>();

  /**
   * Host directories mounted (read-only) as /usr/bin and /usr/sbin for one set of allowed tools:
   * an empty placeholder per allowed tool (the tool is bound onto it) and, for every other program
   * name the worker has, a symlink to the denial stub. Made once per tool set: a bind of one
   * directory costs far less than a symlink per name on every run.
   */
  private binDirs(tools: Map<string, string>, links: ReadonlyMap<string, string> = new Map()): Promise<{ bin: string; sbin: string }> {
    const inside = this.host.insideTools.filter((t) => posix.dirname(t) === '/usr/bin').map((t) => posix.basename(t));
    const allowed = [...new Set([...tools.keys(), ...inside])].filter((n) => !links.has(n)).sort();
    const linked = [...links].sort(([a], [b]) => (a < b ? -1 : 1));
    const key = createHash('sha256').update(allowed.join('\0')).update('\n').update(linked.flat().join('\0')).digest('hex').slice(0, 20);
    let p = this.binDirCache.get(key);
    if (!p) {
      p = (async () => {
        const base = join(this.stateDir, 'tools', key);
        await rm(base, { recursive: true, force: true });
        const dirs = { bin: join(base, 'bin'), sbin: join(base, 'sbin') };
        await mkdir(dirs.bin, { recursive: true, mode: 0o755 });
        await mkdir(dirs.sbin, { recursive: true, mode: 0o755 });
        for (const d of [base, dirs.bin, dirs.sbin]) await chmod(d, 0o755);
        const placed = new Set([...allowed, ...links.keys()]);
        for (const name of allowed) await writeFile(join(dirs.bin, name), '', { mode: 0o755 });
        // A toolchain's programs are links into its mount: run through the link, rustc finds its
        // libraries and sysroot next to the real file.
        for (const [name, target] of linked) await symlink(target, join(dirs.bin, name));
        for (const [dir, names] of this.host.names) {
          const into = dir.endsWith('sbin') ? dirs.sbin : dirs.bin;
          for (const n of names) {
            if (placed.has(n)) continue;
            placed.add(n);
            await symlink(`${HELPERS}/denied`, join(into, n));
          }
        }
        return dirs;
      })();
      p.catch(() => this.binDirCache.delete(key));
      this.binDirCache.set(key, p);
    }
    return p;
  }

  /**
   * The policy's read-only paths as binds (host path with symlinks resolved -> path inside), each
   * checked against the operator's allowlist once, as given and resolved: the resolved path is
   * what gets bound, so a symlink swapped in later cannot widen it. `refused` names the first path
   * outside the allowlist. Paths missing on this host are left out; tool directories are never
   * bound whole (`tools` decides what is in them).
   */
  private async visibleBinds(policy: ActionPolicy): Promise<{ binds: Array<{ real: string; path: string }>; refused?: string }> {
    const binds: Array<{ real: string; path: string }> = [];
    for (const path of policy.readOnlyPaths) {
      const real = await realpath(path).catch(() => undefined);
      if (!within(path, this.host.visible) || (real !== undefined && !within(real, this.host.visibleReal))) {
        return { binds, refused: real !== undefined && real !== path ? `${path} (${real})` : path };
      }
      if (real !== undefined && !TOOL_DIR_SET.has(path)) binds.push({ real, path });
    }
    return { binds };
  }

  /** The sandbox filesystem for one policy. */
  private async mounts(visible: Array<{ real: string; path: string }>, tools: Map<string, string>, scratch: string, toolchain?: RustToolchain): Promise<SandboxMounts> {
    const h = this.host;
    const sys: string[] = ['--perms', '0755', '--dir', '/etc'];
    for (const f of ETC_FILES) sys.push('--ro-bind-try', f, f);
    for (const { real, path } of visible) sys.push('--ro-bind', real, path);
    for (const { path, link } of h.rootLinks) {
      if (path === '/bin' || path === '/sbin') sys.push('--symlink', `usr${path}`, path);
      else if (link !== undefined) sys.push('--symlink', link, path);
      else sys.push('--ro-bind', path, path);
    }
    const links = new Map<string, string>();
    if (toolchain && !toolchain.system) {
      sys.push('--ro-bind', toolchain.dir, TOOLCHAIN_MOUNT);
      for (const name of TOOLCHAIN_TOOLS) {
        if (!tools.has(name)) continue;
        links.set(name, `${TOOLCHAIN_MOUNT}/bin/${name}`);
        tools = new Map([...tools].filter(([n]) => n !== name));
      }
    }
    const dirs = await this.binDirs(tools, links);
    sys.push('--ro-bind', dirs.bin, '/usr/bin', '--ro-bind', dirs.sbin, '/usr/sbin', '--dir', HELPERS);
    sys.push('--ro-bind', h.sh, `${HELPERS}/sh`, '--ro-bind', h.stub, `${HELPERS}/denied`);
    sys.push('--ro-bind', join(scratch, 'denial'), `${HELPERS}/denial`, '--bind', join(scratch, 'trace'), TRACE_DIR);
    if (h.strace) sys.push('--ro-bind', h.strace, `${HELPERS}/strace`);
    const placed = new Set<string>();
    for (const [name, file] of tools) {
      sys.push('--ro-bind', file, `/usr/bin/${name}`);
      placed.add(`/usr/bin/${name}`);
    }
    for (const t of h.insideTools) {
      if (placed.has(t)) continue;
      sys.push('--ro-bind', t, t);
      placed.add(t);
    }
    return {
      system: sys,
      afterExecRoot: (root, mount) => [
        '--ro-bind',
        root,
        mount,
        '--bind',
        join(root, LAYOUT.out),
        posix.join(mount, LAYOUT.out),
        '--remount-ro',
        '/',
      ],
    };
  }

  async run(spec: RunSpec, signal: AbortSignal): Promise<RunOutcome> {
    const startedAt = new Date();
    const refuse = (message: string): RunOutcome => ({
      exitCode: 2,
      stdout: Buffer.alloc(0),
      stderr: Buffer.from(`reapi: ${message}\n`),
      truncated: false,
      startedAt,
      completedAt: new Date(),
      usage: { userCpuMs: 0, systemCpuMs: 0, maxRssBytes: 0 },
    });
    let policy: ActionPolicy;
    const root = await ConfinedDir.openRoot(spec.execRoot);
    try {
      // Never through a symlink anywhere on its path.
      const text = (await root.readFileAt(LAYOUT.policy, MAX_POLICY_BYTES)).toString('utf8');
      const parsed = actionPolicySchema.safeParse(JSON.parse(text));
      if (!parsed.success) return refuse(`invalid ${LAYOUT.policy}: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
      policy = parsed.data;
      for (const dir of [LAYOUT.src, LAYOUT.out]) {
        const st = await root.lstatOrUndefined(dir);
        if (!st?.isDirectory()) return refuse(`a ${BUILD_SCRIPT_PROPERTY} action needs the directory ${dir}/ in its input root`);
      }
    } catch (e) {
      return refuse(`a ${BUILD_SCRIPT_PROPERTY} action needs ${LAYOUT.policy} in its input root, a regular file of JSON: ${(e as Error).message}`);
    } finally {
      await root.close();
    }
    const visible = await this.visibleBinds(policy);
    if (visible.refused !== undefined) {
      return refuse(
        `build script of ${policy.crate}: its policy makes ${visible.refused} visible, which this worker never shows build scripts ` +
          `(the worker's worker.buildScripts.visiblePaths: ${this.host.visible.join(', ')}); a policy can narrow what build scripts see, not widen it: ask the worker's operator`,
      );
    }

    const mount = spec.variation?.execRootMount ?? CANONICAL_ROOT;
    const hint = allowHint(policy, 'tools', '\u0000').split('\u0000');
    const scratch = await this.scratch(`${policy.crate}\n${hint[0]!.replace(/\n/g, ' ')}\n${(hint[1] ?? '').replace(/\n/g, ' ')}\n`);
    try {
      return await this.runIn(spec, signal, policy, visible.binds, mount, scratch.dir);
    } finally {
      await scratch.remove();
    }
  }

  private async runIn(
    spec: RunSpec,
    signal: AbortSignal,
    policy: ActionPolicy,
    visible: Array<{ real: string; path: string }>,
    mount: string,
    scratch: string,
  ): Promise<RunOutcome> {
    const { binds } = await this.toolBinds(policy);
    const release = spec.platform?.[RUSTC_RELEASE_PROPERTY];
    const toolchain = release === undefined ? this.host.toolchains.find((t) => t.system) : this.host.toolchains.find((t) => t.release === release);
    if (release !== undefined && !toolchain) {
      throw new Error(`this worker has no Rust toolchain of release ${release} (it offers ${this.host.toolchains.map((t) => t.release).join(', ') || 'none'})`);
    }
    // The policy allows rustc: the toolchain's stands in for the system's (which may be absent).
    const rustAllowed = policy.tools.includes('rustc');
    const tools = toolchain && !toolchain.system && rustAllowed ? new Map([...binds, ...TOOLCHAIN_TOOLS.map((n) => [n, `${toolchain.dir}/bin/${n}`] as const)]) : binds;

    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(spec.env)) env[k] = atMount(v, mount);
    const argv = spec.argv.map((a) => atMount(a, mount));
    const traced = this.host.strace ? [`${HELPERS}/strace`, '-f', '-qq', '-Z', '--seccomp-bpf', '-s', '4096', '-o', TRACE_FILE, '-e', `trace=${TRACED}`, '--'] : [];
    const min = (a: number, b: number) => (a > 0 ? Math.min(a, b) : b);
    const limits = {
      ...spec.limits,
      memoryBytes: min(spec.limits.memoryBytes, policy.limits.memoryBytes),
      maxProcesses: min(spec.limits.maxProcesses, policy.limits.processes),
    };
    const timeoutMs = min(spec.timeoutMs, policy.limits.timeoutSeconds * 1000);
    const outcome = await this.bwrap.run(
      {
        ...spec,
        argv: [...traced, ...argv],
        env,
        workingDirectory: LAYOUT.src,
        limits,
        timeoutMs,
        variation: { ...spec.variation, execRootMount: mount },
      },
      signal,
      await this.mounts(visible, tools, scratch, toolchain),
    );
    outcome.stdout = replaceBytes(outcome.stdout, mount, CANONICAL_ROOT);
    outcome.stderr = replaceBytes(outcome.stderr, mount, CANONICAL_ROOT);

    if (outcome.failure) outcome.failure = explainLimit(outcome.failure, policy);
    if (outcome.exitCode !== 0 && outcome.failure?.kind !== 'sandbox-error' && outcome.failure?.kind !== 'cancelled') {
      const lines = this.host.strace ? diagnose(await readTrace(scratch), policy, mount, binds, { rootLinks: this.host.rootLinks, visible: this.host.visible, helpers: HELPERS, toolDirs: TOOL_DIR_SET }) : [];
      const text = lines.length
        ? lines.map((l) => `reapi: build script of ${policy.crate} was refused: ${l}\n`).join('')
        : outcome.failure || outcome.stderr.includes(`reapi: build script of ${policy.crate}`)
          ? ''
          : `reapi: build script of ${policy.crate} exited with ${outcome.exitCode}\n`;
      if (text) outcome.stderr = Buffer.concat([outcome.stderr, Buffer.from(outcome.stderr.length && !outcome.stderr.toString().endsWith('\n') ? `\n${text}` : text)]);
    }
    return outcome;
  }
}
