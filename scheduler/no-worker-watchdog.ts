// No silent waits: an operation queued for a platform that no live worker can run (its workers
// died or were stopped after it was queued) fails with FAILED_PRECONDITION once that has lasted
// `graceMs`, naming what is missing, instead of waiting for a worker that may never come.
import { Status } from '../common/errors.ts';
import type { JobQueue, PlatformProperties } from '../execution/job-queue.ts';
import { NO_WORKERS, platformKey } from '../execution/platform.ts';

export interface NoWorkerWatchdogOptions {
  graceMs: number;
  /** How often to look (default: a quarter of the grace, at most every 10 s). */
  pollMs?: number;
}

/** The error of an operation nobody could run for `seconds`. */
export function noWorkerError(platform: PlatformProperties, missing: string[], waitedMs: number): { code: number; message: string } {
  const what = missing.includes(NO_WORKERS)
    ? 'no worker is live'
    : `no live worker offers platform properties ${missing.map((p) => `${p}=${platform[p] ?? ''}`).join(', ')}`;
  return {
    code: Status.FAILED_PRECONDITION,
    message: `${what}, and none has been for ${(waitedMs / 1000).toFixed(waitedMs < 10_000 ? 1 : 0)} s while this action waited in the queue; start a worker that offers them (execution.noWorkerGraceSeconds sets how long to wait)`,
  };
}

/**
 * What `unsatisfiable` said lately, per queue and platform: thousands of queued operations of one
 * build share one platform, and one answer per poll period serves them all.
 */
const recent = new WeakMap<JobQueue, Map<string, { at: number; missing: Promise<string[]> }>>();

function unsatisfiable(queue: JobQueue, platform: PlatformProperties, maxAgeMs: number): Promise<string[]> {
  let byPlatform = recent.get(queue);
  if (!byPlatform) recent.set(queue, (byPlatform = new Map()));
  const key = platformKey(platform);
  const hit = byPlatform.get(key);
  if (hit && Date.now() - hit.at < maxAgeMs) return hit.missing;
  const missing = queue.unsatisfiable(platform);
  byPlatform.set(key, { at: Date.now(), missing });
  missing.catch(() => byPlatform.delete(key));
  return missing;
}

/** Watch one operation while it is queued; returns the function that stops watching. */
export function watchForNoWorker(queue: JobQueue, name: string, platform: PlatformProperties, opts: NoWorkerWatchdogOptions): () => void {
  const pollMs = opts.pollMs ?? Math.max(50, Math.min(10_000, Math.floor(opts.graceMs / 4)));
  let since: number | undefined;
  let busy = false;
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    void (async () => {
      const state = await queue.getOperation(name);
      if (!state || state.done || state.stage !== 'QUEUED') {
        since = undefined;
        if (state?.done) clearInterval(timer);
        return;
      }
      const missing = await unsatisfiable(queue, platform, pollMs / 2);
      if (missing.length === 0) {
        since = undefined;
        return;
      }
      since ??= Date.now();
      if (Date.now() - since >= opts.graceMs) {
        clearInterval(timer);
        await queue.fail(name, noWorkerError(platform, missing, Date.now() - since));
      }
    })()
      .catch(() => {})
      .finally(() => (busy = false));
  }, pollMs);
  timer.unref();
  return () => clearInterval(timer);
}
