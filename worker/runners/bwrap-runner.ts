// Runs one action under bubblewrap as a dedicated non-root user, in its own cgroup.
//
// Process chain for one run (every step but bwrap's own forks is an exec, so node's child pid is
// the same process throughout and bwrap's parent is the worker, which --die-with-parent relies on):
//
//   sh -c 'echo $$ >cgroup.procs...; umask U; exec "$@"'   root: joins the run's cgroups first
//     [prlimit --fsize=N --]                                root: RLIMIT_FSIZE, inherited
//     [taskset -c LIST]                                     CPU affinity, inherited
//     setpriv --reuid --regid --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs
//       bwrap --unshare-all ... --json-status-fd 3 --       unprivileged: user namespace, no caps
//         env -u PWD -- [setarch -R] ARGV...                inside: drop the PWD bwrap exports
//
// Cgroup placement: the wrapper shell writes its own pid into cgroup.procs before it execs
// anything, so bwrap and every descendant are born inside the cgroup. Writing the pid from node
// after spawn() would race: spawn() returns after exec, by which time bwrap may already have
// forked the sandbox outside the cgroup (and outside its limits and cgroup.kill).

import { spawn } from 'node:child_process';
import { lstat, readFile, readlink } from 'node:fs/promises';
import { join, posix } from 'node:path';

import { failedRun, type RunFailure, type RunOutcome, type RunSpec, type Runner, type Variation } from '../../execution/runner.ts';
import { chownDirs } from './exec-root-ownership.ts';
import { type CgroupManager, type CgroupMode, type RunCgroup, detectCgroups } from './cgroup.ts';
import { CappedOutput } from './output-buffer.ts';
import { accounting, checkSpec, fileSizeFailure, isFailure, shQuote, signalNumber, Watchdog } from './supervision.ts';
import { messageOf } from '../../common/errors.ts';
import { EtcFiles, type SandboxUser, ensureSandboxUser } from './sandbox-user.ts';

export interface BwrapRunnerOptions {
  /** Host account actions run as (default 'reapi-sandbox'). Ignored when the worker is not root. */
  sandboxUser?: string;
  /** Create the account (useradd --system, no home, nologin) if missing; default true. */
  createSandboxUser?: boolean;
  /** uid/gid used when the account neither exists nor can be created; default 65534 (nobody). */
  fallbackUid?: number;
  fallbackGid?: number;
  /** Host directories bound read-only at the same path; default ['/usr']. */
  readOnlyBinds?: string[];
  /**
   * Top-level host paths mirrored into the sandbox: a symlink on the host (merged /usr, e.g.
   * /bin -> usr/bin) becomes the same symlink, a real directory is bound read-only, a missing one
   * is skipped. Default ['/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32'].
   */
  rootLinks?: string[];
  /**
   * Host /etc entries bound read-only when present; default ld.so.cache, ld.so.conf,
   * ld.so.conf.d, alternatives. passwd, group, hosts and nsswitch.conf are always generated
   * (sandbox user and overflow ids only; files-only lookups) and never come from the host.
   */
  etcFiles?: string[];
  /** More read-only binds, e.g. a toolchain outside /usr: a path (same inside) or {source, dest}. */
  extraReadOnlyBinds?: Array<string | { source: string; dest: string }>;
  /** 'auto' (default): cgroup v2 if it offers memory+pids, else v1. 'none' disables limits. */
  cgroup?: CgroupMode;
  /** Parent cgroup, relative to each hierarchy's mount point; default 'reapi'. */
  cgroupRoot?: string;
  /** Hostname inside the sandbox unless the variation sets one; default 'localhost'. */
  defaultHostname?: string;
  /** PATH given to actions whose Command sets none; default '/usr/bin:/bin'. */
  defaultPath?: string;
  /**
   * How the exec root (created by the caller, as root) becomes writable by the sandbox user.
   * 'chown-dirs' (default): every directory in it is lchown'ed to the sandbox user before the run,
   * files are left alone, so inputs (possibly hard links into the CAS) stay root-owned and
   * read-only to the action while it can still create, rename and delete entries anywhere.
   * 'none': the caller arranges permissions itself. The exec root's ancestors must be searchable
   * (o+x) by the sandbox user either way.
   */
  execRootOwnership?: 'chown-dirs' | 'none';
  /** Where the generated /etc files are written (a private 0755 subdirectory); default os.tmpdir(). */
  stateDir?: string;
}

