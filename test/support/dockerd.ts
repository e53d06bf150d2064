// A private Docker daemon for tests and benchmarks: started by scripts/docker/start-dockerd.sh in a
// fresh temp dir (overlay2, --bridge=none, --iptables=false, its own socket), with the base images
// imported by scripts/docker/build-images.sh. Never touches a system daemon or /var/run/docker.sock.
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { findOnPath } from './commands.ts';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import Docker from 'dockerode';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const START_DOCKERD = join(REPO, 'scripts', 'docker', 'start-dockerd.sh');
export const BUILD_IMAGES = join(REPO, 'scripts', 'docker', 'build-images.sh');
export const BUSYBOX_IMAGE = 'reapi-busybox:latest';

const run = promisify(execFile);

/** Why Docker tests cannot run here, or false when they can. */
export function dockerSkipReason(): string | false {
  if (process.getuid?.() !== 0) return 'needs root (dockerd)';
  for (const [cmd, pkg] of [['dockerd', 'docker.io'], ['docker', 'docker.io'], ['curl', 'curl']] as const) {
    if (!findOnPath(cmd)) return `${cmd} is not installed (apt-get install ${pkg}; scripts/bootstrap.sh --test)`;
  }
  if (!existsSync('/bin/busybox') || !existsSync('/bin/bash-static')) return 'busybox-static and bash-static are needed for the test image';
  if (!readFileSync('/proc/filesystems', 'utf8').includes('overlay')) return 'the kernel has no overlay filesystem';
  return false;
}

export interface TestDockerd {
  root: string;
  socket: string;
  /** DOCKER_HOST value: unix://<socket>. */
  host: string;
  docker: Docker;
  /** `docker` CLI environment for this daemon. */
  env: NodeJS.ProcessEnv;
  /** Containers of this daemon (all states) carrying a label `key` (or key=value). */
  containers(label?: string): Promise<Docker.ContainerInfo[]>;
  stop(): Promise<void>;
}

/** Starts a daemon and imports the images asked for (default: busybox). */
export async function startDockerd(opts: { images?: Array<'busybox' | 'debian' | 'reapi'> } = {}): Promise<TestDockerd> {
  const root = await mkdtemp(join(tmpdir(), 'reapi-dockerd-'));
  const socket = join(root, 'docker.sock');
  const host = `unix://${socket}`;
  const env = { ...process.env, DOCKER_HOST: host };
  const pidFile = join(root, 'dockerd.pid');
  const kill = () => {
    try {
      process.kill(Number(readFileSync(pidFile, 'utf8')), 'SIGKILL');
    } catch {
      // Not running.
    }
  };
  // A test process that dies must not leave its daemon behind.
  process.once('exit', kill);
  try {
    await run(START_DOCKERD, ['--root', root, '--socket', socket], { env });
    await run(BUILD_IMAGES, opts.images ?? ['busybox'], { env, maxBuffer: 16 << 20 });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    kill();
    throw new Error(`could not start a test dockerd: ${err.stderr ?? err.message}`);
  }
  const docker = new Docker({ socketPath: socket });
  return {
    root,
    socket,
    host,
    docker,
    env,
    containers: (label = 'reapi.runner') => docker.listContainers({ all: true, filters: JSON.stringify({ label: [label] }) }),
    stop: async () => {
      process.removeListener('exit', kill);
      await run(START_DOCKERD, ['--stop', '--root', root], { env }).catch(() => kill());
      // dockerd unmounts its layers on the way out; anything still mounted below root is left.
      await rm(root, { recursive: true, force: true }).catch(() => {});
    },
  };
}
