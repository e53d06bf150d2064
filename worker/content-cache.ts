// The worker's local content cache: a size-capped DiskBlobStore in front of a remote BlobStore
// (the CAS), from which input files are hardlinked into exec roots.
//
// Layout under `root`:
//   blobs/   DiskBlobStore of plain blobs, every file mode 0444
//   exec/    DiskBlobStore of executable variants, every file mode 0555 (own size cap)
//   empty, empty-x   the empty blob, 0444 and 0555 (never stored in a DiskBlobStore)
//
// Executability belongs to a FileNode, not to a blob, and hardlinks share one inode and so one
// mode. So a blob needed as an executable gets a second cached copy with mode 0555 in `exec/`,
// made from the plain copy on first use and evicted on its own LRU. When that copy cannot be kept
// (larger than the executable cap) or a hardlink is impossible (another filesystem, too many
// links), the file is copied into the exec root instead, with the same mode.
//
// Hardlinked inputs are only as safe as their mode: an action that owns the files (same uid, or
// root in its user namespace) could chmod or write them and so change the cache. The runner must
// run actions as a uid that does not own the cache, or with the exec root mounted read-only where
// inputs live, for full protection.
import { chmod, copyFile, link, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DigestFunction } from '../common/digest-function.ts';
import { isEmptyDigest, type Digest } from '../common/digest.ts';
import { Status } from '../common/errors.ts';
import { silentLogger, type Logger } from '../common/logger.ts';
import type { BlobStore } from '../cas/blob-store.ts';
import { DiskBlobStore } from '../cas/disk-blob-store.ts';
import { forEachLimit } from '../common/concurrency.ts';

export interface LocalContentCacheOptions {
  root: string;
  /** Cap of the plain blob cache. */
  maxBytes: number;
  /** Where blobs missing locally come from (the CAS). */
  remote: BlobStore;
  /** Cap of the executable copies (default: a quarter of `maxBytes`). */
  executableMaxBytes?: number;
  /** Parallel downloads (default 16). */
  concurrency?: number;
  logger?: Logger;
}

/** Counters since open; "hit" = present locally when asked for, "miss" = not (fetched or absent). */
export interface ContentCacheStats {
  hitBlobs: number;
  hitBytes: number;
  missBlobs: number;
  missBytes: number;
  /** Blobs downloaded from the remote (misses that the remote had). */
  fetchedBlobs: number;
  fetchedBytes: number;
  /** Executable (0555) copies made. */
  executableCopies: number;
  /** Files copied into an exec root because a hardlink was not possible. */
  copiedFiles: number;
}

export interface EnsureResult {
  /** Digests that neither the local cache nor the remote has. */
  missing: Digest[];
  fetchedBlobs: number;
  fetchedBytes: number;
}

const FIND_MISSING_BATCH = 10_000;
const TOUCH_INTERVAL_MS = 60_000;

function isNotFound(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === Status.NOT_FOUND;
}

/** Deduplicated by hash, the empty blob left out. */
function uniqueNonEmpty(digests: readonly Digest[]): Digest[] {
  const seen = new Map<string, Digest>();
  for (const d of digests) if (!isEmptyDigest(d) && !seen.has(d.hash)) seen.set(d.hash, d);
  return [...seen.values()];
}

export class LocalContentCache {
  readonly stats: ContentCacheStats = {
    hitBlobs: 0,
    hitBytes: 0,
    missBlobs: 0,
    missBytes: 0,
    fetchedBlobs: 0,
    fetchedBytes: 0,
    executableCopies: 0,
    copiedFiles: 0,
  };
  private readonly inflight = new Map<string, Promise<boolean>>();
  private readonly inflightExec = new Map<string, Promise<void>>();
  /** Hashes whose cached file was seen with the right mode in this process ('x' suffix: executable). */
  private readonly modeChecked = new Set<string>();
  private readonly touchedAt = new Map<string, number>();
  private readonly concurrency: number;
  private readonly log: Logger;

  private constructor(
    private readonly opts: LocalContentCacheOptions,
    /** The plain blobs (0444). Read Directory messages and other blobs through it. */
    readonly local: DiskBlobStore,
    private readonly exec: DiskBlobStore,
  ) {
    this.concurrency = opts.concurrency ?? 16;
    this.log = opts.logger ?? silentLogger;
  }