/**
 * Per-run changes to the sandbox's filesystem, for runners layered on this one (e.g. the
 * build-script runner's policy). Plain bwrap arguments; the run's own /etc files, /proc, /dev,
 * /tmp and exec root are added as usual.
 */
export interface SandboxMounts {
  /** Replace the shared system binds (readOnlyBinds, rootLinks, etcFiles, extraReadOnlyBinds). */
  system?: string[];
  /** Arguments applied after the exec root is mounted (host `execRoot` at `mount`), e.g. read-only sub-binds. */
  afterExecRoot?: (execRoot: string, mount: string) => string[];
}

const DEFAULT_ETC = ['/etc/ld.so.cache', '/etc/ld.so.conf', '/etc/ld.so.conf.d', '/etc/alternatives'];
const DEFAULT_ROOT_LINKS = ['/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32'];
const TOOL_DIRS = ['/usr/bin', '/bin', '/usr/sbin', '/sbin'];
/** bwrap's own processes in the run's pids cgroup: the outer bwrap and the namespace's pid 1. */
const BWRAP_PROCESSES = 2;

interface Tools {
  sh: string;
  bwrap: string;
  setpriv?: string;
  prlimit?: string;
  taskset?: string;
  setarch?: string;
  /** `env`, when visible inside the sandbox (under a read-only bind). */
  env?: string;
}

interface Prepared {
  tools: Tools;
  isRoot: boolean;
  user: SandboxUser;
  cgroups: CgroupManager | undefined;
  /** bwrap arguments shared by every run (read-only binds, /etc). */
  staticArgs: string[];
  allowedCpus: number[];
}

async function findTool(name: string): Promise<string | undefined> {
  for (const dir of TOOL_DIRS) {
    const p = join(dir, name);
    try {
      const st = await lstat(p);
      if (st.isFile() || st.isSymbolicLink()) return p;
    } catch {
      // Try the next directory.
    }
  }
  return undefined;
}

function expandCpuList(list: string): number[] {
  const out: number[] = [];
  for (const part of list.split(',')) {
    const [a, b] = part.trim().split('-');
    const lo = Number(a);
    const hi = b === undefined ? lo : Number(b);
    if (!Number.isInteger(lo) || !Number.isInteger(hi)) continue;
    for (let c = lo; c <= hi; c++) out.push(c);
  }
  return out;
}

export class BwrapRunner implements Runner {
  readonly name = 'bwrap';
  private readonly opts: Required<Omit<BwrapRunnerOptions, 'stateDir'>> & { stateDir?: string };
  private readonly etc: EtcFiles;
  private prepared: Promise<Prepared> | undefined;
  private seq = 0;

  constructor(options: BwrapRunnerOptions = {}) {
    this.opts = {
      sandboxUser: options.sandboxUser ?? 'reapi-sandbox',
      createSandboxUser: options.createSandboxUser ?? true,
      fallbackUid: options.fallbackUid ?? 65534,
      fallbackGid: options.fallbackGid ?? 65534,
      readOnlyBinds: options.readOnlyBinds ?? ['/usr'],
      rootLinks: options.rootLinks ?? DEFAULT_ROOT_LINKS,
      etcFiles: options.etcFiles ?? DEFAULT_ETC,
      extraReadOnlyBinds: options.extraReadOnlyBinds ?? [],
      cgroup: options.cgroup ?? 'auto',
      cgroupRoot: options.cgroupRoot ?? 'reapi',
      defaultHostname: options.defaultHostname ?? 'localhost',
      defaultPath: options.defaultPath ?? '/usr/bin:/bin',
      execRootOwnership: options.execRootOwnership ?? 'chown-dirs',
      ...(options.stateDir !== undefined ? { stateDir: options.stateDir } : {}),
    };
    this.etc = new EtcFiles(options.stateDir);
  }

  /**
   * One-time setup (sandbox user, cgroup detection, tool lookup). Called lazily by run(); call it
   * eagerly to fail fast at worker start.
   */
  ready(): Promise<{ user: SandboxUser; cgroups: string }> {
    this.prepared ??= this.prepare();
    return this.prepared.then((p) => ({ user: p.user, cgroups: p.cgroups?.description ?? 'none' }));
  }

  /** Removes the generated /etc files. Runs still in flight may fail; call after draining. */
  dispose(): Promise<void> {
    return this.etc.dispose();
  }

