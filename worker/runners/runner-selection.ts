// Which runner runs a job, by its platform, decided here and nowhere else: special runtimes first
// (each claims the jobs whose platform asks for it: wasm macros, Cargo build scripts), then Docker
// for a `container-image`, then the sandbox (bwrap).
import { availableParallelism } from 'node:os';
import { failedPrecondition } from '../../common/errors.ts';
import type { Logger } from '../../common/logger.ts';
import type { PlatformProperties } from '../../execution/job-queue.ts';
import type { Runner } from '../../execution/runner.ts';
import type { BwrapRunner } from './bwrap-runner.ts';
import { BUILD_SCRIPT_PROPERTY } from '../../execution/build-script.ts';
import { BuildScriptRunner } from './build-script-runner.ts';
import { WASM_MACRO_PLATFORM } from '../../execution/wasm-macro.ts';
import { WasmRunner } from './wasm/wasm-runner.ts';
import { CONTAINER_IMAGE } from './docker-support.ts';

/** A runner for the jobs whose platform asks for it, and what a worker with it advertises. */
export interface RuntimeRunner {
  claims(platform: PlatformProperties): boolean;
  runner: Runner;
  /** Platform properties the worker adds to its own (its configured platform wins on conflicts). */
  platform: PlatformProperties;
  dispose(): Promise<void>;
}

/**
 * `(platform) => Runner`: the first runtime that claims the job; else Docker when the platform
 * names a container image (or a runner that fails with FAILED_PRECONDITION when this worker has
 * no engine); else the sandbox.
 */
export function selectRunner(runners: { sandbox: Runner; docker?: Runner; runtimes: readonly RuntimeRunner[] }): (platform: PlatformProperties) => Runner {
  const noEngine: Runner = {
    name: 'docker',
    run: () => Promise.reject(failedPrecondition(`this worker has no Docker engine, so it cannot run ${CONTAINER_IMAGE} actions (start one: scripts/docker/start-dockerd.sh)`)),
  };
  return (platform) => {
    const runtime = runners.runtimes.find((r) => r.claims(platform));
    if (runtime) return runtime.runner;
    if (platform[CONTAINER_IMAGE] !== undefined) return runners.docker ?? noEngine;
    return runners.sandbox;
  };
}

/**
 * The runtimes a worker offers on top of its default runner: wasm macros always (in-process
 * threads, `threads` at once); Cargo build scripts when the default runner is bwrap.
 */
export async function startRuntimeRunners(
  bwrap: Runner,
  opts: { logger: Logger; stateDir: string; threads: number; visiblePaths?: string[]; toolchains?: string[] },
): Promise<RuntimeRunner[]> {
  const wasm = new WasmRunner({ threads: Math.max(1, Math.min(opts.threads, availableParallelism())) });
  const out: RuntimeRunner[] = [
    {
      claims: (p) => p.runtime === WASM_MACRO_PLATFORM.runtime,
      runner: wasm,
      platform: { ...WASM_MACRO_PLATFORM },
      dispose: () => wasm.dispose(),
    },
  ];
  if (!isBwrap(bwrap)) return out;
  try {
    const buildScripts = await BuildScriptRunner.create(bwrap, {
      logger: opts.logger.child({ component: 'build-scripts' }),
      stateDir: opts.stateDir,
      ...(opts.visiblePaths ? { visiblePaths: opts.visiblePaths } : {}),
      ...(opts.toolchains ? { toolchains: opts.toolchains } : {}),
    });
    out.push({ claims: (p) => Object.hasOwn(p, BUILD_SCRIPT_PROPERTY), runner: buildScripts, platform: buildScripts.platform(), dispose: () => buildScripts.dispose() });
  } catch (err) {
    opts.logger.warn({ err }, 'Cargo build scripts cannot run on this worker; it does not offer them');
  }
  return out;
}

function isBwrap(r: Runner): r is BwrapRunner {
  return r.name === 'bwrap' && typeof (r as Partial<BwrapRunner>).insideTools === 'function';
}
