// The Runner seam: run one command in one prepared exec root and report what happened.
// Runners know nothing about the CAS or protos; the worker materialises inputs before and collects
// declared outputs after.

/** What a verifier may change between two runs of one action; never part of the action key. */
export interface Variation {
  /** Path the exec root is mounted at inside the sandbox (default `/work`). */
  execRootMount?: string;
  hostname?: string;
  /** Octal umask, e.g. 0o022. */
  umask?: number;
  /** Set only when the Command itself did not set it. */
  tz?: string;
  /** Set only when the Command itself did not set it. */
  locale?: string;
  /** uid/gid the action runs as inside the sandbox. */
  uid?: number;
  gid?: number;
  disableAslr?: boolean;
  /** Restrict the action to this many CPUs. */
  cpus?: number;
  /** Variables added when the Command does not set them (e.g. libfaketime's LD_PRELOAD). */
  extraEnv?: Record<string, string>;
}

export interface ResourceLimits {
  /** Bytes of memory (RSS + page cache charged to the action); 0 = unlimited. */
  memoryBytes: number;
  /** Maximum number of processes/threads; 0 = unlimited. */
  maxProcesses: number;
  /** Largest file the action may write, in bytes; 0 = unlimited. */
  maxFileBytes: number;
}

export interface RunSpec {
  /** Host path of the exec root the worker prepared (inputs materialised, output parents created). */
  execRoot: string;
  argv: string[];
  /** The Command's environment, exactly; the runner adds nothing the action key does not name. */
  env: Record<string, string>;
  /** Relative to the exec root; '' = the exec root itself. */
  workingDirectory: string;
  /** The action's platform properties (e.g. the `container-image` a Docker runner uses). */
  platform?: Record<string, string>;
  /** Wall-clock limit in milliseconds. */
  timeoutMs: number;
  limits: ResourceLimits;
  /** Largest stdout or stderr kept, in bytes; more is cut and reported in `outcome.truncated`. */
  maxOutputBytes: number;
  variation?: Variation;
}

/** Why a run ended other than by exiting on its own. */
export type RunFailure =
  | { kind: 'timeout'; message: string }
  | { kind: 'memory-limit'; message: string }
  | { kind: 'process-limit'; message: string }
  | { kind: 'file-size-limit'; message: string }
  | { kind: 'cancelled'; message: string }
  | { kind: 'sandbox-error'; message: string };

export interface RunOutcome {
  /** Exit code of the action's process (128 + signal when killed by a signal). */
  exitCode: number;
  stdout: Buffer;
  stderr: Buffer;
  /** True when stdout or stderr was cut at `maxOutputBytes`. */
  truncated: boolean;
  /** Set when a limit or the sandbox itself ended the run. */
  failure?: RunFailure;
  startedAt: Date;
  completedAt: Date;
  /** Resource usage for ExecutedActionMetadata.auxiliary_metadata. */
  usage: { userCpuMs: number; systemCpuMs: number; maxRssBytes: number };
}

export interface Runner {
  /** A short name for logs and metrics, e.g. 'bwrap'. */
  readonly name: string;
  run(spec: RunSpec, signal: AbortSignal): Promise<RunOutcome>;
  /** Optional one-time setup, called at worker start to fail fast; resolves to what to log. */
  ready?(): Promise<unknown>;
  /** Optional: release what the runner holds (cgroups, containers, threads); no run after. */
  dispose?(): Promise<void>;
}

/** The outcome of a run that ended before (or without) the action's own exit. */
export function failedRun(failure: RunFailure, startedAt: Date, exitCode = -1): RunOutcome {
  return {
    exitCode,
    stdout: Buffer.alloc(0),
    stderr: Buffer.alloc(0),
    truncated: false,
    failure,
    startedAt,
    completedAt: new Date(),
    usage: { userCpuMs: 0, systemCpuMs: 0, maxRssBytes: 0 },
  };
}
