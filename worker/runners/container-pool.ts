// The containers runs use: warm ones, created and started ahead of time a few per image and
// limits (`warmContainers`) and each serving exactly one action; and containers of their own for
// runs with a variation or whose exec root cannot be renamed into a warm one. Every container is
// removed after its run, in the background, off the action's latency.
import { execFile } from 'node:child_process';
import { lchown, mkdir, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

import type Docker from 'dockerode';

import type { Logger } from '../../common/logger.ts';
import { isNotFound, type DockerEngine } from './docker-engine.ts';
import { CONTROL_DIR, ContainerCgroup, HELPER, SCRIPT_FIFO, WRAPPER_COMMAND } from './docker-support.ts';

export /** What a container is created with; runs with equal keys can share warm containers. */
interface SlotConfig {
  image: string;
  imageId: string;
  mount: string;
  hostname: string;
  uid: number;
  gid: number;
  memoryBytes: number;
  maxProcesses: number;
  maxFileBytes: number;
  cpus: number;
}

export interface Slot {
  name: string;
  container: Docker.Container;
  /** stateDir/<name>: ctl/ (the FIFO) and, for warm containers, root/ (bind-mounted exec root). */
  dir: string;
  /** Warm containers: the bind-mounted directory the exec root's entries are moved into. */
  root?: string;
  cgroup?: ContainerCgroup;
  /** The container's init (the wrapper), as the host sees it. */
  pid?: number;
}

interface Pool {
  config: SlotConfig;
  ready: Slot[];
  creating: number;
  lastUsed: number;
}

export interface ContainerPoolOptions {
  warm: number;
  warmIdleMs: number;
  tmpfsBytes?: number;
}

/** Renames every entry of `from` into `to`; on failure puts back what it moved and rethrows. */
export async function moveEntries(from: string, to: string): Promise<void> {
  const moved: string[] = [];
  try {
    for (const name of await readdir(from)) {
      await rename(join(from, name), join(to, name));
      moved.push(name);
    }
  } catch (e) {
    for (const name of moved.reverse()) await rename(join(to, name), join(from, name)).catch(() => {});
    throw e;
  }
}

export class ContainerPool {
  private readonly pools = new Map<string, Pool>();
  private readonly pending = new Set<Promise<unknown>>();
  private readonly idleTimer: NodeJS.Timeout;
  private seq = 0;
  private disposed = false;
  /** Runs that took a warm container / created their own; for tests and the benchmark. */
  readonly counts = { warm: 0, cold: 0 };

  constructor(
    private readonly engine: DockerEngine,
    private readonly opts: ContainerPoolOptions,
    private readonly logger: Logger | undefined,
  ) {
    this.idleTimer = setInterval(() => this.expireIdlePools(), Math.min(60_000, opts.warmIdleMs));
    this.idleTimer.unref();
  }

  /**
   * A started warm container for a run without a variation, its exec root's entries moved into
   * the directory the container has bind-mounted; undefined when there is none ready or the
   * entries cannot be moved (another filesystem, a mount point). Tops the pool up either way.
   */
  async take(config: SlotConfig, execRoot: string): Promise<Slot | undefined> {
    if (this.opts.warm <= 0) return undefined;
    const key = JSON.stringify(config);
    let pool = this.pools.get(key);
    if (!pool) {
      pool = { config, ready: [], creating: 0, lastUsed: 0 };
      this.pools.set(key, pool);
    }
    pool.lastUsed = Date.now();
    const taken = pool.ready.shift();
    this.fill(key);
    if (!taken?.root) return undefined;
    try {
      await moveEntries(execRoot, taken.root);
      this.counts.warm++;
      return taken;
    } catch {
      // The untouched warm container goes back.
      pool.ready.unshift(taken);
      return undefined;
    }
  }

  /** Warm containers started and waiting for an action, over all images and limits. */
  get warmReady(): number {
    let n = 0;
    for (const pool of this.pools.values()) n += pool.ready.length;
    return n;
  }

  /** Waits until every container removal started so far has finished. */
  async settled(): Promise<void> {
    while (this.pending.size) await Promise.allSettled([...this.pending]);
  }

  /** Removes warm containers and waits for pending removals; the pool cannot be used after. */
  async dispose(): Promise<void> {
    this.disposed = true;
    if (this.idleTimer) clearInterval(this.idleTimer);
    for (const pool of this.pools.values()) for (const slot of pool.ready.splice(0)) this.discard(slot);
    await this.settled();
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p)).catch(() => {});
    return p;
  }

  /** Removes a container (killing it) and its state directory, in the background. */
  discard(slot: Slot): void {
    void this.track(
      (async () => {
        try {
          await slot.container.remove({ force: true, v: true });
        } catch (e) {
          if (!isNotFound(e)) this.logger?.warn({ err: e, container: slot.name }, 'could not remove container');
        }
        await rm(slot.dir, { recursive: true, force: true }).catch(() => {});
      })(),
    );
  }

  private expireIdlePools(): void {
    const now = Date.now();
    for (const [key, pool] of this.pools) {
      if (now - pool.lastUsed < this.opts.warmIdleMs || pool.creating > 0) continue;
      for (const slot of pool.ready.splice(0)) this.discard(slot);
      this.pools.delete(key);
    }
  }

  /** A container of its own for one run, bind-mounting `execRoot` (not started). */
  create(config: SlotConfig, execRoot: string): Promise<Slot> {
    this.counts.cold++;
    return this.createSlot(config, false, execRoot);
  }

  private async createSlot(config: SlotConfig, warm: boolean, execRoot?: string): Promise<Slot> {
    const p = await this.engine.prepare();
    const { docker, instance, stateDir } = this.engine;
    const name = `reapi-${process.pid}-${instance}-${++this.seq}`;
    const dir = join(stateDir, name);
    const ctl = join(dir, 'ctl');
    await mkdir(ctl, { recursive: true, mode: 0o755 });
    await promisify(execFile)('mkfifo', ['-m', '0644', join(ctl, SCRIPT_FIFO)]);
    let root: string | undefined;
    if (warm) {
      root = join(dir, 'root');
      await mkdir(root, { mode: 0o755 });
      await lchown(root, config.uid, config.gid);
    }
    const tmpfs = this.opts.tmpfsBytes ?? (config.memoryBytes > 0 ? config.memoryBytes : 1024 ** 3);
    const host: Docker.HostConfig = {
      NetworkMode: 'none',
      // Mounts rather than Binds: paths may contain ':' or ','.
      Mounts: [
        { Type: 'bind', Source: p.helper, Target: HELPER, ReadOnly: true },
        { Type: 'bind', Source: ctl, Target: CONTROL_DIR, ReadOnly: true },
        { Type: 'bind', Source: root ?? execRoot!, Target: config.mount, ReadOnly: false },
      ],
      ReadonlyRootfs: true,
      Tmpfs: { '/tmp': `rw,nosuid,nodev,exec,size=${tmpfs},mode=1777` },
      CapDrop: ['ALL'],
      SecurityOpt: ['no-new-privileges'],
      IpcMode: 'private',
      LogConfig: { Type: 'none', Config: {} },
    };
    if (config.memoryBytes > 0) {
      host.Memory = config.memoryBytes;
      host.MemorySwap = config.memoryBytes;
    }
    // One more process than the action's own: the wrapper.
    if (config.maxProcesses > 0) host.PidsLimit = config.maxProcesses + 1;
    if (config.maxFileBytes > 0) host.Ulimits = [{ Name: 'fsize', Soft: config.maxFileBytes, Hard: config.maxFileBytes }];
    if (config.cpus > 0) host.CpusetCpus = Array.from({ length: config.cpus }, (_, i) => i).join(',');
    let container: Docker.Container;
    try {
      container = await docker.createContainer({
        name,
        Image: config.imageId,
        Entrypoint: [HELPER],
        Cmd: WRAPPER_COMMAND,
        User: `${config.uid}:${config.gid}`,
        Hostname: config.hostname,
        WorkingDir: '/',
        Env: [],
        Labels: { ...p.labels, 'reapi.image': config.image },
        AttachStdin: false,
        AttachStdout: false,
        AttachStderr: false,
        OpenStdin: false,
        Tty: false,
        // Nothing to shut down gracefully: an engine stopping kills it at once.
        StopSignal: 'SIGKILL',
        StopTimeout: 1,
        HostConfig: host,
      });
    } catch (e) {
      await rm(dir, { recursive: true, force: true }).catch(() => {});
      throw e;
    }
    const slot: Slot = { name, container, dir, ...(root ? { root } : {}) };
    return slot;
  }

  /** Starts a created container and finds its cgroup (for limits and accounting). */
  async start(slot: Slot): Promise<void> {
    await slot.container.start();
    try {
      const info = (await slot.container.inspect()) as { State?: { Pid?: number } };
      const pid = info.State?.Pid;
      if (pid) {
        slot.pid = pid;
        const cg = await ContainerCgroup.forPid(pid);
        if (cg) slot.cgroup = cg;
      }
    } catch {
      // Accounting and early limit detection are best effort.
    }
  }

  private fill(key: string): void {
    const pool = this.pools.get(key);
    if (!pool || this.disposed) return;
    while (pool.ready.length + pool.creating < this.opts.warm) {
      pool.creating++;
      void this.track(
        (async () => {
          let slot: Slot | undefined;
          try {
            slot = await this.createSlot(pool.config, true);
            await this.start(slot);
            if (this.disposed || this.pools.get(key) !== pool) this.discard(slot);
            else pool.ready.push(slot);
          } catch (e) {
            if (slot) this.discard(slot);
            this.logger?.warn({ err: e, image: pool.config.image }, 'could not prepare a warm container');
          } finally {
            pool.creating--;
          }
        })(),
      );
    }
  }
}
