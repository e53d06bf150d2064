// Which runner runs a job, by its platform: special runtimes first (each claims the jobs whose
// platform asks for it), then the default selection (bwrap, or Docker for container-image).
import { availableParallelism } from 'node:os';
import type { Logger } from '../../common/logger.ts';
import type { PlatformProperties } from '../../execution/job-queue.ts';
import type { Runner } from '../../execution/runner.ts';
import type { BwrapRunner } from './bwrap-runner.ts';
import { BUILD_SCRIPT_PROPERTY } from '../../execution/build-script.ts';
import { BuildScriptRunner } from './build-script-runner.ts';
import { WASM_MACRO_PLATFORM } from '../../execution/wasm-macro.ts';
import { WasmRunner } from './wasm/wasm-runner.ts';

/** A runner for the jobs whose platform asks for it, and what a worker with it advertises. */
export interface RuntimeRunner {
  claims(platform: PlatformProperties): boolean;
  runner: Runner;
  /** Platform properties the worker adds to its own (its configured platform wins on conflicts). */
  platform: PlatformProperties;
  dispose(): Promise<void>;
}

/** `(platform) => Runner`: the first runtime that claims the job, else `fallback`. */
export function selectRunner(fallback: (platform: PlatformProperties) => Runner, runtimes: readonly RuntimeRunner[]): (platform: PlatformProperties) => Runner {
  return (platform) => runtimes.find((r) => r.claims(platform))?.runner ?? fallback(platform);
}

/**
 * The runtimes a worker offers on top of its default runner: wasm macros always (in-process
 * threads, `threads` at once); Cargo build scripts when the default runner is bwrap.
 */
export async function startRuntimeRunners(bwrap: Runner, opts: { logger: Logger; stateDir: string; threads: number; visiblePaths?: string[] }): Promise<RuntimeRunner[]> {
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
