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

import { constants as fsConstants, existsSync } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import { join, posix } from 'node:path';

import { failedPrecondition, messageOf, wrap } from '../../common/errors.ts';
import type { Logger } from '../../common/logger.ts';
import { failedRun, type RunFailure, type RunOutcome, type RunSpec, type Runner, type Variation } from '../../execution/runner.ts';
import { ContainerPool, moveEntries, type Slot, type SlotConfig } from './container-pool.ts';
import { DockerEngine, type DockerReady, type DockerRunnerOptions } from './docker-engine.ts';
import { AttachDemux, CONTAINER_IMAGE, parseImage, SCRIPT_FIFO, STATUS_NO_WORKDIR, wrapperScript } from './docker-support.ts';
import { chownDirs } from './exec-root-ownership.ts';
import { accounting, checkSpec, fileSizeFailure, isFailure, limitFailure, LIMIT_POLL_MS, Watchdog } from './supervision.ts';

export { CONTAINER_IMAGE, parseImage } from './docker-support.ts';
export { LABEL_HOST, LABEL_INSTANCE, LABEL_PID, LABEL_PID_START, LABEL_RUNNER, LABEL_WORKER, dockerOptions, type DockerReady, type DockerRunnerOptions } from './docker-engine.ts';

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** How long creating and starting a container may take before the run fails as a sandbox error. */
const SETUP_TIMEOUT_MS = 60_000;

/** `unref`: a timer that does not keep the process alive (a bound on a wait, not a delay). */
const sleep = (ms: number, unref = false) =>
  new Promise<void>((r) => {
    const t = setTimeout(r, ms);
    if (unref) t.unref();
  });

export class DockerRunner implements Runner {
  readonly name = 'docker';
  private readonly engine: DockerEngine;
  private readonly pool: ContainerPool;
  private readonly opts: { uid: number; gid: number; defaultHostname: string };
  private disposed = false;

  constructor(options: DockerRunnerOptions = {}) {
    this.engine = new DockerEngine(options, options.logger);
    this.pool = new ContainerPool(
      this.engine,
      { warm: options.warmContainers ?? 2, warmIdleMs: options.warmIdleMs ?? 10 * 60_000, ...(options.tmpfsBytes !== undefined ? { tmpfsBytes: options.tmpfsBytes } : {}) },
      options.logger,
    );
    this.opts = { uid: options.uid ?? 65534, gid: options.gid ?? 65534, defaultHostname: options.defaultHostname ?? 'localhost' };
  }

  /**
   * One-time setup: reach the engine, find the wrapper, sweep containers of dead predecessors.
   * Called lazily by run(); call it at worker start to fail fast (and to advertise containers only
   * when the engine answers).
   */
  async ready(): Promise<DockerReady> {
    return (await this.engine.prepare()).ready;
  }

  get docker() {
    return this.engine.docker;
  }

  /** This runner's label value of LABEL_INSTANCE. */
  get instance(): string {
    return this.engine.instance;
  }

  /** Runs that took a warm container / created their own; for tests and the benchmark. */
  get counts(): { warm: number; cold: number } {
    return this.pool.counts;
  }

  /** Warm containers started and waiting for an action, over all images and limits. */
  get warmReady(): number {
    return this.pool.warmReady;
  }

  /** A Runner for actions in `image` whatever their platform says (tests, benchmarks). */
  forImage(image: string): Runner {
    return { name: this.name, run: (spec, signal) => this.run({ ...spec, platform: { ...spec.platform, [CONTAINER_IMAGE]: image } }, signal) };
  }

  /** Waits until every container removal started so far has finished. */
  settled(): Promise<void> {
    return this.pool.settled();
  }

  /** Removes warm containers and waits for pending removals; the runner cannot be used after. */
  async dispose(): Promise<void> {
    this.disposed = true;
    await this.pool.dispose();
    if (this.engine.started) await rm(this.engine.stateDir, { recursive: true, force: true }).catch(() => {});
  }

