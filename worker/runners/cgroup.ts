// One cgroup per run: limits (memory, pids), accounting (CPU, peak memory) and killing a whole
// process tree, including processes that escaped with setsid/double fork.
//
// Two implementations behind one interface, picked once at startup:
// - CgroupV2: a pure cgroup2 hierarchy whose cgroup.controllers offers memory and pids (systemd
//   hosts). Runs live in <mount>/<root>/<id>; killing is `cgroup.kill`.
// - CgroupV1: per-controller hierarchies (memory, pids required; freezer, cpuacct optional) under
//   <mount-of-ctrl>/<root>/<id>. If a controller-less cgroup2 tree is also mounted (hybrid, e.g.
//   /sys/fs/cgroup/unified) the run is placed there too, for `cgroup.kill` and precise cpu.stat;
//   otherwise killing is freeze, SIGKILL every pid in cgroup.procs, thaw.

import { mkdir, readdir, rmdir, writeFile, access } from 'node:fs/promises';
import { join } from 'node:path';
import { readLimitEvents, readText, readUsage, type CgroupUsage, type LimitEvents } from './cgroup-files.ts';
import { wrap } from '../../common/errors.ts';

export type { CgroupUsage, LimitEvents };

export interface CgroupLimits {
  /** Bytes; 0 = unlimited. */
  memoryBytes: number;
  /** Processes/threads; 0 = unlimited. */
  maxProcesses: number;
}

export interface RunCgroup {
  /** Files the run's first process must write its own pid into, before it execs anything. */
  readonly procsFiles: readonly string[];
  limitEvents(): Promise<LimitEvents>;
  usage(): Promise<CgroupUsage>;
  /** SIGKILL every process in the cgroup and wait until it is empty. */
  kill(): Promise<void>;
  /** kill(), then remove the cgroup directories. Never throws. */
  destroy(): Promise<void>;
}

