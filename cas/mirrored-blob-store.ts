// A BlobStore that keeps each blob on `replicas` of its backends (the first ones by rendezvous
// hashing of its digest, cas/rendezvous.ts), so losing a backend loses no blob and fails no call:
// - writes go to every replica; one that is down is skipped (the write succeeds while one
//   replica took it) and repaired later;
// - reads try the replicas in order and fall back past one that is down or lacks the blob,
//   then copy the blob back to the replicas that lacked it (in the background);
// - FindMissingBlobs calls a blob missing only when no reachable replica has it, and repairs the
//   replicas that lack one the others have.
import { sameFunction, type DigestFunction } from '../common/digest-function.ts';
import type { Readable } from 'node:stream';
import { digestKey, type Digest } from '../common/digest.ts';
import { Status } from '../common/errors.ts';
import { silentLogger, type Logger } from '../common/logger.ts';
import type { BlobStore, BlobWriter } from './blob-store.ts';
import { readBlob, putBlob } from './blob-io.ts';
import { Rendezvous } from './rendezvous.ts';

export interface Replica {
  /** Stable identity that places blobs (e.g. the node's address). */
  name: string;
  store: BlobStore;
  weight?: number;
}

/** Errors that say "this replica cannot answer now" (try another) rather than something about the blob. */
export function unreachable(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === Status.UNAVAILABLE || code === Status.DEADLINE_EXCEEDED || code === Status.CANCELLED;
}

function missing(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === Status.NOT_FOUND;
}

export class MirroredBlobStore implements BlobStore {
  readonly digestFunction: DigestFunction;
  private readonly ring: Rendezvous<Replica>;
  private readonly repairs = new Set<Promise<void>>();

  constructor(
    replicas: Replica[],
    private readonly count: number,
    private readonly log: Logger = silentLogger,
  ) {
    this.ring = new Rendezvous(replicas.map((r) => ({ name: r.name, value: r, ...(r.weight !== undefined ? { weight: r.weight } : {}) })), 'replica');
    if (!(count >= 1) || count > replicas.length) throw new Error(`mirrored: replicas ${count} must be between 1 and the ${replicas.length} backends`);
    this.digestFunction = sameFunction(replicas.map((r) => r.store));
  }

  /** The replicas of a digest, first choice first. */
  replicasOf(digest: Digest): Replica[] {
    return this.ring.ranked(digest.hash, this.count).map((n) => n.value);
  }

  /** Wait for the repairs started so far (tests). */
  async settled(): Promise<void> {
    while (this.repairs.size) await Promise.allSettled([...this.repairs]);
  }

  async findMissing(digests: Digest[]): Promise<Digest[]> {
    if (digests.length === 0) return [];
    const asked = new Map<Replica, Digest[]>();
    for (const d of digests) {
      for (const r of this.replicasOf(d)) {
        const list = asked.get(r);
        if (list) list.push(d);
        else asked.set(r, [d]);
      }
    }
    const answers = await Promise.all(
      [...asked].map(async ([r, list]) => {
        try {
          return { r, missing: new Set((await r.store.findMissing(list)).map(digestKey)) };
        } catch (err) {
          if (!unreachable(err)) throw err;
          this.log.warn({ err, replica: r.name }, 'mirrored: a replica did not answer FindMissingBlobs; asking the others');
          return { r, missing: undefined };
        }
      }),
    );
    const byReplica = new Map(answers.map((a) => [a.r, a.missing]));
    if ([...byReplica.values()].every((m) => m === undefined)) throw Object.assign(new Error('mirrored: no replica answered FindMissingBlobs'), { code: Status.UNAVAILABLE });
    const out: Digest[] = [];
    for (const d of digests) {
      const key = digestKey(d);
      const replicas = this.replicasOf(d);
      const holders = replicas.filter((r) => byReplica.get(r)?.has(key) === false);
      const lacking = replicas.filter((r) => byReplica.get(r)?.has(key) === true);
      if (holders.length === 0) out.push(d);
      else if (lacking.length > 0) this.repair(d, holders[0]!, lacking);
    }
    return out;
  }

