// The Docker engine as the runner uses it: reach it, find the in-container wrapper (the host's
// static busybox), label containers with this worker process, remove what a crashed predecessor
// on this host left behind, and look up images (never pulled). See docker-runner.ts for how runs
// use containers.
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, realpath, rm } from 'node:fs/promises';
import { hostname as osHostname, tmpdir } from 'node:os';
import { join } from 'node:path';

import Docker from 'dockerode';

import { failedPrecondition } from '../../common/errors.ts';
import type { Logger } from '../../common/logger.ts';
import { CONTAINER_IMAGE, importHint, isStaticElf, processStartTime } from './docker-support.ts';

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

const HELPER_CANDIDATES = ['/bin/busybox', '/usr/bin/busybox'];
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

export interface ImageInfo {
  id: string;
  env: Record<string, string>;
  at: number;
}

export function isNotFound(e: unknown): boolean {
  return (e as { statusCode?: number }).statusCode === 404;
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/** What the engine gave the runner at setup: its answer, the wrapper and the labels to put on containers. */
export interface Prepared {
  ready: DockerReady;
  helper: string;
  labels: Record<string, string>;
}

export class DockerEngine {
  readonly docker: Docker;
  /** This runner's label value of LABEL_INSTANCE. */
  readonly instance = randomBytes(4).toString('hex');
  readonly stateDir: string;
  readonly workerName: string;
  private readonly ownsStateDir: boolean;
  private readonly helper: string | undefined;
  private readonly images = new Map<string, Promise<ImageInfo>>();
  private prepared: Promise<Prepared> | undefined;

  constructor(
    options: DockerRunnerOptions,
    private readonly logger: Logger | undefined,
  ) {
    this.docker = options.docker ?? new Docker(dockerOptions(options.host));
    this.workerName = options.workerName ?? `${osHostname()}:${process.pid}`;
    this.helper = options.helper;
    this.ownsStateDir = options.stateDir === undefined;
    this.stateDir = options.stateDir ?? join(tmpdir(), `reapi-docker-${process.pid}-${this.instance}`);
  }

  /** One-time setup, shared by every caller; rejects when the engine or the wrapper is not usable. */
  prepare(): Promise<Prepared> {
    this.prepared ??= this.setUp();
    return this.prepared;
  }

  /** Whether setup was started (so there is a state directory to remove). */
  get started(): boolean {
    return this.prepared !== undefined;
  }

  private async setUp(): Promise<Prepared> {
    const [version, info] = await Promise.all([this.docker.version(), this.docker.info() as Promise<{ Driver?: string }>]);
    let helper = this.helper;
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
      [LABEL_WORKER]: this.workerName,
    };
    const swept = await this.sweep(labels);
    if (!this.ownsStateDir) await rm(this.stateDir, { recursive: true, force: true });
    await mkdir(this.stateDir, { recursive: true, mode: 0o700 });
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

  /** The image's id and environment; FAILED_PRECONDITION when the engine does not have it. */
  image(ref: string, display: string): Promise<ImageInfo> {
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

  /** FAILED_PRECONDITION: the engine does not have the image (and never pulls). */
  missingImage(ref: string, display: string) {
    return failedPrecondition(
      `container image "${ref}" (${CONTAINER_IMAGE}=${display}) is not present in the Docker engine of worker ${this.workerName}, ` +
        `and images are never pulled: import it there first, e.g. \`${importHint(ref)}\``,
    );
  }

  /** Forget a cached image lookup (the engine said it is gone). */
  forgetImage(ref: string): void {
    this.images.delete(ref);
  }
}
