// Platform properties: how a job's requirements are matched against what a worker offers, and
// the canonical key that names one queue per platform.
import type { PlatformProperties } from './job-queue.ts';

/** Placeholder returned by `unsatisfiableProperties` for an empty platform when no worker is registered. */
export const NO_WORKERS = '(no workers registered)';

function escape(s: string): string {
  return s.replace(/[\\,=]/g, (c) => `\\${c}`);
}

/**
 * Canonical key of a platform: `name=value` entries sorted by name and joined by ',', with '\',
 * ',' and '=' escaped by a backslash so distinct platforms never share a key. '' for no properties.
 */
export function platformKey(p: PlatformProperties): string {
  return Object.keys(p)
    .sort()
    .map((name) => `${escape(name)}=${escape(p[name] ?? '')}`)
    .join(',');
}

/** True when the worker offers this one property: same value, or '*' (anything). */
export function satisfiesProperty(worker: PlatformProperties, name: string, value: string): boolean {
  if (!Object.hasOwn(worker, name)) return false;
  const offered = worker[name];
  return offered === '*' || offered === value;
}

/** True when the worker satisfies every property of the job's platform. */
export function satisfies(worker: PlatformProperties, jobPlatform: PlatformProperties): boolean {
  return Object.entries(jobPlatform).every(([name, value]) => satisfiesProperty(worker, name, value));
}

/** The job's property names this worker does not satisfy (sorted). */
export function missingProperties(worker: PlatformProperties, jobPlatform: PlatformProperties): string[] {
  return Object.keys(jobPlatform)
    .sort()
    .filter((name) => !satisfiesProperty(worker, name, jobPlatform[name] ?? ''));
}

/**
 * The job's property names that none of these (live) workers can satisfy; [] when some worker
 * satisfies them all.
 * - No worker at all: every property name, or [NO_WORKERS] when the platform is empty.
 * - Each property is offered by some worker but no single worker offers them all: the properties
 *   missing on the best-matching worker (fewest missing), so the answer is never empty while the
 *   job cannot run.
 */
export function unsatisfiableProperties(workers: PlatformProperties[], jobPlatform: PlatformProperties): string[] {
  const names = Object.keys(jobPlatform).sort();
  if (workers.length === 0) return names.length ? names : [NO_WORKERS];
  let best: string[] | undefined;
  for (const w of workers) {
    const missing = missingProperties(w, jobPlatform);
    if (missing.length === 0) return [];
    if (!best || missing.length < best.length) best = missing;
  }
  const nobody = names.filter((n) => !workers.some((w) => satisfiesProperty(w, n, jobPlatform[n] ?? '')));
  return nobody.length ? nobody : (best ?? names);
}
