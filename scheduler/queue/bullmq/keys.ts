// Every Redis key and channel name the BullMQ queue uses, in one place.
//
// Key layout (prefix `reapi` by default):
//   <p>:op:<operation name>   hash   name, job (JSON JobSpec), stage, done 0|1, queuedAt, updatedAt,
//                                    worker, response (base64), error (JSON), queue (the BullMQ
//                                    queue holding the job), jobId, mergeKey, deliveries,
//                                    lastWorker, ver (bumped on each change)
//   <p>:merge:<sha256>        string operation name of the in-flight mergeable action
//   <p>:platforms             hash   shared BullMQ queue name -> platform (JSON)
//   <p>:personal              hash   personal BullMQ queue name -> worker name (for the sweep)
//   <p>:loc:<locality key>    zset   worker name -> when it last finished a job with that key (ms);
//                                    the LOCALITY_WORKERS_PER_KEY most recent, PX localityTtlMs
//   <p>:sweep                 string held (PX heartbeatMs) by the instance sweeping dead workers
//   <p>:workers               zset   worker name -> last heartbeat (ms); an index, pruned lazily
//   <p>:worker:<name>         string registration (JSON {platform, concurrency, active, draining?}), PX
//                                    workerTtlMs: a worker counts as live while this key exists;
//                                    `draining` (stopping): never routed to
//   <p>:bull:<queue>:...      BullMQ's own keys
// Channels: <p>:events (JSON {name, ver, stage, worker, updatedAt, done} of each change),
//           <p>:cancel (operation name to abort),
//           <p>:platform-added (name of a new platform queue),
//           <p>:job-added (name of a queue that just got a job to take).
//
// BullMQ queues: one shared queue per platform (`q-<sha256(platformKey)>`) and one personal queue
// per worker and platform (`<shared queue>-w-<sha256(worker name)>`); BullMQ queue names may not
// contain ':'.
import { createHash } from 'node:crypto';
import type { PlatformProperties } from '../../../execution/job-queue.ts';
import { platformKey } from '../../../execution/platform.ts';

const PERSONAL_INFIX = '-w-';

export class RedisKeys {
  readonly opPrefix: string;
  readonly mergePrefix: string;
  readonly platforms: string;
  readonly personal: string;
  readonly sweep: string;
  readonly workers: string;
  readonly bullPrefix: string;
  readonly events: string;
  readonly cancel: string;
  readonly platformAdded: string;
  readonly jobAdded: string;

  constructor(readonly prefix: string) {
    this.opPrefix = `${prefix}:op:`;
    this.mergePrefix = `${prefix}:merge:`;
    this.platforms = `${prefix}:platforms`;
    this.personal = `${prefix}:personal`;
    this.sweep = `${prefix}:sweep`;
    this.workers = `${prefix}:workers`;
    this.bullPrefix = `${prefix}:bull`;
    this.events = `${prefix}:events`;
    this.cancel = `${prefix}:cancel`;
    this.platformAdded = `${prefix}:platform-added`;
    this.jobAdded = `${prefix}:job-added`;
  }

  op(name: string): string {
    return this.opPrefix + name;
  }

  worker(name: string): string {
    return `${this.prefix}:worker:${name}`;
  }

  locality(key: string): string {
    return `${this.prefix}:loc:${key}`;
  }

  /** The channels every instance subscribes to. */
  get channels(): string[] {
    return [this.events, this.cancel, this.platformAdded, this.jobAdded];
  }
}

/** BullMQ queue of a platform. */
export function queueName(platform: PlatformProperties): string {
  return `q-${createHash('sha256').update(platformKey(platform)).digest('hex').slice(0, 24)}`;
}

/** A worker's personal queue on a platform. */
export function personalQueueName(sharedQueue: string, worker: string): string {
  return `${sharedQueue}${PERSONAL_INFIX}${createHash('sha256').update(worker).digest('hex').slice(0, 16)}`;
}

export function isPersonal(queue: string): boolean {
  return queue.includes(PERSONAL_INFIX);
}

/** The shared queue a personal queue belongs to (a shared queue itself otherwise). */
export function sharedOf(queue: string): string {
  const i = queue.lastIndexOf(PERSONAL_INFIX);
  return i < 0 ? queue : queue.slice(0, i);
}

/** The merge key as stored: the hash of the rules' merge key. */
export function mergeHash(mergeKey: string): string {
  return createHash('sha256').update(mergeKey).digest('hex');
}
