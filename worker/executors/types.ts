// The worker's execution layers, composed in worker/action-executor.ts the way bb_worker stacks
// its BuildExecutors. Two levels:
//
// - a RunExecutor runs an action once, in a fresh exec root (local-executor.ts), possibly under a
//   verification's variations; metrics-executor.ts counts each run;
// - an ActionExecutor answers for a whole job: one run (single-run-executor.ts), maybe verified by
//   a second (verifying-executor.ts) or checked against a cache entry (auditing-executor.ts); the
//   outcome says what the ActionCache should get, and caching-executor.ts is the only layer that
//   writes it.
import type { ActionResultInput } from '../../cas/action-cache.ts';
import type { Logger } from '../../common/logger.ts';
import type { LoadedAction } from '../../execution/action-loader.ts';
import type { JobContext } from '../../execution/job-queue.ts';
import type { PlannedVariation } from '../variations.ts';

/** How a run ended, for metrics (label) and for the client (status and message). */
export interface Verdict {
  label: string;
  status: number;
  message: string;
}

/** When each stage of a run ended (ms since the epoch). */
export interface RunTimings {
  workerStart: number;
  fetchEnd: number;
  execEnd: number;
  uploadEnd: number;
}

/** One run of an action: its ActionResult (outputs uploaded) and how it ended. */
export interface Run {
  result: ActionResultInput;
  verdict: Verdict;
  /** Successful and complete: a result that may be cached. */
  cacheable: boolean;
  timings: RunTimings;
}

export interface RunRequest {
  ctx: JobContext;
  loaded: LoadedAction;
  /** Set for a verification's or an audit's run. */
  variation?: PlannedVariation;
}

export interface RunExecutor {
  run(req: RunRequest): Promise<Run>;
}

export interface ActionRequest {
  ctx: JobContext;
  loaded: LoadedAction;
  log: Logger;
}

/** What the ActionCache gets for an audit: the confirmed client write, or the contradicted entry removed. */
export type CacheUpdate = { kind: 'store'; entry: ActionResultInput } | { kind: 'remove' };

export interface ActionOutcome {
  /** The run whose result the client gets. */
  run: Run;
  status: number;
  /** A warning or explanation for the client ('' when none). */
  message: string;
  /** Cache `run.result` as this worker's result. */
  cacheable: boolean;
  /** Two runs agreed. */
  verified: boolean;
  /** Instead of caching the run: what an audit decided. */
  cacheUpdate?: CacheUpdate;
  /** What must follow the cache write (an audit's metrics and report speak of the cache as changed). */
  afterCaching?: () => Promise<void>;
}

export interface ActionExecutor {
  execute(req: ActionRequest): Promise<ActionOutcome>;
}