  private async prepare(): Promise<Prepared> {
    const isRoot = process.getuid?.() === 0;
    const [sh, bwrap, setpriv, prlimit, taskset, setarch, env] = await Promise.all(
      ['sh', 'bwrap', 'setpriv', 'prlimit', 'taskset', 'setarch', 'env'].map(findTool),
    );
    if (!sh || !bwrap) throw new Error(`bwrap runner needs sh and bwrap on ${TOOL_DIRS.join(':')}`);
    if (isRoot && !setpriv) throw new Error('bwrap runner running as root needs setpriv to drop privileges');
    const tools: Tools = { sh, bwrap };
    if (setpriv) tools.setpriv = setpriv;
    if (prlimit) tools.prlimit = prlimit;
    if (taskset) tools.taskset = taskset;
    const visible = (tool: string) => this.opts.readOnlyBinds.some((d) => tool.startsWith(d.endsWith('/') ? d : `${d}/`));
    if (setarch && visible(setarch)) tools.setarch = setarch;
    if (env && visible(env)) tools.env = env;

    const user: SandboxUser = isRoot
      ? await ensureSandboxUser(this.opts.sandboxUser, {
          create: this.opts.createSandboxUser,
          fallback: { uid: this.opts.fallbackUid, gid: this.opts.fallbackGid },
        })
      : { name: this.opts.sandboxUser, uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, source: 'existing' };

    let cgroups: CgroupManager | undefined;
    try {
      cgroups = await detectCgroups(this.opts.cgroup, this.opts.cgroupRoot);
    } catch (e) {
      // A non-root worker usually has no delegated cgroup: run without limits rather than not at all.
      if (isRoot || this.opts.cgroup !== 'auto') throw e;
    }
    await cgroups?.sweepStale((name) => {
      const pid = Number(/^r(\d+)-/.exec(name)?.[1]);
      if (!Number.isInteger(pid) || pid === process.pid) return true;
      try {
        process.kill(pid, 0);
        return true;
      } catch (e) {
        return (e as NodeJS.ErrnoException).code !== 'ESRCH';
      }
    });

    // bwrap would create /etc 0700 (owned by the sandbox uid); make it look like a normal /etc.
    const staticArgs: string[] = ['--perms', '0755', '--dir', '/etc'];
    for (const dir of this.opts.readOnlyBinds) staticArgs.push('--ro-bind', dir, dir);
    for (const link of this.opts.rootLinks) {
      try {
        const st = await lstat(link);
        if (st.isSymbolicLink()) staticArgs.push('--symlink', await readlink(link), link);
        else if (st.isDirectory()) staticArgs.push('--ro-bind', link, link);
      } catch {
        // Not on this host.
      }
    }
    for (const f of this.opts.etcFiles) staticArgs.push('--ro-bind-try', f, f);
    for (const b of this.opts.extraReadOnlyBinds) {
      const { source, dest } = typeof b === 'string' ? { source: b, dest: b } : b;
      staticArgs.push('--ro-bind', source, dest);
    }

    let allowedCpus: number[] = [];
    try {
      const status = await readFile('/proc/self/status', 'utf8');
      allowedCpus = expandCpuList(/^Cpus_allowed_list:\s*(.*)$/m.exec(status)?.[1] ?? '');
    } catch {
      // Affinity unknown: variation.cpus is then ignored.
    }
    return { tools, isRoot, user, cgroups, staticArgs, allowedCpus };
  }

  /** The tools the sandbox itself runs inside (`env`, `setarch`), for layouts that replace /usr. */
  async insideTools(): Promise<string[]> {
    this.prepared ??= this.prepare();
    const t = (await this.prepared).tools;
    return [t.env, t.setarch].filter((x): x is string => x !== undefined);
  }

