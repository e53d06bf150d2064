// The rules every JobQueue follows, whatever holds its state: what makes two submissions one
// action, how often a job is delivered, and what the client is told when delivery gives up.
import { digestKey } from '../../common/digest.ts';
import { messageOf, Status } from '../../common/errors.ts';
import type { JobSpec } from '../../execution/job-queue.ts';
import { platformKey } from '../../execution/platform.ts';

/** Deliveries of one job (worker deaths and handler failures alike) unless configured. */
export const DEFAULT_MAX_ATTEMPTS = 3;

export interface OperationError {
  code: number;
  message: string;
}

/** `(instance, action digest, platform)`: what makes two submissions the same action. */
export function mergeKeyOf(job: JobSpec): string {
  return `${job.instanceName}\n${job.digestFunction ?? 'SHA256'}\n${digestKey(job.actionDigest)}\n${platformKey(job.platform)}`;
}

/** Whether a job may be merged with an identical in-flight one: never when it must not be cached. */
export function isMergeable(job: JobSpec): boolean {
  return !job.doNotCache;
}

export function attemptsOf(maxAttempts: number | undefined): number {
  return Math.max(1, Math.floor(maxAttempts ?? DEFAULT_MAX_ATTEMPTS));
}

/**
 * What follows a handler that threw on its `deliveries`-th delivery: another delivery while
 * attempts are left, else the operation fails. An error carrying a gRPC status (a ReapiError) is
 * the worker's deliberate answer and keeps its code and message; anything else means the worker
 * could not run the job, which is UNAVAILABLE so that the client may try again.
 */
export function afterHandlerFailure(
  err: unknown,
  ctx: { job: JobSpec; deliveries: number; maxAttempts: number; worker: string },
): { retry: true } | { retry: false; error: OperationError } {
  if (ctx.deliveries < ctx.maxAttempts) return { retry: true };
  const code = (err as { code?: unknown } | null)?.code;
  const message = messageOf(err);
  if (typeof code === 'number') return { retry: false, error: { code, message } };
  return {
    retry: false,
    error: { code: Status.UNAVAILABLE, message: `action ${digestKey(ctx.job.actionDigest)} was delivered ${ctx.deliveries} times and failed each time; last worker: ${ctx.worker} (it failed: ${message})` },
  };
}

/** The error of a job whose workers died on every one of its `deliveries`. */
export function workersDied(job: JobSpec, deliveries: number, lastWorker: string): OperationError {
  return {
    code: Status.UNAVAILABLE,
    message: `action ${digestKey(job.actionDigest)} was delivered ${deliveries} times and its worker died each time; last worker: ${lastWorker || 'unknown'}`,
  };
}

export function cancelled(operationName: string): OperationError {
  return { code: Status.CANCELLED, message: `operation ${operationName} was cancelled` };
}
