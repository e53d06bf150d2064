// Runs actions whose platform names a `container-image` in their own Docker container, through
// the engine's API (dockerode; never the CLI). Each run:
//   - its own container: no network, the exec root bind-mounted, read-only root filesystem plus a
//     tmpfs /tmp, all capabilities dropped, no-new-privileges, a non-root uid (default 65534),
//     memory, pids and file-size limits, a private IPC namespace, no log file;
//   - stdout/stderr through an attach made before the action starts, exit code from the wrapper;
//   - a timeout (or cancellation, or a limit hit) SIGKILLs the container;
//   - the container is always removed afterwards (in the background, off the action's latency).
// Containers carry labels naming the worker process; a runner that starts removes those of a
// process that is gone (a crashed predecessor on this host).
//
// Overhead. Creating and starting a container costs ~100-500 ms, and the engine notices a
// container stopping another ~80-150 ms later; a no-op action would pay both. Instead every
// container runs a small wrapper (the host's static busybox, bind-mounted read-only at
// /.reapi/busybox) that blocks reading its script from a FIFO (/.reapi/ctl/go). So containers
// for the common case (no variation) are created *and started* ahead of time, a few per image and
// limits ("warm"); an action takes one, its exec root's entries are renamed into the directory
// that container has bind-mounted, its script is written to the FIFO, and the wrapper's markers
// at the end of stdout/stderr say when it is over (see docker-support.ts). Each warm container
// still serves exactly one action. Runs with a variation (verification), or whose exec root
// cannot be renamed (another filesystem, a FUSE mount), create their own container on the spot.

import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants as fsConstants, existsSync } from 'node:fs';
import { lchown, mkdir, open, readdir, realpath, rename, rm } from 'node:fs/promises';
import { hostname as osHostname, tmpdir } from 'node:os';
import { isAbsolute, join, posix } from 'node:path';
import { promisify } from 'node:util';

import Docker from 'dockerode';

import { failedPrecondition } from '../../common/errors.ts';
import type { Logger } from '../../common/logger.ts';
import { failedRun, type RunFailure, type RunOutcome, type RunSpec, type Runner, type Variation } from '../../execution/runner.ts';
import { chownDirs } from './exec-root-ownership.ts';
import {
  AttachDemux,
  CONTAINER_IMAGE,
  CONTROL_DIR,
  ContainerCgroup,
  HELPER,
  SCRIPT_FIFO,
  STATUS_NO_WORKDIR,
  WRAPPER_COMMAND,
  importHint,
  isStaticElf,
  parseImage,
  processStartTime,
  wrapperScript,
} from './docker-support.ts';

export { CONTAINER_IMAGE, parseImage } from './docker-support.ts';

export interface DockerRunnerOptions {
  /** Engine: unix:///path, tcp://host:port or a socket path; default $DOCKER_HOST, else /var/run/docker.sock. */
  host?: string;
  /** A client to use instead of `host`. */
  docker?: Docker;
  /** uid/gid actions run as unless a variation sets one; default 65534 (nobody). */
  uid?: number;
  gid?: number;
  /** Static busybox bind-mounted as the in-container wrapper; default the first static one of /bin/busybox, /usr/bin/busybox. */
  helper?: string;
  /**
   * Control FIFOs and warm containers' exec-root directories; exclusively this runner's (emptied
   * at start). Warm containers are used only when exec roots are on the same filesystem.
   * Default: a fresh directory under the system temp dir.
   */
  stateDir?: string;
  /** Started containers kept ready per image and limits; default 2; 0 creates every container on demand. */
  warmContainers?: number;
  /** Warm containers of an image and limits unused this long are removed; default 10 minutes. */
  warmIdleMs?: number;
  /** Hostname inside containers unless the variation sets one; default 'localhost'. */
  defaultHostname?: string;
  /** Size of the tmpfs /tmp; default the memory limit, or 1 GiB without one. */
  tmpfsBytes?: number;
  /** Name of the worker, recorded in the containers' labels. */
  workerName?: string;
  logger?: Logger;
}

export interface DockerReady {
  engine: string;
  apiVersion: string;
  storageDriver: string;
  /** Containers of dead predecessors removed at start. */
  swept: number;
}