  async run(spec: RunSpec, signal: AbortSignal, mounts?: SandboxMounts): Promise<RunOutcome> {
    const startedAt = new Date();
    const fail = (failure: RunFailure, exitCode = -1): RunOutcome => failedRun(failure, startedAt, exitCode);
    if (signal.aborted) return fail({ kind: 'cancelled', message: 'action cancelled before it started' });

    let p: Prepared;
    try {
      this.prepared ??= this.prepare();
      p = await this.prepared;
    } catch (e) {
      return fail({ kind: 'sandbox-error', message: `sandbox setup failed: ${messageOf(e)}` });
    }

    const v: Variation = spec.variation ?? {};
    const paths = checkSpec(spec);
    if (isFailure(paths)) return fail(paths);
    const { mount, workingDirectory: wd } = paths;
    if (v.disableAslr && !p.tools.setarch) return fail({ kind: 'sandbox-error', message: 'disableAslr needs setarch' });

    let cg: RunCgroup | undefined;
    const id = `r${process.pid}-${++this.seq}`;
    try {
      if (p.isRoot && p.user.uid !== 0 && this.opts.execRootOwnership === 'chown-dirs') {
        await chownDirs(spec.execRoot, p.user.uid, p.user.gid);
      }
      cg = await p.cgroups?.create(id, {
        memoryBytes: spec.limits.memoryBytes,
        maxProcesses: spec.limits.maxProcesses > 0 ? spec.limits.maxProcesses + BWRAP_PROCESSES : 0,
      });
    } catch (e) {
      return fail({ kind: 'sandbox-error', message: `sandbox setup failed: ${messageOf(e)}` });
    }
    try {
      return await this.execute(spec, signal, p, v, mount, wd, cg, startedAt, mounts);
    } finally {
      await cg?.destroy();
    }
  }

  private async buildArgs(spec: RunSpec, p: Prepared, v: Variation, mount: string, wd: string, cg: RunCgroup | undefined, mounts?: SandboxMounts) {
    const hostname = v.hostname ?? this.opts.defaultHostname;
    const insideUid = v.uid ?? p.user.uid;
    const insideGid = v.gid ?? p.user.gid;
    const etcDir = await this.etc.forIdentity(p.user.name, insideUid, insideGid, hostname);

    const env: Record<string, string> = { ...spec.env };
    if (!('PATH' in env)) env.PATH = this.opts.defaultPath;
    if (v.tz !== undefined && !('TZ' in env)) env.TZ = v.tz;
    if (v.locale !== undefined && !('LANG' in env) && !('LC_ALL' in env)) env.LANG = v.locale;
    for (const [k, val] of Object.entries(v.extraEnv ?? {})) if (!(k in env)) env[k] = val;

    // bwrap always exports PWD after its chdir. To hand the action exactly the Command's
    // environment, `env` removes it again (or restores the Command's own PWD) inside the sandbox.
    // Skipped when argv[0] contains '=', which env would take for an assignment.
    const inside: string[] = [];
    if (p.tools.env && !spec.argv[0]?.includes('=')) {
      inside.push(p.tools.env, '-u', 'PWD', '--', ...('PWD' in env ? [`PWD=${env.PWD}`] : []));
    }
    if (v.disableAslr && p.tools.setarch) inside.push(p.tools.setarch, '-R');

    const bwrapArgs = [
      '--unshare-all',
      '--die-with-parent',
      '--new-session',
      '--hostname',
      hostname,
      ...(v.uid !== undefined ? ['--uid', String(v.uid)] : []),
      ...(v.gid !== undefined ? ['--gid', String(v.gid)] : []),
      ...(mounts?.system ?? p.staticArgs),
      ...['passwd', 'group', 'hosts', 'nsswitch.conf'].flatMap((f) => ['--ro-bind', join(etcDir, f), `/etc/${f}`]),
      '--proc',
      '/proc',
      '--dev',
      '/dev',
      '--tmpfs',
      '/tmp',
      '--bind',
      spec.execRoot,
      mount,
      ...(mounts?.afterExecRoot?.(spec.execRoot, mount) ?? []),
      '--chdir',
      posix.join(mount, wd),
      '--clearenv',
      ...Object.entries(env).flatMap(([k, val]) => ['--setenv', k, val]),
      '--json-status-fd',
      '3',
      '--',
      ...inside,
      ...spec.argv,
    ];

    const chain: string[] = [];
    if (spec.limits.maxFileBytes > 0) {
      if (!p.tools.prlimit) throw new Error('maxFileBytes needs prlimit');
      chain.push(p.tools.prlimit, `--fsize=${spec.limits.maxFileBytes}`, '--');
    }
    if (v.cpus !== undefined && v.cpus > 0 && p.tools.taskset && p.allowedCpus.length > 0) {
      chain.push(p.tools.taskset, '-c', p.allowedCpus.slice(0, v.cpus).join(','));
    }
    if (p.isRoot && p.tools.setpriv) {
      chain.push(
        p.tools.setpriv,
        `--reuid=${p.user.uid}`,
        `--regid=${p.user.gid}`,
        '--clear-groups',
        '--inh-caps=-all',
        '--bounding-set=-all',
        '--no-new-privs',
      );
    }
    chain.push(p.tools.bwrap, ...bwrapArgs);

    const umask = (v.umask ?? 0o022).toString(8).padStart(4, '0');
    const join1 = (cg?.procsFiles ?? []).map((f) => `echo $$ > ${shQuote(f)} && `).join('');
    const script = `${join1}umask ${umask} && exec "$@"`;
    return [p.tools.sh, '-c', script, 'sh', ...chain];
  }