export interface CgroupManager {
  readonly version: 'v1' | 'v2';
  /** Human-readable summary for logs, e.g. "v1 memory,pids,freezer,cpuacct + v2 kill". */
  readonly description: string;
  create(id: string, limits: CgroupLimits): Promise<RunCgroup>;
  /** Removes leftover run cgroups whose owning worker process is gone (best effort). */
  sweepStale(isOwnerAlive: (name: string) => boolean): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Small file helpers

async function tryWrite(path: string, value: string): Promise<boolean> {
  try {
    await writeFile(path, value);
    return true;
  } catch {
    return false;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function pidsIn(dir: string): Promise<number[]> {
  const t = await readText(join(dir, 'cgroup.procs'));
  return (t ?? '')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map(Number);
}

/** Polls until cgroup.procs of `dir` is empty (processes exited) or `budgetMs` passed. */
async function waitEmpty(dir: string, budgetMs: number, onEachRound?: (pids: number[]) => void): Promise<boolean> {
  const deadline = Date.now() + budgetMs;
  for (let delay = 1; ; delay = Math.min(delay * 2, 20)) {
    const pids = await pidsIn(dir);
    if (pids.length === 0) return true;
    if (Date.now() > deadline) return false;
    onEachRound?.(pids);
    await sleep(delay);
  }
}

function killAll(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}

/** rmdir with retries: a cgroup is busy until its last process has fully exited. */
async function removeDir(dir: string): Promise<void> {
  for (let attempt = 0; attempt < 50; attempt++) {
    try {
      await rmdir(dir);
      return;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code !== 'EBUSY') return;
      await sleep(Math.min(2 + attempt * 2, 20));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Detection

interface Mounts {
  /** cgroup2 mount point, if any. */
  v2?: string;
  /** v1 controller name -> mount point. */
  v1: Map<string, string>;
}

async function readMounts(): Promise<Mounts> {
  const text = (await readText('/proc/self/mountinfo')) ?? '';
  const mounts: Mounts = { v1: new Map() };
  for (const line of text.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const pre = line.slice(0, sep).split(' ');
    const post = line.slice(sep + 3).split(' ');
    const mountPoint = pre[4];
    const fstype = post[0];
    if (!mountPoint) continue;
    if (fstype === 'cgroup2') mounts.v2 ??= mountPoint;
    if (fstype === 'cgroup') {
      for (const opt of (post[2] ?? '').split(',')) {
        if (!mounts.v1.has(opt)) mounts.v1.set(opt, mountPoint);
      }
    }
  }
  return mounts;
}

export type CgroupMode = 'auto' | 'v1' | 'v2' | 'none';

/**
 * Picks the cgroup implementation. `root` is the parent cgroup's path relative to each hierarchy's
 * mount point (default "reapi"). Returns undefined for mode 'none'. Throws when the requested (or,
 * for 'auto', the detected) hierarchy cannot be set up, so limits are never silently unenforced.
 */
export async function detectCgroups(mode: CgroupMode, root: string): Promise<CgroupManager | undefined> {
  if (mode === 'none') return undefined;
  const mounts = await readMounts();
  const v2Controllers = mounts.v2
    ? ((await readText(join(mounts.v2, 'cgroup.controllers'))) ?? '').trim().split(/\s+/)
    : [];
  const v2Usable = mounts.v2 !== undefined && v2Controllers.includes('memory') && v2Controllers.includes('pids');
  const v1Usable = mounts.v1.has('memory') && mounts.v1.has('pids');

  if ((mode === 'auto' || mode === 'v2') && v2Usable && mounts.v2) {
    return CgroupV2.init(mounts.v2, root);
  }
  if ((mode === 'auto' || mode === 'v1') && v1Usable) {
    // A controller-less cgroup2 mount next to v1 is the hybrid layout; use it for cgroup.kill.
    const hybrid = mounts.v2 !== undefined && !v2Usable ? mounts.v2 : undefined;
    return CgroupV1.init(mounts.v1, hybrid, root);
  }
  throw new Error(
    `no usable cgroup hierarchy for mode '${mode}' (v2 controllers: [${v2Controllers.join(' ')}], ` +
      `v1 controllers: [${[...mounts.v1.keys()].join(' ')}]); memory and pids controllers are required`,
  );
}

async function sweep(base: string, isOwnerAlive: (name: string) => boolean, kill: (dir: string) => Promise<void>) {
  let names: string[];
  try {
    names = (await readdir(base, { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name);
  } catch {
    return;
  }
  for (const name of names) {
    if (isOwnerAlive(name)) continue;
    const dir = join(base, name);
    await kill(dir);
    await removeDir(dir);
  }
}

// ---------------------------------------------------------------------------------------------
// cgroup v2

class CgroupV2 implements CgroupManager {
  readonly version = 'v2';
  readonly description: string;

  private constructor(private readonly base: string) {
    this.description = `v2 ${base} (memory, pids, cgroup.kill)`;
  }

  static async init(mount: string, root: string): Promise<CgroupV2> {
    // Controllers must be enabled in every ancestor's subtree_control. The hierarchy root may hold
    // processes; a non-root ancestor holding processes cannot enable them ("no internal
    // processes") - then point cgroupRoot at a delegated, empty subtree.
    const parts = root.split('/').filter(Boolean);
    let dir = mount;
    const enable = async (d: string) => {
      const have = ((await readText(join(d, 'cgroup.subtree_control'))) ?? '').split(/\s+/);
      const missing = ['memory', 'pids'].filter((c) => !have.includes(c));
      if (missing.length === 0) return;
      try {
        await writeFile(join(d, 'cgroup.subtree_control'), missing.map((c) => `+${c}`).join(' '));
      } catch (e) {
        throw wrap(e, `cannot enable ${missing.join(',')} in ${d}/cgroup.subtree_control`);
      }
    };
    await enable(dir);
    for (const part of parts) {
      dir = join(dir, part);
      await mkdir(dir, { recursive: true });
      await enable(dir);
    }
    return new CgroupV2(dir);
  }

  async create(id: string, limits: CgroupLimits): Promise<RunCgroup> {
    const dir = join(this.base, id);
    await mkdir(dir);
    try {
      if (limits.memoryBytes > 0) {
        await writeFile(join(dir, 'memory.max'), String(limits.memoryBytes));
        await tryWrite(join(dir, 'memory.swap.max'), '0');
        // The OOM killer takes the whole run, not just the largest process.
        await tryWrite(join(dir, 'memory.oom.group'), '1');
      }
      if (limits.maxProcesses > 0) await writeFile(join(dir, 'pids.max'), String(limits.maxProcesses));
    } catch (e) {
      await removeDir(dir);
      throw e;
    }
    return new RunCgroupV2(dir);
  }

  sweepStale(isOwnerAlive: (name: string) => boolean): Promise<void> {
    return sweep(this.base, isOwnerAlive, (d) => killV2(d));
  }
}

async function killV2(dir: string): Promise<void> {
  if (!(await tryWrite(join(dir, 'cgroup.kill'), '1'))) {
    // Kernels before 5.14: no cgroup.kill; freeze, kill, thaw.
    await tryWrite(join(dir, 'cgroup.freeze'), '1');
    killAll(await pidsIn(dir));
    await tryWrite(join(dir, 'cgroup.freeze'), '0');
  }
  await waitEmpty(dir, 2000, killAll);
}

class RunCgroupV2 implements RunCgroup {
  readonly procsFiles: readonly string[];
  constructor(private readonly dir: string) {
    this.procsFiles = [join(dir, 'cgroup.procs')];
  }

  limitEvents(): Promise<LimitEvents> {
    return readLimitEvents({ v2: this.dir });
  }

  usage(): Promise<CgroupUsage> {
    return readUsage({ v2: this.dir });
  }

  kill(): Promise<void> {
    return killV2(this.dir);
  }

  async destroy(): Promise<void> {
    try {
      await this.kill();
    } catch {
      // Fall through to rmdir.
    }
    await removeDir(this.dir);
  }
}

// ---------------------------------------------------------------------------------------------
// cgroup v1 (optionally with a controller-less v2 tree for cgroup.kill)

const V1_REQUIRED = ['memory', 'pids'] as const;
const V1_OPTIONAL = ['freezer', 'cpuacct'] as const;
type V1Ctrl = (typeof V1_REQUIRED)[number] | (typeof V1_OPTIONAL)[number];

class CgroupV1 implements CgroupManager {
  readonly version = 'v1';
  readonly description: string;

  private constructor(
    /** controller -> <mount>/<root> */
    private readonly bases: Map<V1Ctrl, string>,
    /** <v2 mount>/<root>, hybrid layout only */
    private readonly unifiedBase: string | undefined,
  ) {
    this.description =
      `v1 ${[...bases.keys()].join(',')} under ${[...bases.values()][0] ?? '?'}` +
      (unifiedBase ? ` + v2 ${unifiedBase} for cgroup.kill` : '');
  }

  static async init(v1: Map<string, string>, unifiedMount: string | undefined, root: string): Promise<CgroupV1> {
    let unifiedBase: string | undefined;
    if (unifiedMount) {
      const b = join(unifiedMount, root);
      try {
        await mkdir(b, { recursive: true });
        // cgroup.kill needs Linux 5.14; the (non-root) parent shows whether the kernel has it.
        if (await exists(join(b, 'cgroup.kill'))) unifiedBase = b;
      } catch {
        unifiedBase = undefined;
      }
    }
    // With the v2 tree doing kill (cgroup.kill) and CPU accounting (cpu.stat), freezer and
    // cpuacct would only add a mkdir, a pid move and an rmdir per run.
    const optional = unifiedBase ? [] : V1_OPTIONAL;
    const bases = new Map<V1Ctrl, string>();
    const seen = new Set<string>();
    for (const ctrl of [...V1_REQUIRED, ...optional]) {
      const mount = v1.get(ctrl);
      if (!mount) continue;
      const base = join(mount, root);
      // Co-mounted controllers (e.g. cpu,cpuacct) share one directory: create it once.
      if (!seen.has(base)) {
        seen.add(base);
        try {
          await mkdir(base, { recursive: true });
        } catch (e) {
          if ((V1_REQUIRED as readonly string[]).includes(ctrl)) throw e;
          continue;
        }
      }
      bases.set(ctrl, base);
    }
    return new CgroupV1(bases, unifiedBase);
  }

  async create(id: string, limits: CgroupLimits): Promise<RunCgroup> {
    const dirs = new Map<V1Ctrl, string>();
    const created: string[] = [];
    let unified: string | undefined;
    try {
      for (const [ctrl, base] of this.bases) {
        const dir = join(base, id);
        if (!created.includes(dir)) {
          await mkdir(dir);
          created.push(dir);
        }
        dirs.set(ctrl, dir);
      }
      if (this.unifiedBase) {
        const dir = join(this.unifiedBase, id);
        await mkdir(dir);
        created.push(dir);
        unified = dir;
      }
      const mem = dirs.get('memory');
      const pids = dirs.get('pids');
      if (!mem || !pids) throw new Error('memory and pids cgroups are required');
      if (limits.memoryBytes > 0) {
        await writeFile(join(mem, 'memory.limit_in_bytes'), String(limits.memoryBytes));
        // Where swap exists, memory+swap gets the same limit so the action cannot swap instead.
        await tryWrite(join(mem, 'memory.memsw.limit_in_bytes'), String(limits.memoryBytes));
      }
      if (limits.maxProcesses > 0) await writeFile(join(pids, 'pids.max'), String(limits.maxProcesses));
    } catch (e) {
      for (const d of created.reverse()) await removeDir(d);
      throw e;
    }
    return new RunCgroupV1(dirs, unified, created);
  }

  async sweepStale(isOwnerAlive: (name: string) => boolean): Promise<void> {
    const freezer = this.bases.get('freezer');
    const memory = this.bases.get('memory');
    if (this.unifiedBase) await sweep(this.unifiedBase, isOwnerAlive, (d) => killV2(d));
    for (const base of new Set(this.bases.values())) {
      await sweep(base, isOwnerAlive, async (d) => {
        // Kill from the memory hierarchy (holds every process) once; the others are then empty.
        if (base === memory || base === freezer) await waitEmpty(d, 2000, killAll);
      });
    }
  }
}

class RunCgroupV1 implements RunCgroup {
  readonly procsFiles: readonly string[];

  constructor(
    private readonly dirs: Map<V1Ctrl, string>,
    private readonly unified: string | undefined,
    private readonly all: string[],
  ) {
    const files = new Set<string>();
    for (const d of dirs.values()) files.add(join(d, 'cgroup.procs'));
    if (unified) files.add(join(unified, 'cgroup.procs'));
    this.procsFiles = [...files];
  }

  private dir(ctrl: V1Ctrl): string | undefined {
    return this.dirs.get(ctrl);
  }

  limitEvents(): Promise<LimitEvents> {
    return readLimitEvents({ memory: this.dir('memory'), pids: this.dir('pids') });
  }

  usage(): Promise<CgroupUsage> {
    return readUsage({ memory: this.dir('memory'), cpuacct: this.dir('cpuacct'), unified: this.unified });
  }

  async kill(): Promise<void> {
    const mem = this.dir('memory');
    if (!mem) return;
    if (this.unified) {
      await tryWrite(join(this.unified, 'cgroup.kill'), '1');
    } else {
      const freezer = this.dir('freezer');
      if (freezer) {
        // Frozen processes cannot fork between our reading cgroup.procs and the SIGKILLs.
        await tryWrite(join(freezer, 'freezer.state'), 'FROZEN');
        for (let i = 0; i < 100; i++) {
          const state = (await readText(join(freezer, 'freezer.state')))?.trim();
          if (state !== 'FREEZING') break;
          await sleep(1);
        }
        killAll(await pidsIn(freezer));
        await tryWrite(join(freezer, 'freezer.state'), 'THAWED');
      } else {
        killAll(await pidsIn(mem));
      }
    }
    // Whatever is left (or forked during a racy freezer-less kill) is killed on every round.
    await waitEmpty(mem, 2000, killAll);
  }

  async destroy(): Promise<void> {
    try {
      await this.kill();
    } catch {
      // Fall through to rmdir.
    }
    for (const d of [...this.all].reverse()) await removeDir(d);
  }
}
