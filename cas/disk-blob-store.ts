// A BlobStore on the local filesystem.
//
// Layout under `root`: `cas/ab/<hash>-<size>` for SHA-256 blobs, `cas-blake3/ab/...` for BLAKE3
// ones, `tmp/` for writes in progress. A write goes to a temp file and is renamed into place only
// after its size and hash were checked, so a reader never sees a partial or wrong blob and
// concurrent writers of one blob are harmless. The in-memory index (kept in least-recently-used
// order) is rebuilt from the files at start, so a restart keeps everything; file mtimes carry the
// LRU order across restarts.
//
// One store serves every digest function through views (`forFunction`) that share the index and
// the size cap, so enabling BLAKE3 does not double the disk a node may use.
//
// Leases (Build without the Bytes): a blob found by FindMissingBlobs or written within `leaseMs`
// is never evicted, since a client may rely on it being there for that long without downloading
// it (Bazel's --experimental_remote_cache_ttl). The ActionCache service refreshes the blobs of
// every hit it serves by asking FindMissingBlobs for them. When only leased or pinned blobs are
// left to evict, the store stays over its cap and refuses new writes with RESOURCE_EXHAUSTED
// until leases run out: the cap is then too small for the traffic.
import { mkdir, open, readdir, rename, rm, stat, unlink, utimes, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { randomUUID } from 'node:crypto';
import { isEmptyDigest, type Digest } from '../common/digest.ts';
import { SHA256, type DigestFunction, type Hasher } from '../common/digest-function.ts';
import { dataLoss, notFound, outOfRange, resourceExhausted } from '../common/errors.ts';
import { silentLogger, type Logger } from '../common/logger.ts';
import type { Metrics } from '../common/metrics.ts';
import type { BlobChunkReader, BlobStore, BlobWriter } from './blob-store.ts';
import { CheckedBlobWriter, ExistingBlobWriter } from './checked-writer.ts';

export interface DiskBlobStoreOptions {
  root: string;
  /** Size cap; least recently used blobs are evicted past it. */
  maxBytes: number;
  /** Blobs up to this size are read whole and hash-checked before anything is served. */
  verifyBeforeServeBytes?: number;
  /** Blobs found or written within this time are never evicted (default 0: plain LRU). */
  leaseMs?: number;
  metrics?: Metrics;
  logger?: Logger;
}

interface Entry {
  size: number;
  /** Last time the file's mtime was set (ms), so reads refresh it at most once a minute. */
  touchedAt: number;
  /** Last time the blob was found or written (ms): its lease runs from here. */
  leasedAt: number;
  /** The directory of its digest function. */
  dir: string;
  hash: string;
}

/** Where each digest function's blobs live, and the prefix of their index keys. */
const SPACES: Record<DigestFunction['name'], { dir: string; keyPrefix: string }> = {
  SHA256: { dir: 'cas', keyPrefix: '' },
  BLAKE3: { dir: 'cas-blake3', keyPrefix: 'b3:' },
};

/** What the views of one store share: the index in LRU order, pins, and the byte count. */
class SharedIndex {
  readonly entries = new Map<string, Entry>();
  readonly pins = new Map<string, number>();
  bytes = 0;
  readonly views = new Map<DigestFunction['name'], DiskBlobStore>();
}

/** Writes are buffered up to this size: a blob that fits is written with a single call at commit. */
const BUFFER_SMALL_WRITES = 1024 * 1024;
const TOUCH_INTERVAL_MS = 60_000;
/** Most buffers one writev call takes (Linux). */
const IOV_MAX = 1024;

export class DiskBlobStore implements BlobStore {
  private readonly casDir: string;
  private readonly keyPrefix: string;
  private readonly tmpDir: string;
  private readonly verifyBeforeServeBytes: number;
  private readonly leaseMs: number;
  private readonly log: Logger;

  private constructor(
    private readonly opts: DiskBlobStoreOptions,
    readonly digestFunction: DigestFunction,
    private readonly shared: SharedIndex,
  ) {
    const space = SPACES[digestFunction.name];
    this.casDir = join(opts.root, space.dir);
    this.keyPrefix = space.keyPrefix;
    this.tmpDir = join(opts.root, 'tmp');
    this.verifyBeforeServeBytes = opts.verifyBeforeServeBytes ?? 4 * 1024 * 1024;
    this.leaseMs = opts.leaseMs ?? 0;
    this.log = opts.logger ?? silentLogger;
    shared.views.set(digestFunction.name, this);
  }

  /** Open (creating if needed) the store at `opts.root` and index what is already there; the SHA-256 view. */
  static async open(opts: DiskBlobStoreOptions): Promise<DiskBlobStore> {
    const store = new DiskBlobStore(opts, SHA256, new SharedIndex());
    opts.metrics?.casCapacityBytes.set(opts.maxBytes);
    await store.init();
    return store;
  }

  /** The view of this store for another digest function: same files root, index and cap. */
  forFunction(fn: DigestFunction): DiskBlobStore {
    return this.shared.views.get(fn.name) ?? new DiskBlobStore(this.opts, fn, this.shared);
  }

  get storedBytes(): number {
    return this.shared.bytes;
  }

  get storedBlobs(): number {
    return this.shared.entries.size;
  }

  private get index(): Map<string, Entry> {
    return this.shared.entries;
  }

  private keyOf(d: Digest): string {
    return this.keyPrefix + d.hash;
  }

  async findMissing(digests: Digest[]): Promise<Digest[]> {
    const now = Date.now();
    return digests.filter((d) => {
      if (isEmptyDigest(d)) return false;
      const entry = this.index.get(this.keyOf(d));
      if (entry?.size !== d.size_bytes) return true;
      entry.leasedAt = now;
      return false;
    });
  }

  /** Keep these blobs from eviction until the returned function is called. */
  pin(digests: Digest[]): () => void {
    const { pins } = this.shared;
    const keys = digests.map((d) => this.keyOf(d));
    for (const k of keys) pins.set(k, (pins.get(k) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      for (const k of keys) {
        const n = (pins.get(k) ?? 1) - 1;
        if (n <= 0) pins.delete(k);
        else pins.set(k, n);
      }
    };
  }

  async read(digest: Digest, offset = 0, limit = 0): Promise<Readable> {
    const opened = await this.openChecked(digest, offset, limit);
    if ('data' in opened) return Readable.from(opened.data.length ? [opened.data] : []);
    const { fh, start, end, verify } = opened;
    const stream = fh.createReadStream({ start, end: end - 1, highWaterMark: 1024 * 1024, autoClose: true });
    // A whole-blob read of a large blob is checked as it streams; a mismatch ends the stream with
    // DATA_LOSS, so the client never completes a read of corrupt data, and the file is removed.
    return verify ? stream.pipe(this.verifier(digest, stream)) : stream;
  }

  /**
   * Like read(), but the caller reads into its own buffers (ByteStream.Read reuses them, which
   * spares an allocation, and the garbage collection it costs, per megabyte served). The same
   * checks apply: a whole-blob read is hash-checked, and its last read() fails with DATA_LOSS
   * instead of returning the final bytes of a blob that does not match its digest.
   */
  async openReader(digest: Digest, offset = 0, limit = 0): Promise<BlobChunkReader> {
    const opened = await this.openChecked(digest, offset, limit);
    if ('data' in opened) return new BufferChunkReader(opened.data);
    const { fh, start, end, verify } = opened;
    return new FileChunkReader(fh, start, end, digest, verify ? this.digestFunction.hasher() : undefined, (why) => this.removeCorrupt(digest, why));
  }

  /**
   * Open a blob for reading `limit` bytes (0 = to the end) from `offset`, after the checks every
   * read gets: NOT_FOUND when absent or when the file has the wrong size (then it is removed). A
   * blob up to verifyBeforeServeBytes is read whole and hash-checked here; a larger one comes back
   * as an open file, with `verify` set when the whole blob is read and so can be checked as it goes.
   */
  private async openChecked(
    digest: Digest,
    offset: number,
    limit: number,
  ): Promise<{ data: Buffer } | { fh: FileHandle; start: number; end: number; verify: boolean }> {
    const size = digest.size_bytes;
    if (offset > size) throw outOfRange(`offset ${offset} is past the end of blob ${digest.hash}/${size}`);
    if (isEmptyDigest(digest)) return { data: Buffer.alloc(0) };
    const path = this.pathOf(digest);
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        this.forget(this.keyOf(digest));
        throw notFound(`blob ${digest.hash}/${size} not found`);
      }
      throw err;
    }
    try {
      const actualSize = (await fh.stat()).size;
      if (actualSize !== size) {
        await this.removeCorrupt(digest, `file holds ${actualSize} bytes, expected ${size}`);
        throw notFound(`blob ${digest.hash}/${size} not found (the stored copy was corrupt and has been removed)`);
      }
      this.touch(digest, path);
      const end = limit > 0 ? Math.min(size, offset + limit) : size;
      if (end <= offset) {
        // Nothing to send (offset at the end).
        await fh.close();
        return { data: Buffer.alloc(0) };
      }
      if (size <= this.verifyBeforeServeBytes) {
        const data = await fh.readFile();
        await fh.close();
        if (this.digestFunction.hash(data) !== digest.hash) {
          await this.removeCorrupt(digest, 'content does not match its hash');
          throw notFound(`blob ${digest.hash}/${size} not found (the stored copy was corrupt and has been removed)`);
        }
        return { data: data.subarray(offset, end) };
      }
      return { fh, start: offset, end, verify: offset === 0 && end === size };
    } catch (err) {
      await fh.close().catch(() => {});
      throw err;
    }
  }

  async write(digest: Digest): Promise<BlobWriter> {
    const existing = this.index.get(this.keyOf(digest));
    if (isEmptyDigest(digest) || existing?.size === digest.size_bytes) {
      if (existing) existing.leasedAt = Date.now();
      return new ExistingBlobWriter(digest);
    }
    if (digest.size_bytes > this.opts.maxBytes) {
      throw resourceExhausted(
        `blob ${digest.hash} of ${digest.size_bytes} bytes is larger than the whole CAS (${this.opts.maxBytes} bytes)`,
      );
    }
    if (this.shared.bytes > this.opts.maxBytes) {
      // The last eviction could not get under the cap: everything left is leased or pinned.
      this.opts.metrics?.casWritesRefused.inc();
      throw resourceExhausted(
        `the CAS is full: its ${this.shared.bytes} bytes (cap ${this.opts.maxBytes}) are all leased to clients ` +
          `(found or written within the last ${Math.round(this.leaseMs / 1000)} s, storage.leaseSeconds) or in use by running actions; ` +
          'raise the cap (--max-cas-bytes) or shorten the lease',
      );
    }
    const tmpPath = join(this.tmpDir, `${digest.hash}.${randomUUID()}`);
    return new DiskBlobWriter(digest, this.digestFunction, tmpPath, async () => {
      await rename(tmpPath, this.pathOf(digest));
      this.added(digest);
    });
  }

  private async init(): Promise<void> {
    await rm(this.tmpDir, { recursive: true, force: true });
    await mkdir(this.tmpDir, { recursive: true });
    const found: Array<Entry & { key: string }> = [];
    for (const space of Object.values(SPACES)) {
      const root = join(this.opts.root, space.dir);
      for (let i = 0; i < 256; i++) {
        const dir = join(root, i.toString(16).padStart(2, '0'));
        await mkdir(dir, { recursive: true });
        for (const file of await readdir(dir)) {
          const m = /^([0-9a-f]{64})-(\d+)$/.exec(file);
          if (!m) {
            this.log.warn({ file: join(dir, file) }, 'ignoring a file that is not a blob');
            continue;
          }
          const st = await stat(join(dir, file)).catch(() => undefined);
          if (!st) continue;
          found.push({ key: space.keyPrefix + m[1]!, hash: m[1]!, dir: root, size: Number(m[2]), touchedAt: st.mtimeMs, leasedAt: st.mtimeMs });
        }
      }
    }
    found.sort((a, b) => a.touchedAt - b.touchedAt);
    for (const { key, ...entry } of found) {
      this.index.set(key, entry);
      this.shared.bytes += entry.size;
    }
    this.updateGauges();
    this.log.info({ blobs: this.index.size, bytes: this.shared.bytes, root: this.opts.root }, 'disk CAS opened');
    await this.evict();
  }

  /** Where the blob's file is (or would be): for callers that link to stored files (the worker's input cache). */
  pathOf(d: Digest): string {
    return entryPath(this.casDir, d.hash, d.size_bytes);
  }

  private touch(d: Digest, path: string): void {
    const key = this.keyOf(d);
    const entry = this.index.get(key);
    if (!entry) return;
    this.index.delete(key);
    this.index.set(key, entry);
    const now = Date.now();
    if (now - entry.touchedAt > TOUCH_INTERVAL_MS) {
      entry.touchedAt = now;
      utimes(path, now / 1000, now / 1000).catch(() => {});
    }
  }

  private added(d: Digest): void {
    const key = this.keyOf(d);
    if (this.index.has(key)) return;
    const now = Date.now();
    this.index.set(key, { size: d.size_bytes, touchedAt: now, leasedAt: now, dir: this.casDir, hash: d.hash });
    this.shared.bytes += d.size_bytes;
    this.updateGauges();
    if (this.shared.bytes > this.opts.maxBytes) void this.evict();
  }

  private forget(key: string): Entry | undefined {
    const entry = this.index.get(key);
    if (!entry) return undefined;
    this.index.delete(key);
    this.shared.bytes -= entry.size;
    this.updateGauges();
    return entry;
  }

  /** Evict least recently used blobs (of any digest function) until under the cap, sparing leased and pinned ones. */
  private async evict(): Promise<void> {
    const victims: Entry[] = [];
    const leasedSince = Date.now() - this.leaseMs;
    let spared = 0;
    for (const [key, entry] of this.index) {
      if (this.shared.bytes <= this.opts.maxBytes) break;
      if (this.shared.pins.has(key)) continue;
      if (this.leaseMs > 0 && entry.leasedAt > leasedSince) {
        spared++;
        continue;
      }
      this.forget(key);
      victims.push(entry);
    }
    if (this.shared.bytes > this.opts.maxBytes) {
      this.log.warn(
        { bytes: this.shared.bytes, maxBytes: this.opts.maxBytes, leased: spared, leaseSeconds: this.leaseMs / 1000 },
        'CAS over its size cap: the rest is leased to clients or pinned by running actions; new writes are refused until leases run out',
      );
    }
    for (const v of victims) {
      this.opts.metrics?.casEvictions.inc();
      this.opts.metrics?.casEvictedBytes.inc(v.size);
      await unlink(entryPath(v.dir, v.hash, v.size)).catch(() => {});
    }
  }

  private async removeCorrupt(d: Digest, why: string): Promise<void> {
    this.log.error({ digest: `${d.hash}/${d.size_bytes}`, digestFunction: this.digestFunction.name, why }, 'corrupt blob found on read; removing it');
    this.opts.metrics?.casCorruptBlobs.inc();
    this.forget(this.keyOf(d));
    await unlink(this.pathOf(d)).catch(() => {});
  }

  private verifier(d: Digest, source: Readable): Transform {
    const hash = this.digestFunction.hasher();
    return new Transform({
      transform(chunk: Buffer, _enc, done) {
        hash.update(chunk);
        done(null, chunk);
      },
      flush: (done) => {
        if (hash.hex() === d.hash) return done();
        this.removeCorrupt(d, 'content does not match its hash').finally(() =>
          done(dataLoss(`blob ${d.hash}/${d.size_bytes} is corrupt on disk and has been removed; upload it again`)),
        );
      },
      destroy(err, done) {
        source.destroy();
        done(err);
      },
    });
  }

  private updateGauges(): void {
    this.opts.metrics?.casStoredBytes.set(this.shared.bytes);
    this.opts.metrics?.casStoredBlobs.set(this.index.size);
  }
}