  static async open(opts: LocalContentCacheOptions): Promise<LocalContentCache> {
    // verifyBeforeServeBytes 0: a whole read is still hash-checked as it streams, and the 1-byte
    // reads `touch` uses to refresh the LRU stay cheap.
    const fn = opts.remote.digestFunction;
    const local = (
      await DiskBlobStore.open({
        root: join(opts.root, 'blobs'),
        maxBytes: opts.maxBytes,
        verifyBeforeServeBytes: 0,
        logger: opts.logger,
      })
    ).forFunction(fn);
    const exec = (
      await DiskBlobStore.open({
        root: join(opts.root, 'exec'),
        maxBytes: opts.executableMaxBytes ?? Math.floor(opts.maxBytes / 4),
        verifyBeforeServeBytes: 0,
        logger: opts.logger,
      })
    ).forFunction(fn);
    for (const [name, mode] of [['empty', 0o444], ['empty-x', 0o555]] as const) {
      const path = join(opts.root, name);
      await writeFile(path, '', { flag: 'a' });
      await chmod(path, mode);
    }
    return new LocalContentCache(opts, local, exec);
  }

  /** The cached file with this content and mode (0555 when `executable`, else 0444). */
  pathOf(digest: Digest, executable = false): string {
    if (isEmptyDigest(digest)) return join(this.opts.root, executable ? 'empty-x' : 'empty');
    return (executable ? this.exec : this.local).pathOf(digest);
  }

  /** How the cached blobs are hashed: the remote store's function. */
  get digestFunction(): DigestFunction {
    return this.opts.remote.digestFunction;
  }

  /**
   * Keep these blobs (their executable copies when `executable`) from eviction until the returned
   * function is called. Pin before `ensure`, so nothing fetched is evicted before it is used.
   */
  pin(digests: Digest[], executable = false): () => void {
    return (executable ? this.exec : this.local).pin(digests);
  }

  /** Fetch from the remote whatever of `digests` is not cached; reports what the remote lacks too. */
  async ensure(digests: readonly Digest[]): Promise<EnsureResult> {
    const wanted = uniqueNonEmpty(digests);
    const absentLocally = new Set((await this.local.findMissing(wanted)).map((d) => d.hash));
    const toFetch: Digest[] = [];
    const hits: Digest[] = [];
    const waits: Array<{ digest: Digest; done: Promise<boolean> }> = [];
    for (const d of wanted) {
      if (!absentLocally.has(d.hash)) {
        this.stats.hitBlobs++;
        this.stats.hitBytes += d.size_bytes;
        hits.push(d);
        continue;
      }
      this.stats.missBlobs++;
      this.stats.missBytes += d.size_bytes;
      const pending = this.inflight.get(d.hash);
      if (pending) waits.push({ digest: d, done: pending });
      else toFetch.push(d);
    }

    await forEachLimit(hits, this.concurrency, async (d) => {
      await this.fixMode(d, false);
      this.touch(d);
    });

    const missing: Digest[] = [];
    let fetchedBlobs = 0;
    let fetchedBytes = 0;
    const remoteMissing = new Set<string>();
    for (let i = 0; i < toFetch.length; i += FIND_MISSING_BATCH) {
      for (const d of await this.opts.remote.findMissing(toFetch.slice(i, i + FIND_MISSING_BATCH))) remoteMissing.add(d.hash);
    }
    const fetchable: Digest[] = [];
    for (const d of toFetch) (remoteMissing.has(d.hash) ? missing : fetchable).push(d);

    await forEachLimit(fetchable, this.concurrency, async (d) => {
      let p = this.inflight.get(d.hash);
      const mine = !p;
      if (!p) {
        p = this.fetch(d).finally(() => this.inflight.delete(d.hash));
        this.inflight.set(d.hash, p);
      }
      if (!(await p)) missing.push(d);
      else if (mine) {
        fetchedBlobs++;
        fetchedBytes += d.size_bytes;
      }
    });
    for (const w of waits) if (!(await w.done)) missing.push(w.digest);
    return { missing, fetchedBlobs, fetchedBytes };
  }