/** Labels every container of this runner carries. */
export const LABEL_RUNNER = 'reapi.runner';
export const LABEL_HOST = 'reapi.host';
export const LABEL_PID = 'reapi.pid';
export const LABEL_PID_START = 'reapi.pid-start';
export const LABEL_INSTANCE = 'reapi.instance';
export const LABEL_WORKER = 'reapi.worker';

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const HELPER_CANDIDATES = ['/bin/busybox', '/usr/bin/busybox'];
const LIMIT_POLL_MS = 50;
/** How long creating and starting a container may take before the run fails as a sandbox error. */
const SETUP_TIMEOUT_MS = 60_000;
/** Image lookups are cached this long (an image re-imported under the same tag is seen after it). */
const IMAGE_CACHE_MS = 10_000;

/** unix:///p, tcp://h:p, http(s)://h:p or a path -> dockerode options. */
export function dockerOptions(host: string | undefined): Docker.DockerOptions {
  const h = host ?? process.env.DOCKER_HOST ?? 'unix:///var/run/docker.sock';
  if (h.startsWith('unix://')) return { socketPath: h.slice('unix://'.length) };
  if (h.startsWith('/')) return { socketPath: h };
  const m = /^(tcp|http|https):\/\/([^:/]+)(?::(\d+))?\/?$/.exec(h);
  if (!m) throw new Error(`unsupported Docker host "${h}" (use unix:///path or tcp://host:port)`);
  return { protocol: m[1] === 'https' ? 'https' : 'http', host: m[2]!, port: Number(m[3] ?? (m[1] === 'https' ? 2376 : 2375)) };
}

/** What a container is created with; runs with equal keys can share warm containers. */
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