function entryPath(casDir: string, hash: string, size: number): string {
  return join(casDir, hash.slice(0, 2), `${hash}-${size}`);
}

/** A small blob, already read whole and checked. */
class BufferChunkReader implements BlobChunkReader {
  private pos = 0;
  constructor(private readonly data: Buffer) {}
  get remaining(): number {
    return this.data.length - this.pos;
  }
  async read(buf: Buffer, offset: number, length: number): Promise<number> {
    const n = this.data.copy(buf, offset, this.pos, this.pos + Math.min(length, this.remaining));
    this.pos += n;
    return n;
  }
  async close(): Promise<void> {}
}

class FileChunkReader implements BlobChunkReader {
  private pos: number;
  private closed?: Promise<void>;

  constructor(
    private readonly fh: FileHandle,
    start: number,
    private readonly end: number,
    private readonly digest: Digest,
    /** Set when the whole blob is read: its hash is checked before the last bytes are returned. */
    private readonly hash: Hasher | undefined,
    private readonly onCorrupt: (why: string) => Promise<void>,
  ) {
    this.pos = start;
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  async read(buf: Buffer, offset: number, length: number): Promise<number> {
    const n = Math.min(length, this.remaining);
    let got = 0;
    while (got < n) {
      const { bytesRead } = await this.fh.read(buf, offset + got, n - got, this.pos + got);
      if (bytesRead === 0) {
        // The file shrank since it was opened: it is not the blob any more.
        await this.onCorrupt(`file ended at ${this.pos + got} bytes, expected ${this.end}`);
        throw this.corrupt();
      }
      got += bytesRead;
    }
    this.pos += n;
    if (this.hash) {
      this.hash.update(buf.subarray(offset, offset + n));
      if (this.pos === this.end && this.hash.hex() !== this.digest.hash) {
        await this.onCorrupt('content does not match its hash');
        throw this.corrupt();
      }
    }
    return n;
  }

  close(): Promise<void> {
    this.closed ??= this.fh.close().catch(() => {});
    return this.closed;
  }

  private corrupt() {
    return dataLoss(`blob ${this.digest.hash}/${this.digest.size_bytes} is corrupt on disk and has been removed; upload it again`);
  }
}

class DiskBlobWriter extends CheckedBlobWriter {
  private buffered: Buffer[] = [];
  private bufferedBytes = 0;
  private file?: FileHandle;
  /** File offset of the next write. */
  private position = 0;