  /**
   * Make sure each of `digests` has its executable (0555) copy. The plain blobs must be cached
   * (`ensure`) first. A blob too large for the executable cap gets no copy; `materialize` then
   * copies it into the exec root.
   */
  async ensureExecutable(digests: readonly Digest[]): Promise<void> {
    const wanted = uniqueNonEmpty(digests);
    const absent = new Set((await this.exec.findMissing(wanted)).map((d) => d.hash));
    await forEachLimit(wanted, this.concurrency, async (d) => {
      if (!absent.has(d.hash)) {
        await this.fixMode(d, true);
        return;
      }
      let p = this.inflightExec.get(d.hash);
      if (!p) {
        p = this.makeExecutable(d).finally(() => this.inflightExec.delete(d.hash));
        this.inflightExec.set(d.hash, p);
      }
      await p;
    });
  }

  /**
   * Put the blob at `dest` (which must not exist) with mode 0444, or 0555 when `executable`:
   * a hardlink to the cached file when possible, else a copy. `copy` forces a copy (a verification
   * run gives inputs a different inode identity).
   */
  async materialize(digest: Digest, executable: boolean, dest: string, copy = false): Promise<'linked' | 'copied'> {
    if (!copy) {
      try {
        await link(this.pathOf(digest, executable), dest);
        return 'linked';
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        // ENOENT: no executable copy (too large for its cap). EXDEV: other filesystem. EMLINK: the
        // file has as many links as the filesystem allows. EPERM: hardlinks not permitted here.
        if (code !== 'ENOENT' && code !== 'EXDEV' && code !== 'EMLINK' && code !== 'EPERM') throw err;
        if (code === 'ENOENT' && !executable) throw err;
      }
    }
    await copyFile(this.pathOf(digest, false), dest);
    await chmod(dest, executable ? 0o555 : 0o444);
    this.stats.copiedFiles++;
    return 'copied';
  }

  private async fetch(d: Digest): Promise<boolean> {
    const writer = await this.local.write(d);
    if (!writer.alreadyExists) {
      try {
        const stream = await this.opts.remote.read(d);
        for await (const chunk of stream) await writer.append(chunk as Buffer);
        await writer.commit();
      } catch (err) {
        await writer.abort();
        if (isNotFound(err)) return false;
        throw err;
      }
      this.stats.fetchedBlobs++;
      this.stats.fetchedBytes += d.size_bytes;
    }
    await chmod(this.pathOf(d), 0o444);
    this.modeChecked.add(d.hash);
    return true;
  }

  private async makeExecutable(d: Digest): Promise<void> {
    let writer;
    try {
      writer = await this.exec.write(d);
    } catch (err) {
      if ((err as { code?: unknown }).code !== Status.RESOURCE_EXHAUSTED) throw err;
      this.log.info({ digest: `${d.hash}/${d.size_bytes}` }, 'executable larger than the executable cache; it will be copied');
      return;
    }
    if (!writer.alreadyExists) {
      try {
        for await (const chunk of await this.local.read(d)) await writer.append(chunk as Buffer);
        await writer.commit();
      } catch (err) {
        await writer.abort();
        throw err;
      }
      this.stats.executableCopies++;
    }
    await chmod(this.pathOf(d, true), 0o555);
    this.modeChecked.add(`${d.hash}x`);
  }

  /** Cached files are made read-only right after they land; this repairs a crash in between. */
  private async fixMode(d: Digest, executable: boolean): Promise<void> {
    const key = executable ? `${d.hash}x` : d.hash;
    if (this.modeChecked.has(key)) return;
    await chmod(this.pathOf(d, executable), executable ? 0o555 : 0o444).catch(() => {});
    this.modeChecked.add(key);
  }

  /**
   * DiskBlobStore refreshes its LRU order only on read, and hardlinking is not a read: read one
   * byte (at most once a minute per blob) so inputs in steady use are not evicted first.
   */
  private touch(d: Digest): void {
    const now = Date.now();
    if (now - (this.touchedAt.get(d.hash) ?? 0) < TOUCH_INTERVAL_MS) return;
    if (this.touchedAt.size > 100_000) this.touchedAt.clear();
    this.touchedAt.set(d.hash, now);
    this.local.read(d, 0, 1).then((s) => s.destroy(), () => {});
  }
}