interface Slot {
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

interface ImageInfo {
  id: string;
  env: Record<string, string>;
  at: number;
}

function formatSeconds(ms: number): string {
  return String(Number((ms / 1000).toFixed(3)));
}

function formatMiB(bytes: number): string {
  return String(Number((bytes / 2 ** 20).toFixed(1)));
}

/** `unref`: a timer that does not keep the process alive (a bound on a wait, not a delay). */
const sleep = (ms: number, unref = false) =>
  new Promise<void>((r) => {
    const t = setTimeout(r, ms);
    if (unref) t.unref();
  });


/** Renames every entry of `from` into `to`; on failure puts back what it moved and rethrows. */
async function moveEntries(from: string, to: string): Promise<void> {
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

function isNotFound(e: unknown): boolean {
  return (e as { statusCode?: number }).statusCode === 404;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

export class DockerRunner {
  readonly name = 'docker';
  readonly docker: Docker;
  private readonly opts: {
    uid: number;
    gid: number;
    warm: number;
    warmIdleMs: number;
    defaultHostname: string;
    tmpfsBytes?: number;
    workerName: string;
    helper?: string;
  };
  /** This runner's label value of LABEL_INSTANCE. */
  readonly instance = randomBytes(4).toString('hex');
  private readonly stateDir: string;
  private readonly ownsStateDir: boolean;
  private readonly logger: Logger | undefined;
  private readonly images = new Map<string, Promise<ImageInfo>>();
  private readonly pools = new Map<string, Pool>();
  private readonly pending = new Set<Promise<unknown>>();
  private prepared: Promise<{ ready: DockerReady; helper: string; labels: Record<string, string> }> | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private seq = 0;
  private disposed = false;
  /** Runs that took a warm container / created their own; for tests and the benchmark. */
  readonly counts = { warm: 0, cold: 0 };

  constructor(options: DockerRunnerOptions = {}) {
    this.docker = options.docker ?? new Docker(dockerOptions(options.host));
    this.opts = {
      uid: options.uid ?? 65534,
      gid: options.gid ?? 65534,
      warm: options.warmContainers ?? 2,
      warmIdleMs: options.warmIdleMs ?? 10 * 60_000,
      defaultHostname: options.defaultHostname ?? 'localhost',
      workerName: options.workerName ?? `${osHostname()}:${process.pid}`,
      ...(options.tmpfsBytes !== undefined ? { tmpfsBytes: options.tmpfsBytes } : {}),
      ...(options.helper !== undefined ? { helper: options.helper } : {}),
    };
    this.ownsStateDir = options.stateDir === undefined;
    this.stateDir = options.stateDir ?? join(tmpdir(), `reapi-docker-${process.pid}-${this.instance}`);
    this.logger = options.logger;
  }

  /**
   * One-time setup: reach the engine, find the wrapper, sweep containers of dead predecessors.
   * Called lazily by run(); call it at worker start to fail fast (and to advertise containers only
   * when the engine answers).
   */
  ready(): Promise<DockerReady> {
    this.prepared ??= this.prepare();
    return this.prepared.then((p) => p.ready);
  }

  private async prepare() {
    const [version, info] = await Promise.all([this.docker.version(), this.docker.info() as Promise<{ Driver?: string }>]);
    let helper = this.opts.helper;
    if (helper === undefined) {
      for (const c of HELPER_CANDIDATES) {
        if (await isStaticElf(c)) {
          helper = await realpath(c);
          break;
        }
      }
      if (!helper) throw new Error(`docker runner needs a static busybox on the host (${HELPER_CANDIDATES.join(' or ')}; apt-get install busybox-static)`);
    } else if (!(await isStaticElf(helper))) {
      throw new Error(`docker runner helper ${helper} is not a static executable`);
    }
    const labels = {
      [LABEL_RUNNER]: 'docker',
      [LABEL_HOST]: osHostname(),
      [LABEL_PID]: String(process.pid),
      [LABEL_PID_START]: (await processStartTime(process.pid)) ?? '',
      [LABEL_INSTANCE]: this.instance,
      [LABEL_WORKER]: this.opts.workerName,
    };
    const swept = await this.sweep(labels);
    if (!this.ownsStateDir) await rm(this.stateDir, { recursive: true, force: true });
    await mkdir(this.stateDir, { recursive: true, mode: 0o700 });
    this.idleTimer = setInterval(() => this.expireIdlePools(), Math.min(60_000, this.opts.warmIdleMs));
    this.idleTimer.unref();
    const ready: DockerReady = {
      engine: version.Version,
      apiVersion: version.ApiVersion,
      storageDriver: info.Driver ?? '?',
      swept,
    };
    this.logger?.info({ ...ready, helper, stateDir: this.stateDir }, 'docker runner ready');
    return { ready, helper, labels };
  }

  /**
   * Removes containers (running or not) left on this engine by a reapi worker process of this
   * host that is gone; also the temp state dirs of such runners. Live workers' are kept.
   */
  private async sweep(own: Record<string, string>): Promise<number> {
    const list = await this.docker.listContainers({
      all: true,
      filters: JSON.stringify({ label: [`${LABEL_RUNNER}=docker`, `${LABEL_HOST}=${own[LABEL_HOST]}`] }),
    });
    let removed = 0;
    for (const c of list) {
      const pid = Number(c.Labels[LABEL_PID]);
      const start = c.Labels[LABEL_PID_START] ?? '';
      if (Number.isInteger(pid) && pid > 0 && pidAlive(pid) && (await processStartTime(pid)) === start) continue;
      try {
        await this.docker.getContainer(c.Id).remove({ force: true, v: true });
        removed++;
      } catch (e) {
        if (!isNotFound(e)) this.logger?.warn({ err: e, container: c.Names[0] }, 'could not remove a stale container');
      }
    }
    if (removed) this.logger?.info({ removed }, 'removed containers left by a worker that is gone');
    // Default state dirs of dead runners: reapi-docker-<pid>-<instance>.
    for (const name of await readdir(tmpdir()).catch(() => [] as string[])) {
      const m = /^reapi-docker-(\d+)-[0-9a-f]{8}$/.exec(name);
      if (m && Number(m[1]) !== process.pid && !pidAlive(Number(m[1]))) await rm(join(tmpdir(), name), { recursive: true, force: true }).catch(() => {});
    }
    return removed;
  }

  /** A Runner for actions in `image` (the platform's container-image value). */
  forImage(image: string): Runner {
    return { name: this.name, run: (spec, signal) => this.run(image, spec, signal) };
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

  /** Removes warm containers and waits for pending removals; the runner cannot be used after. */
  async dispose(): Promise<void> {
    this.disposed = true;
    if (this.idleTimer) clearInterval(this.idleTimer);
    for (const pool of this.pools.values()) for (const slot of pool.ready.splice(0)) this.discard(slot);
    await this.settled();
    if (this.prepared) await rm(this.stateDir, { recursive: true, force: true }).catch(() => {});
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p)).catch(() => {});
    return p;
  }

  /** Removes a container (killing it) and its state directory, in the background. */
  private discard(slot: Slot): void {
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

  /** The image's id and environment; FAILED_PRECONDITION when the engine does not have it. */
  private image(ref: string, display: string): Promise<ImageInfo> {
    const cached = this.images.get(ref);
    if (cached) {
      return cached.then((info) => {
        if (Date.now() - info.at < IMAGE_CACHE_MS) return info;
        this.images.delete(ref);
        return this.image(ref, display);
      });
    }
    const p = (async (): Promise<ImageInfo> => {
      let inspect: { Id: string; Config?: { Env?: string[] | null } };
      try {
        inspect = (await this.docker.getImage(ref).inspect()) as typeof inspect;
      } catch (e) {
        if (isNotFound(e)) throw this.missingImage(ref, display);
        throw e;
      }
      const env: Record<string, string> = {};
      for (const kv of inspect.Config?.Env ?? []) {
        const i = kv.indexOf('=');
        if (i > 0) env[kv.slice(0, i)] = kv.slice(i + 1);
      }
      return { id: inspect.Id, env, at: Date.now() };
    })();
    this.images.set(ref, p);
    p.catch(() => this.images.delete(ref));
    return p;
  }

  private missingImage(ref: string, display: string) {
    return failedPrecondition(
      `container image "${ref}" (${CONTAINER_IMAGE}=${display}) is not present in the Docker engine of worker ${this.opts.workerName}, ` +
        `and images are never pulled: import it there first, e.g. \`${importHint(ref)}\``,
    );
  }

  // -------------------------------------------------------------------------------------------
  // Containers

  private async createSlot(config: SlotConfig, warm: boolean, execRoot?: string): Promise<Slot> {
    const p = await this.prepared!;
    const name = `reapi-${process.pid}-${this.instance}-${++this.seq}`;
    const dir = join(this.stateDir, name);
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
      container = await this.docker.createContainer({
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
  private async startSlot(slot: Slot): Promise<void> {
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
            await this.startSlot(slot);
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

  // -------------------------------------------------------------------------------------------
  // Running

  async run(imageValue: string, spec: RunSpec, signal: AbortSignal): Promise<RunOutcome> {
    const startedAt = new Date();
    const fail = (failure: RunFailure, exitCode = -1): RunOutcome => failedRun(failure, startedAt, exitCode);
    if (signal.aborted) return fail({ kind: 'cancelled', message: 'action cancelled before it started' });
    const ref = parseImage(imageValue);
    if (!ref) throw failedPrecondition(`${CONTAINER_IMAGE}="${imageValue}" is not a Docker image reference (expected docker://NAME:TAG)`);

    const v: Variation = spec.variation ?? {};
    const mount = v.execRootMount ?? '/work';
    const wd = posix.normalize(spec.workingDirectory === '' ? '.' : spec.workingDirectory);
    if (!isAbsolute(mount) || mount === '/' || mount.startsWith('/.reapi')) {
      return fail({ kind: 'sandbox-error', message: `execRootMount not usable: ${mount}` });
    }
    if (posix.isAbsolute(wd) || wd === '..' || wd.startsWith('../')) {
      return fail({ kind: 'sandbox-error', message: `working directory escapes the exec root: ${spec.workingDirectory}` });
    }
    if (spec.argv.length === 0) return fail({ kind: 'sandbox-error', message: 'empty argv' });

    try {
      this.prepared ??= this.prepare();
      await this.prepared;
    } catch (e) {
      return fail({ kind: 'sandbox-error', message: `docker runner setup failed: ${(e as Error).message}` });
    }
    if (this.disposed) return fail({ kind: 'sandbox-error', message: 'docker runner disposed' });
    // Not present: the client's problem (FAILED_PRECONDITION), thrown to the executor.
    const image = await this.image(ref, imageValue);

    const config: SlotConfig = {
      image: ref,
      imageId: image.id,
      mount,
      hostname: v.hostname ?? this.opts.defaultHostname,
      uid: v.uid ?? this.opts.uid,
      gid: v.gid ?? this.opts.gid,
      memoryBytes: spec.limits.memoryBytes,
      maxProcesses: spec.limits.maxProcesses,
      maxFileBytes: spec.limits.maxFileBytes,
      cpus: v.cpus ?? 0,
    };

    const env: Record<string, string> = { ...image.env, ...spec.env };
    if (!('PATH' in env)) env.PATH = DEFAULT_PATH;
    if (v.tz !== undefined && !('TZ' in spec.env)) env.TZ = v.tz;
    if (v.locale !== undefined && !('LANG' in spec.env) && !('LC_ALL' in spec.env)) env.LANG = v.locale;
    // variation.extraEnv (libfaketime's LD_PRELOAD) names host paths the image does not have.
    const script = wrapperScript({ umask: v.umask ?? 0o022, cwd: posix.join(mount, wd), env, argv: spec.argv });

    let slot: Slot | undefined;
    let moved = false;
    try {
      if (process.getuid?.() === 0) await chownDirs(spec.execRoot, config.uid, config.gid);
      // Warm containers serve runs without a variation; other runs create their own.
      if (spec.variation === undefined && this.opts.warm > 0) {
        const key = JSON.stringify(config);
        let pool = this.pools.get(key);
        if (!pool) {
          pool = { config, ready: [], creating: 0, lastUsed: 0 };
          this.pools.set(key, pool);
        }
        pool.lastUsed = Date.now();
        const taken = pool.ready.shift();
        this.fill(key);
        if (taken?.root) {
          try {
            await moveEntries(spec.execRoot, taken.root);
            slot = taken;
            moved = true;
            this.counts.warm++;
          } catch {
            // Another filesystem or a mount point: this run needs a container of its own, and
            // the untouched warm container goes back.
            pool.ready.unshift(taken);
          }
        }
      }
      const cold = !slot;
      if (!slot) {
        this.counts.cold++;
        slot = await this.createSlot(config, false, spec.execRoot);
      }
      try {
        return await this.execute(spec, signal, slot, script, cold, startedAt);
      } catch (e) {
        // Whatever the container may have started must be gone before the exec root moves back.
        const c = slot.container;
        await c.kill({ signal: 'SIGKILL' }).catch(() => {});
        await Promise.race([c.wait().catch(() => {}), sleep(10_000, true)]);
        throw e;
      } finally {
        if (moved) await moveEntries(slot.root!, spec.execRoot);
      }
    } catch (e) {
      if ((e as { statusCode?: number }).statusCode === 404 && /image/i.test((e as Error).message)) {
        this.images.delete(ref);
        throw this.missingImage(ref, imageValue);
      }
      return fail({ kind: 'sandbox-error', message: `container setup failed: ${(e as Error).message}` });
    } finally {
      if (slot) this.discard(slot);
    }
  }

  /** Hands the script to the wrapper (blocked opening the FIFO); retries until it is there. */
  private async deliver(slot: Slot, text: string, deadline: number): Promise<void> {
    const fifo = join(slot.dir, 'ctl', SCRIPT_FIFO);
    for (let i = 0; ; i++) {
      try {
        const fh = await open(fifo, fsConstants.O_WRONLY | fsConstants.O_NONBLOCK);
        try {
          // A pipe in non-blocking mode takes at most its buffer per write; wait for room.
          const data = Buffer.from(text);
          let off = 0;
          while (off < data.length) {
            try {
              off += (await fh.write(data, off, data.length - off)).bytesWritten;
            } catch (e) {
              if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
              if (Date.now() > deadline) throw new Error('the container stopped reading its script');
              await sleep(1);
            }
          }
        } finally {
          await fh.close();
        }
        return;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENXIO') throw e;
        // No reader yet: the wrapper has not reached open() (just started), or is gone.
        if (Date.now() > deadline) throw new Error('the container did not start its wrapper');
        if (i % 50 === 49) {
          const info = (await slot.container.inspect()) as { State?: { Running?: boolean; ExitCode?: number } };
          if (!info.State?.Running) throw new Error(`the container exited before its action started (exit ${info.State?.ExitCode})`);
        }
        await sleep(i < 20 ? 1 : 5);
      }
    }
  }

  /**
   * Waits until the container holds no process but its wrapper (a forged marker came while the
   * action still ran), or the container ends. False when the cgroup cannot be read.
   */
  private async onlyWrapperLeft(slot: Slot, ended: Promise<void>): Promise<boolean> {
    const { cgroup, pid } = slot;
    if (!cgroup || !pid) return false;
    let over = false;
    void ended.then(() => (over = true));
    for (;;) {
      let others: number;
      try {
        others = await cgroup.othersThan(pid);
      } catch {
        return false;
      }
      if (others === 0 || over) return true;
      await sleep(LIMIT_POLL_MS);
    }
  }

  private async execute(spec: RunSpec, signal: AbortSignal, slot: Slot, script: ReturnType<typeof wrapperScript>, cold: boolean, startedAt: Date): Promise<RunOutcome> {
    const demux = new AttachDemux(spec.maxOutputBytes, script);
    const stream = (await slot.container.attach({ stream: true, stdout: true, stderr: true, logs: false })) as NodeJS.ReadableStream & { destroy?: () => void };
    const streamEnded = new Promise<void>((resolve) => {
      stream.on('data', (c: Buffer) => demux.write(c));
      stream.on('end', resolve);
      stream.on('close', resolve);
      stream.on('error', () => resolve());
    });
    const setupDeadline = Date.now() + SETUP_TIMEOUT_MS;
    if (cold) await this.startSlot(slot);

    let killedFor: RunFailure | undefined;
    const kill = (failure: RunFailure) => {
      if (killedFor) return;
      killedFor = failure;
      slot.container.kill({ signal: 'SIGKILL' }).catch(() => {});
    };
    const timers: NodeJS.Timeout[] = [];
    const onAbort = () => kill({ kind: 'cancelled', message: 'action cancelled' });
    try {
      signal.addEventListener('abort', onAbort, { once: true });
      if (signal.aborted) onAbort();
      if (!killedFor) await this.deliver(slot, script.text, setupDeadline);
      if (spec.timeoutMs > 0) {
        timers.push(setTimeout(() => kill({ kind: 'timeout', message: `action timed out after ${formatSeconds(spec.timeoutMs)} s` }), spec.timeoutMs));
      }
      const cg = slot.cgroup;
      const limitFailure = (ev: { oomKills: number; pidsLimitHits: number }): RunFailure | undefined => {
        if (ev.oomKills > 0) return { kind: 'memory-limit', message: `memory limit of ${formatMiB(spec.limits.memoryBytes)} MiB exceeded` };
        if (ev.pidsLimitHits > 0) return { kind: 'process-limit', message: `process limit of ${spec.limits.maxProcesses} reached` };
        return undefined;
      };
      if (cg && (spec.limits.memoryBytes > 0 || spec.limits.maxProcesses > 0)) {
        let polling = false;
        timers.push(
          setInterval(() => {
            if (polling || killedFor || demux.complete) return;
            polling = true;
            cg.limitEvents()
              .then((ev) => {
                const f = limitFailure(ev);
                if (f && !demux.complete) kill(f);
              })
              .catch(() => {})
              .finally(() => (polling = false));
          }, LIMIT_POLL_MS),
        );
      }

      // The end: both markers (the wrapper saw the action and everything it started end), or
      // the attach stream ending (the container was killed or died). Markers are checked against
      // the container's cgroup, never trusted: an action can print them itself.
      await Promise.race([demux.markers(), streamEnded]);
      if (demux.complete && !killedFor && !(await this.onlyWrapperLeft(slot, streamEnded))) {
        // No cgroup to check: stop the container, so that nothing of the action can still run
        // when its outputs are collected.
        await slot.container.kill({ signal: 'SIGKILL' }).catch(() => {});
        await Promise.race([slot.container.wait().catch(() => {}), sleep(10_000, true)]);
      }
      for (const t of timers) clearTimeout(t);
      const completedAt = new Date();
      const usage = { userCpuMs: 0, systemCpuMs: 0, maxRssBytes: 0 };
      let exitCode: number;
      let failure: RunFailure | undefined = killedFor;
      if (demux.complete && !killedFor) {
        exitCode = demux.status!;
        stream.destroy?.();
        if (cg) {
          try {
            const st = await cg.stats();
            usage.userCpuMs = st.userCpuMs;
            usage.systemCpuMs = st.systemCpuMs;
            usage.maxRssBytes = st.maxRssBytes;
            if (exitCode !== 0) failure = limitFailure(st);
          } catch {
            // Accounting is best effort.
          }
        }
        if (exitCode === STATUS_NO_WORKDIR) {
          failure = { kind: 'sandbox-error', message: `cannot enter the working directory ${spec.workingDirectory}` };
          exitCode = -1;
        }
      } else {
        // Killed (by us or otherwise): wait until the engine has the container down, so nothing in
        // it still writes to the exec root.
        if (!killedFor) await streamEnded;
        await Promise.race([streamEnded, sleep(10_000, true)]);
        demux.end();
        const info = (await slot.container.wait().catch(() => undefined)) as { StatusCode?: number } | undefined;
        exitCode = killedFor ? 137 : (info?.StatusCode ?? -1);
        if (!failure) {
          const state = ((await slot.container.inspect().catch(() => undefined)) as { State?: { OOMKilled?: boolean } } | undefined)?.State;
          failure = state?.OOMKilled
            ? { kind: 'memory-limit', message: `memory limit of ${formatMiB(spec.limits.memoryBytes)} MiB exceeded` }
            : { kind: 'sandbox-error', message: `the container ended unexpectedly (exit ${exitCode})` };
        }
      }
      if (!failure && spec.limits.maxFileBytes > 0 && exitCode === 128 + 25) {
        failure = { kind: 'file-size-limit', message: `file size limit of ${spec.limits.maxFileBytes} bytes exceeded` };
      }
      const outcome: RunOutcome = {
        exitCode,
        stdout: demux.stdout.out.toBuffer(),
        stderr: demux.stderr.out.toBuffer(),
        truncated: demux.stdout.out.truncated || demux.stderr.out.truncated,
        startedAt,
        completedAt,
        usage,
      };
      if (failure) outcome.failure = failure;
      return outcome;
    } finally {
      for (const t of timers) clearTimeout(t);
      signal.removeEventListener('abort', onAbort);
      stream.destroy?.();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Worker wiring

/** The image a job asks for, when its platform names one. */
export function containerImageOf(platform: Record<string, string>): string | undefined {
  return platform[CONTAINER_IMAGE];
}

/**
 * Chooses the runner of each job: jobs whose platform has `container-image` run in Docker (or
 * fail with FAILED_PRECONDITION when this worker has no engine), all others on `fallback`.
 */
export function runnerSelector(fallback: Runner, docker: DockerRunner | undefined): (platform: Record<string, string>) => Runner {
  const noEngine: Runner = {
    name: 'docker',
    run: () => Promise.reject(failedPrecondition(`this worker has no Docker engine, so it cannot run ${CONTAINER_IMAGE} actions (start one: scripts/docker/start-dockerd.sh)`)),
  };
  return (platform) => {
    const image = containerImageOf(platform);
    if (image === undefined) return fallback;
    return docker ? docker.forImage(image) : noEngine;
  };
}

export interface DockerWorkerSettings {
  enabled: boolean | 'auto';
  host?: string;
  uid: number;
  gid: number;
  warmContainers: number;
}

/**
 * The worker's DockerRunner per config: `enabled: true` requires a reachable engine; 'auto' uses
 * one when `host`, $DOCKER_HOST or /var/run/docker.sock leads to an engine that answers.
 * Undefined when containers are not available (the worker then does not advertise them).
 */
export async function startDockerRunner(
  settings: DockerWorkerSettings,
  opts: { logger: Logger; workerName: string; stateDir: string },
): Promise<DockerRunner | undefined> {
  if (settings.enabled === false) return undefined;
  const host = settings.host ?? process.env.DOCKER_HOST;
  if (settings.enabled === 'auto' && host === undefined && !existsSync('/var/run/docker.sock')) return undefined;
  const runner = new DockerRunner({
    ...(host !== undefined ? { host } : {}),
    uid: settings.uid,
    gid: settings.gid,
    warmContainers: settings.warmContainers,
    stateDir: opts.stateDir,
    workerName: opts.workerName,
    logger: opts.logger,
  });
  try {
    await runner.ready();
    return runner;
  } catch (e) {
    await runner.dispose().catch(() => {});
    if (settings.enabled === true) throw new Error(`Docker engine ${host ?? 'unix:///var/run/docker.sock'} not usable: ${(e as Error).message}`);
    opts.logger.warn({ err: e, host: host ?? 'unix:///var/run/docker.sock' }, `no Docker engine: ${CONTAINER_IMAGE} actions will not be taken by this worker`);
    return undefined;
  }
}