  private async execute(
    spec: RunSpec,
    signal: AbortSignal,
    p: Prepared,
    v: Variation,
    mount: string,
    wd: string,
    cg: RunCgroup | undefined,
    startedAt: Date,
    mounts?: SandboxMounts,
  ): Promise<RunOutcome> {
    let argv: string[];
    try {
      argv = await this.buildArgs(spec, p, v, mount, wd, cg, mounts);
    } catch (e) {
      return failedRun({ kind: 'sandbox-error', message: `sandbox setup failed: ${messageOf(e)}` }, startedAt);
    }
    const [cmd, ...args] = argv as [string, ...string[]];
    const stdout = new CappedOutput(spec.maxOutputBytes);
    const stderr = new CappedOutput(spec.maxOutputBytes);
    let status = '';
    let spawnError: Error | undefined;

    const child = spawn(cmd, args, {
      stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
      env: { PATH: TOOL_DIRS.join(':') },
      cwd: '/',
    });
    stdout.attach(child.stdout!);
    stderr.attach(child.stderr!);
    const statusStream = child.stdio[3] as NodeJS.ReadableStream | null;
    statusStream?.on('data', (c: Buffer) => (status += c.toString('utf8')));
    statusStream?.on('error', () => {});

    const timers: NodeJS.Timeout[] = [];
    const watchdog = new Watchdog({
      spec,
      signal,
      // cgroup first: takes everything at once, including setsid'ed escapees; then bwrap itself,
      // whose death ends its PID namespace (the only protection when there is no cgroup).
      kill: () => void (cg?.kill() ?? Promise.resolve()).catch(() => {}).finally(() => child.kill('SIGKILL')),
      ...(cg ? { limitEvents: () => cg.limitEvents() } : {}),
    });
    watchdog.startClock();

    const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
      child.on('error', (e) => {
        spawnError = e;
        resolve({ code: null, signal: null });
      });
      child.on('exit', (code, sig) => {
        exited = { code, signal: sig };
        // Every sandboxed process dies with bwrap's PID namespace, so the pipes close right away;
        // do not hang on them if something unexpected still holds one.
        timers.push(
          setTimeout(() => {
            child.stdout?.destroy();
            child.stderr?.destroy();
            (statusStream as unknown as { destroy?: () => void } | null)?.destroy?.();
            resolve(exited!);
          }, 5000),
        );
      });
      child.on('close', (code, sig) => resolve(exited ?? { code, signal: sig }));
    });
    for (const t of timers) clearTimeout(t);
    watchdog.stop();

    let exitCode = exit.code ?? (exit.signal ? 128 + signalNumber(exit.signal) : -1);
    const { usage, limit } = await accounting(cg, spec.limits, exitCode);
    let failure: RunFailure | undefined = watchdog.killedFor ?? limit;

    const ran = /"exit-code"\s*:/.test(status);
    if (spawnError && !failure) {
      failure = { kind: 'sandbox-error', message: `cannot start sandbox: ${spawnError.message}` };
    } else if (!failure && !ran && exitCode !== 0) {
      const text = stderr.toBuffer().toString('utf8').trim();
      const execFailure = /^bwrap: execvp [^\n]*: (.*)$/m.exec(text);
      if (execFailure) {
        // The sandbox was fine; the action's program could not be executed. Report it the way a
        // shell would (127 not found, 126 not executable) with bwrap's message on stderr.
        exitCode = /No such file/.test(execFailure[1] ?? '') ? 127 : 126;
      } else {
        failure = { kind: 'sandbox-error', message: `sandbox setup failed (exit ${exitCode}): ${text.slice(0, 2000)}` };
      }
    }
    failure ??= fileSizeFailure(exitCode, spec.limits);

    const outcome: RunOutcome = {
      exitCode,
      stdout: stdout.toBuffer(),
      stderr: stderr.toBuffer(),
      truncated: stdout.truncated || stderr.truncated,
      startedAt,
      completedAt: new Date(),
      usage,
    };
    if (failure) outcome.failure = failure;
    return outcome;
  }
}