  async read(digest: Digest, offset?: number, limit?: number): Promise<Readable> {
    const replicas = this.replicasOf(digest);
    const lacking: Replica[] = [];
    let lastErr: unknown;
    for (const r of replicas) {
      try {
        const stream = await r.store.read(digest, offset, limit);
        if (lacking.length > 0) this.repair(digest, r, lacking);
        return stream;
      } catch (err) {
        if (missing(err)) lacking.push(r);
        else if (!unreachable(err)) throw err;
        lastErr = err;
      }
    }
    throw lastErr;
  }

  async write(digest: Digest): Promise<BlobWriter> {
    const replicas = this.replicasOf(digest);
    const opened = await Promise.all(
      replicas.map(async (r) => {
        try {
          return { r, w: await r.store.write(digest) };
        } catch (err) {
          if (!unreachable(err)) throw err;
          this.log.warn({ err, replica: r.name, digest: digestKey(digest) }, 'mirrored: a replica is down; writing to the others');
          return { r, w: undefined };
        }
      }),
    );
    const writers = opened.filter((o): o is { r: Replica; w: BlobWriter } => o.w !== undefined);
    if (writers.length === 0) throw Object.assign(new Error(`mirrored: no replica of ${digestKey(digest)} can be written`), { code: Status.UNAVAILABLE });
    return new FanOutWriter(digest, writers, this.log);
  }

  /** Copy a blob from `from` to the replicas that lack it, in the background. */
  private repair(digest: Digest, from: Replica, to: Replica[]): void {
    const p = (async () => {
      const data = await readBlob(from.store, digest);
      for (const r of to) await putBlob(r.store, data, digest);
      this.log.info({ digest: digestKey(digest), from: from.name, to: to.map((r) => r.name) }, 'mirrored: repaired replicas');
    })()
      .catch((err: unknown) => this.log.warn({ err, digest: digestKey(digest) }, 'mirrored: repair failed; the next read or FindMissingBlobs tries again'))
      .finally(() => this.repairs.delete(p));
    this.repairs.add(p);
  }
}

/** Writes one blob to several replicas; succeeds while at least one replica took all of it. */
class FanOutWriter implements BlobWriter {
  private live: Array<{ r: Replica; w: BlobWriter }>;
  private bytes = 0;

  constructor(
    readonly digest: Digest,
    writers: Array<{ r: Replica; w: BlobWriter }>,
    private readonly log: Logger,
  ) {
    // Replicas that already have it need nothing; they still count as holding it.
    this.live = writers;
  }

  get written(): number {
    return this.bytes;
  }

  get alreadyExists(): boolean {
    return this.live.every((x) => x.w.alreadyExists);
  }

  async append(chunk: Buffer): Promise<void> {
    await this.each('append', (w) => (w.alreadyExists ? Promise.resolve() : w.append(chunk)));
    this.bytes += chunk.length;
  }

  async commit(): Promise<void> {
    await this.each('commit', (w) => w.commit());
  }

  async abort(): Promise<void> {
    await Promise.allSettled(this.live.map((x) => x.w.abort()));
  }

  /** Run `op` on every replica still in the write; drop one that became unreachable, fail on anything else. */
  private async each(what: string, op: (w: BlobWriter) => Promise<void>): Promise<void> {
    const results = await Promise.allSettled(this.live.map((x) => op(x.w)));
    const failed = results.flatMap((res, i) => (res.status === 'rejected' ? [{ x: this.live[i]!, err: res.reason as unknown }] : []));
    const bad = failed.find((f) => !unreachable(f.err));
    if (bad) throw bad.err;
    for (const f of failed) this.log.warn({ err: f.err, replica: f.x.r.name, digest: digestKey(this.digest) }, `mirrored: a replica failed during ${what}; the others carry the blob`);
    this.live = this.live.filter((x) => !failed.some((f) => f.x === x));
    if (this.live.length === 0) throw failed[0]!.err;
  }
}

