// What every sandboxing runner does around the action the same way: refuse a spec it cannot run,
// watch the run (wall-clock timeout, cancellation, limits the kernel reports as hit) and end it
// when one of them fires, and say in words which limit ended it.
import { constants as osConstants } from 'node:os';
import { isAbsolute, posix } from 'node:path';
import type { ResourceLimits, RunFailure, RunOutcome, RunSpec } from '../../execution/runner.ts';
import type { CgroupUsage, LimitEvents } from './cgroup-files.ts';

/** How often the kernel's limit counters are read while an action runs. */
export const LIMIT_POLL_MS = 50;

export function formatSeconds(ms: number): string {
  return String(Number((ms / 1000).toFixed(3)));
}

export function formatMiB(bytes: number): string {
  return String(Number((bytes / 2 ** 20).toFixed(1)));
}

export function signalNumber(signal: NodeJS.Signals): number {
  return (osConstants.signals as Record<string, number | undefined>)[signal] ?? 0;
}

/** Single-quotes `s` for sh. */
export function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Where the exec root appears and the working directory inside it, once checked. */
export interface SandboxPaths {
  mount: string;
  /** Normalised, relative to the mount ('.' for the exec root). */
  workingDirectory: string;
}

/**
 * The mount point and working directory of a spec, or why it cannot run: the mount must be
 * absolute (and not one of `reserved`), the working directory must stay inside the exec root,
 * and there must be a program.
 */
export function checkSpec(spec: RunSpec, reserved: (mount: string) => boolean = () => false): SandboxPaths | RunFailure {
  const mount = spec.variation?.execRootMount ?? '/work';
  const wd = posix.normalize(spec.workingDirectory === '' ? '.' : spec.workingDirectory);
  if (!isAbsolute(mount) || reserved(mount)) return { kind: 'sandbox-error', message: `execRootMount not usable: ${mount}` };
  if (posix.isAbsolute(wd) || wd === '..' || wd.startsWith('../')) {
    return { kind: 'sandbox-error', message: `working directory escapes the exec root: ${spec.workingDirectory}` };
  }
  if (spec.argv.length === 0) return { kind: 'sandbox-error', message: 'empty argv' };
  return { mount, workingDirectory: wd };
}

export function isFailure(x: SandboxPaths | RunFailure): x is RunFailure {
  return 'kind' in x;
}

/** The limit the kernel's counters say was hit, in words; undefined when none. */
export function limitFailure(ev: LimitEvents, limits: ResourceLimits): RunFailure | undefined {
  if (ev.oomKills > 0) {
    const message =
      limits.memoryBytes > 0
        ? `memory limit of ${formatMiB(limits.memoryBytes)} MiB exceeded`
        : 'killed by the out-of-memory killer (no memory limit set: the host ran out of memory)';
    return { kind: 'memory-limit', message };
  }
  if (ev.pidsLimitHits > 0) return { kind: 'process-limit', message: `process limit of ${limits.maxProcesses} reached` };
  return undefined;
}

/**
 * What a finished run used, from its cgroup, and the limit that ended it when the kernel counted
 * one (worth asking only when it did not exit 0). Best effort: nothing when the cgroup is gone.
 */
export async function accounting(
  cg: { limitEvents(): Promise<LimitEvents>; usage(): Promise<CgroupUsage> } | undefined,
  limits: ResourceLimits,
  exitCode: number,
): Promise<{ usage: RunOutcome['usage']; limit?: RunFailure }> {
  const usage = { userCpuMs: 0, systemCpuMs: 0, maxRssBytes: 0 };
  if (!cg) return { usage };
  try {
    const [ev, u] = await Promise.all([cg.limitEvents(), cg.usage()]);
    const limit = exitCode !== 0 ? limitFailure(ev, limits) : undefined;
    return { usage: { userCpuMs: u.userCpuMs, systemCpuMs: u.systemCpuMs, maxRssBytes: u.memoryPeakBytes ?? 0 }, ...(limit ? { limit } : {}) };
  } catch {
    return { usage };
  }
}

/** An exit by SIGXFSZ under a file-size limit: that limit ended the run. */
export function fileSizeFailure(exitCode: number, limits: ResourceLimits): RunFailure | undefined {
  if (limits.maxFileBytes > 0 && exitCode === 128 + signalNumber('SIGXFSZ')) {
    return { kind: 'file-size-limit', message: `file size limit of ${limits.maxFileBytes} bytes exceeded` };
  }
  return undefined;
}

export interface WatchdogOptions {
  spec: RunSpec;
  signal: AbortSignal;
  /** End the run (kill its processes); called once, with the reason. */
  kill: (failure: RunFailure) => void;
  /** The run's limit counters, polled while it runs (no polling without). */
  limitEvents?: () => Promise<LimitEvents>;
  /** True once the action is over: nothing to end any more. */
  over?: () => boolean;
}

/**
 * Ends a run on cancellation at once, on its timeout once `startClock()` was called, and as soon
 * as the kernel reports a memory or process limit hit (rather than leaving a fork bomb spinning
 * until the timeout: pids.max only refuses forks). `stop()` when the run is over.
 */
export class Watchdog {
  private failure: RunFailure | undefined;
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly onAbort = () => this.fire({ kind: 'cancelled', message: 'action cancelled' });

  constructor(private readonly opts: WatchdogOptions) {
    const { spec, signal, limitEvents } = opts;
    signal.addEventListener('abort', this.onAbort, { once: true });
    if (signal.aborted) this.onAbort();
    if (limitEvents && (spec.limits.memoryBytes > 0 || spec.limits.maxProcesses > 0)) {
      let polling = false;
      this.timers.push(
        setInterval(() => {
          if (polling || this.failure || opts.over?.()) return;
          polling = true;
          limitEvents()
            .then((ev) => {
              const f = limitFailure(ev, spec.limits);
              if (f && !opts.over?.()) this.fire(f);
            })
            .catch(() => {})
            .finally(() => (polling = false));
        }, LIMIT_POLL_MS),
      );
    }
  }

  /** Why the watchdog ended the run, if it did. */
  get killedFor(): RunFailure | undefined {
    return this.failure;
  }

  /** Start the wall-clock timeout (when the action itself starts). */
  startClock(): void {
    const { timeoutMs } = this.opts.spec;
    if (timeoutMs > 0) this.timers.push(setTimeout(() => this.fire({ kind: 'timeout', message: `action timed out after ${formatSeconds(timeoutMs)} s` }), timeoutMs));
  }

  stop(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.length = 0;
    this.opts.signal.removeEventListener('abort', this.onAbort);
  }

  private fire(failure: RunFailure): void {
    if (this.failure) return;
    this.failure = failure;
    this.opts.kill(failure);
  }
}
