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

/** Separates the values of a property a worker offers several of (e.g. rustc-release: "1.63.0|1.95.0"). */
export const OFFER_SEPARATOR = '|';

/** True when the worker offers this one property: same value, one of its '|'-separated values, or '*' (anything). */
export function satisfiesProperty(worker: PlatformProperties, name: string, value: string): boolean {
  if (!Object.hasOwn(worker, name)) return false;
  const offered = worker[name]!;
  return offered === '*' || offered === value || (offered.includes(OFFER_SEPARATOR) && offered.split(OFFER_SEPARATOR).includes(value));
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

// ---------------------------------------------------------------------------------------------
// Locality: which worker recently ran jobs whose inputs overlap a new job's

/** Locality keys of one job the queues look at (the input root comes first, then subdirectories). */
export const MAX_LOCALITY_KEYS = 64;

/** Workers remembered per locality key (the most recent ones). */
export const LOCALITY_WORKERS_PER_KEY = 4;

/** How long a worker counts as having a job's inputs after it ran one (default of both queues). */
export const DEFAULT_LOCALITY_TTL_MS = 10 * 60_000;

/** A worker's claim on a job's inputs. */
export interface LocalityScore {
  worker: string;
  /** How many of the job's locality keys it ran recently. */
  shared: number;
  /** When it last finished a job with one of them (ms since the epoch). */
  lastMs: number;
}

/** The job's locality keys the queues consider: deduplicated, at most MAX_LOCALITY_KEYS. */
export function localityKeysOf(keys: readonly string[] | undefined): string[] {
  if (!keys?.length) return [];
  return [...new Set(keys.filter((k) => k !== ''))].slice(0, MAX_LOCALITY_KEYS);
}

/**
 * Rank workers by how many of a job's keys they ran (most first), ties by the most recent.
 * `hits`: for each key, the (worker, finished ms) entries recorded for it; entries older than
 * `notBeforeMs` are ignored.
 */
export function rankLocality(hits: Iterable<Iterable<readonly [string, number]>>, notBeforeMs = 0): LocalityScore[] {
  const byWorker = new Map<string, LocalityScore>();
  for (const entries of hits) {
    for (const [worker, ms] of entries) {
      if (!(ms >= notBeforeMs)) continue;
      const s = byWorker.get(worker);
      if (s) {
        s.shared++;
        s.lastMs = Math.max(s.lastMs, ms);
      } else {
        byWorker.set(worker, { worker, shared: 1, lastMs: ms });
      }
    }
  }
  return [...byWorker.values()].sort((a, b) => b.shared - a.shared || b.lastMs - a.lastMs || (a.worker < b.worker ? -1 : 1));
}
