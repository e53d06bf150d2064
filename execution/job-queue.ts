// The JobQueue seam: how the scheduler hands actions to workers and learns how they went.
// Two implementations: in-process (`reapi serve`, no Redis) and BullMQ on Redis (a fleet).
// Operation state lives behind this interface too, so a scheduler that restarts can still answer
// WaitExecution / GetOperation from Redis.
import type { Digest } from '../common/digest.ts';
import type { DigestFunctionName } from '../common/digest-function.ts';

/** Platform properties as name -> value (REAPI allows repeated names; values are then joined by ','). */
export type PlatformProperties = Record<string, string>;

/** What a worker needs to run one action; everything else it fetches from the CAS. */
export interface JobSpec {
  instanceName: string;
  actionDigest: Digest;
  /** How the action and everything it names are hashed; absent: SHA-256. */
  digestFunction?: DigestFunctionName;
  /** REAPI ExecutionPolicy.priority: lower runs first; 0 is the default. */
  priority: number;
  platform: PlatformProperties;
  /** Never merged with another in-flight action, never written to the ActionCache. */
  doNotCache: boolean;
  /**
   * The Action and Command as the scheduler loaded them (their encoded bytes, base64) and the
   * timeout it resolved, so that the worker need not fetch and decode them again. The worker
   * checks the bytes against their digests before use (execution/action-loader.ts).
   */
  loaded?: PreloadedAction;
  /** Opaque to the queue: e.g. tool invocation id, mnemonic and target, for logs and reports. */
  requestMetadata?: Record<string, string>;
  /**
   * What the job's inputs consist of, coarsely: the input root digest and the digests of its
   * subdirectories. The queue prefers a worker that recently ran jobs sharing these keys: its
   * local content cache already holds those inputs.
   */
  localityKeys?: string[];
  /** Run twice under different variations; cache only when both runs agree. */
  verify?: boolean;
  /**
   * Re-execute to check an ActionCache entry (the job is then doNotCache): `entry` is the encoded
   * ActionResult in the CAS. 'served': an entry served to clients; 'client-write': a quarantined
   * client write, promoted into the cache when the execution agrees.
   */
  audit?: { entry: Digest; reason: 'served' | 'client-write' };
  /**
   * This job is the second run of a verification that `firstWorker` started: run it once under
   * the verification variations and answer the result (never cached; the job is doNotCache).
   */
  verificationRun?: { firstWorker: string };
}

export interface PreloadedAction {
  action: string;
  command: string;
  timeoutMs: number;
}

export interface SubmitOptions {
  /**
   * Put the job on this worker's personal queue instead of routing it (e.g. a verification's
   * second run on another worker). A worker that is gone by then leaves it to the shared queue.
   */
  worker?: string;
}

export type Stage = 'QUEUED' | 'EXECUTING' | 'COMPLETED';

export interface OperationState {
  /** Operation name handed to the client. */
  name: string;
  job: JobSpec;
  stage: Stage;
  done: boolean;
  /** Encoded `ExecuteResponse` once done, when a worker produced one. */
  response?: Buffer;
  /** Set instead of `response` when the job could not be run (e.g. its workers died N times). */
  error?: { code: number; message: string };
  /** Worker that took it, when known. */
  worker?: string;
  queuedAt: number;
  updatedAt: number;
}

export interface SubmitResult {
  operationName: string;
  /** True when an identical in-flight action was joined instead of enqueuing a new job. */
  merged: boolean;
}

/** What a worker sees for each job it takes. */
export interface JobContext {
  operationName: string;
  job: JobSpec;
  /** How many times this job was delivered before (after a worker died). */
  attempt: number;
  /** When the operation was submitted (ms since the epoch), for ExecutedActionMetadata. */
  queuedAt?: number;
  /** Fired when the client cancelled the operation. */
  signal: AbortSignal;
  /** Move the operation to EXECUTING (and name the worker). */
  markExecuting(worker: string): Promise<void>;
}

/** The worker's answer: the encoded ExecuteResponse to publish. */
export type JobHandler = (ctx: JobContext) => Promise<Buffer>;

export interface WorkerRegistration {
  /** Unique worker name, e.g. host:pid. */
  name: string;
  /**
   * Properties this worker satisfies; a job matches when each of its properties is here with the
   * same value, or with the value '*' (e.g. `container-image: '*'` on a worker with a Docker engine).
   */
  platform: PlatformProperties;
  concurrency: number;
}

/** A snapshot for metrics: jobs per platform queue and live workers. */
export interface QueueStats {
  platforms: Array<{ platform: PlatformProperties; waiting: number; active: number }>;
  workers: Array<{ name: string; platform: PlatformProperties; concurrency: number }>;
}

export interface JobQueue {
  /** Enqueue, or join an identical in-flight action (same instance, action digest and platform; never when doNotCache). */
  submit(job: JobSpec, opts?: SubmitOptions): Promise<SubmitResult>;
  getOperation(name: string): Promise<OperationState | undefined>;
  /**
   * Call `onUpdate` with the current state now and on every change until done; returns a function
   * that stops watching.
   */
  watch(name: string, onUpdate: (state: OperationState) => void): () => void;
  /** Cancel a queued or running operation; false when it is unknown or already done. */
  cancel(name: string): Promise<boolean>;
  /**
   * Finish a queued or running operation with `error` (e.g. no worker can run it): its job is
   * dropped or aborted like a cancelled one. False when it is unknown or already done.
   */
  fail(name: string, error: { code: number; message: string }): Promise<boolean>;
  /**
   * The platform properties no registered worker can satisfy for this platform (empty when some
   * worker can run it). Used to fail fast instead of queueing forever.
   */
  unsatisfiable(platform: PlatformProperties): Promise<string[]>;
  /**
   * Live workers other than `exclude` that satisfy `platform` and, as last seen, have a free slot
   * and nothing waiting on their personal queue; most free slots first.
   */
  freeWorkers(platform: PlatformProperties, exclude: string): Promise<string[]>;
  /** Jobs waiting and running per platform, and the live workers. */
  stats(): Promise<QueueStats>;
  /** Start taking jobs as a worker; resolves once registered. Stop with the returned function. */
  work(worker: WorkerRegistration, handler: JobHandler): Promise<() => Promise<void>>;
  close(): Promise<void>;
}