  constructor(
    digest: Digest,
    fn: DigestFunction,
    private readonly tmpPath: string,
    private readonly onCommit: () => Promise<void>,
  ) {
    super(digest, fn);
  }

  protected async store(chunk: Buffer): Promise<void> {
    // Collect small chunks (Bazel sends 16 KiB) and write them a megabyte at a time, with one
    // writev call (no copy into one buffer): one write call per chunk costs more than the hashing.
    if (chunk.length === 0) return;
    this.buffered.push(chunk);
    this.bufferedBytes += chunk.length;
    if (this.bufferedBytes < BUFFER_SMALL_WRITES) return;
    await this.flush(await this.openFile());
  }

  /** The temp file: created on first use, reopened after a spill closed it. */
  private async openFile(): Promise<FileHandle> {
    this.file ??= await open(this.tmpPath, this.position > 0 ? 'r+' : 'wx');
    return this.file;
  }

  /** A write waiting to be resumed keeps neither memory nor an open file. */
  async spill(): Promise<void> {
    if (this.state !== 'open') return;
    if (this.bufferedBytes > 0) await this.flush(await this.openFile());
    const file = this.file;
    this.file = undefined;
    await file?.close();
  }

  private async flush(file: FileHandle): Promise<void> {
    const parts = this.buffered;
    const bytes = this.bufferedBytes;
    this.buffered = [];
    this.bufferedBytes = 0;
    await writeFully(file, parts, this.position);
    this.position += bytes;
  }