  /** Runs the action in the image its platform names (`container-image`). */
  async run(spec: RunSpec, signal: AbortSignal): Promise<RunOutcome> {
    const startedAt = new Date();
    const fail = (failure: RunFailure, exitCode = -1): RunOutcome => failedRun(failure, startedAt, exitCode);
    const imageValue = spec.platform?.[CONTAINER_IMAGE];
    if (imageValue === undefined) throw failedPrecondition(`a Docker run needs the platform property ${CONTAINER_IMAGE}`);
    if (signal.aborted) return fail({ kind: 'cancelled', message: 'action cancelled before it started' });
    const ref = parseImage(imageValue);
    if (!ref) throw failedPrecondition(`${CONTAINER_IMAGE}="${imageValue}" is not a Docker image reference (expected docker://NAME:TAG)`);

    const v: Variation = spec.variation ?? {};
    const paths = checkSpec(spec, (m) => m === '/' || m.startsWith('/.reapi'));
    if (isFailure(paths)) return fail(paths);
    const { mount, workingDirectory: wd } = paths;

    try {
      await this.engine.prepare();
    } catch (e) {
      return fail({ kind: 'sandbox-error', message: `docker runner setup failed: ${messageOf(e)}` });
    }
    if (this.disposed) return fail({ kind: 'sandbox-error', message: 'docker runner disposed' });
    // Not present: the client's problem (FAILED_PRECONDITION), thrown to the executor.
    const image = await this.engine.image(ref, imageValue);

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
      if (spec.variation === undefined) {
        slot = await this.pool.take(config, spec.execRoot);
        moved = slot !== undefined;
      }
      const cold = !slot;
      slot ??= await this.pool.create(config, spec.execRoot);
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
        this.engine.forgetImage(ref);
        throw this.engine.missingImage(ref, imageValue);
      }
      return fail({ kind: 'sandbox-error', message: `container setup failed: ${messageOf(e)}` });
    } finally {
      if (slot) this.pool.discard(slot);
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
    if (cold) await this.pool.start(slot);

    const cg = slot.cgroup;
    const watchdog = new Watchdog({
      spec,
      signal,
      kill: () => void slot.container.kill({ signal: 'SIGKILL' }).catch(() => {}),
      ...(cg ? { limitEvents: () => cg.limitEvents() } : {}),
      over: () => demux.complete,
    });
    try {
      if (!watchdog.killedFor) await this.deliver(slot, script.text, setupDeadline);
      watchdog.startClock();

      // The end: both markers (the wrapper saw the action and everything it started end), or
      // the attach stream ending (the container was killed or died). Markers are checked against
      // the container's cgroup, never trusted: an action can print them itself.
      await Promise.race([demux.markers(), streamEnded]);
      if (demux.complete && !watchdog.killedFor && !(await this.onlyWrapperLeft(slot, streamEnded))) {
        // No cgroup to check: stop the container, so that nothing of the action can still run
        // when its outputs are collected.
        await slot.container.kill({ signal: 'SIGKILL' }).catch(() => {});
        await Promise.race([slot.container.wait().catch(() => {}), sleep(10_000, true)]);
      }
      watchdog.stop();
      const completedAt = new Date();
      let usage: RunOutcome['usage'] = { userCpuMs: 0, systemCpuMs: 0, maxRssBytes: 0 };
      let exitCode: number;
      const killedFor = watchdog.killedFor;
      let failure: RunFailure | undefined = killedFor;
      if (demux.complete && !killedFor) {
        exitCode = demux.status!;
        stream.destroy?.();
        const used = await accounting(cg, spec.limits, exitCode);
        usage = used.usage;
        failure = used.limit;
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
          failure = (state?.OOMKilled ? limitFailure({ oomKills: 1, pidsLimitHits: 0 }, spec.limits) : undefined) ?? {
            kind: 'sandbox-error',
            message: `the container ended unexpectedly (exit ${exitCode})`,
          };
        }
      }
      failure ??= fileSizeFailure(exitCode, spec.limits);
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
      watchdog.stop();
      stream.destroy?.();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Worker wiring

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
    if (settings.enabled === true) throw wrap(e, `Docker engine ${host ?? 'unix:///var/run/docker.sock'} not usable`);
    opts.logger.warn({ err: e, host: host ?? 'unix:///var/run/docker.sock' }, `no Docker engine: ${CONTAINER_IMAGE} actions will not be taken by this worker`);
    return undefined;
  }
}