  // On failure the base class discards the temp file.
  protected async publish(): Promise<void> {
    if (this.file || this.position > 0) {
      const file = await this.openFile();
      if (this.bufferedBytes > 0) await this.flush(file);
      await file.close();
    } else {
      await writeFile(this.tmpPath, this.buffered.length === 1 ? this.buffered[0]! : Buffer.concat(this.buffered), { flag: 'wx' });
    }
    this.file = undefined;
    await this.onCommit();
  }

  protected async discard(): Promise<void> {
    this.buffered = [];
    this.bufferedBytes = 0;
    const file = this.file;
    this.file = undefined;
    await file?.close().catch(() => {});
    await unlink(this.tmpPath).catch(() => {});
  }
}

/**
 * Write `parts` one after another at `position`: one writev call for many small chunks (no copy
 * into one buffer), repeated for whatever a call leaves unwritten.
 */
async function writeFully(file: FileHandle, parts: Buffer[], position: number): Promise<void> {
  let rest = parts;
  while (rest.length > 0) {
    const batch = rest.length > IOV_MAX ? rest.slice(0, IOV_MAX) : rest;
    const { bytesWritten } = batch.length === 1 ? await file.write(batch[0]!, 0, batch[0]!.length, position) : await file.writev(batch, position);
    if (bytesWritten <= 0) throw new Error(`write at ${position} made no progress`);
    position += bytesWritten;
    let skip = bytesWritten;
    let i = 0;
    while (i < rest.length && skip >= rest[i]!.length) skip -= rest[i++]!.length;
    rest = rest.slice(i);
    if (skip > 0) rest[0] = rest[0]!.subarray(skip);
  }
}
