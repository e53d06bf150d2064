// A BlobStore on the local filesystem.
//
// Layout under `root`: `cas/ab/<hash>-<size>` for blobs, `tmp/` for writes in progress. A write goes
// to a temp file and is renamed into place only after its size and SHA-256 were checked, so a
// reader never sees a partial or wrong blob and concurrent writers of one blob are harmless.
// The in-memory index (hash -> size, kept in least-recently-used order) is rebuilt from the files
// at start, so a restart keeps everything; file mtimes carry the LRU order across restarts.
import { createHash, type Hash } from 'node:crypto';
import { mkdir, open, readdir, rename, rm, stat, unlink, utimes, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { randomUUID } from 'node:crypto';
import { isEmptyDigest, type Digest } from '../common/digest.ts';
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
  metrics?: Metrics;
  logger?: Logger;
}

interface Entry {
  size: number;
  /** Last time the file's mtime was set (ms), so reads refresh it at most once a minute. */
  touchedAt: number;
}

/** Writes are buffered up to this size: a blob that fits is written with a single call at commit. */
const BUFFER_SMALL_WRITES = 1024 * 1024;
const TOUCH_INTERVAL_MS = 60_000;
/** Most buffers one writev call takes (Linux). */
const IOV_MAX = 1024;

export class DiskBlobStore implements BlobStore {
  private readonly index = new Map<string, Entry>();
  private readonly pins = new Map<string, number>();
  private bytes = 0;
  private readonly casDir: string;
  private readonly tmpDir: string;
  private readonly verifyBeforeServeBytes: number;
  private readonly log: Logger;

  private constructor(private readonly opts: DiskBlobStoreOptions) {
    this.casDir = join(opts.root, 'cas');
    this.tmpDir = join(opts.root, 'tmp');
    this.verifyBeforeServeBytes = opts.verifyBeforeServeBytes ?? 4 * 1024 * 1024;
    this.log = opts.logger ?? silentLogger;
    opts.metrics?.casCapacityBytes.set(opts.maxBytes);
  }

  /** Open (creating if needed) the store at `opts.root` and index what is already there. */
  static async open(opts: DiskBlobStoreOptions): Promise<DiskBlobStore> {
    const store = new DiskBlobStore(opts);
    await store.init();
    return store;
  }

  get storedBytes(): number {
    return this.bytes;
  }

  get storedBlobs(): number {
    return this.index.size;
  }

  async findMissing(digests: Digest[]): Promise<Digest[]> {
    return digests.filter((d) => !isEmptyDigest(d) && this.index.get(d.hash)?.size !== d.size_bytes);
  }

  /** Keep these blobs from eviction until the returned function is called. */
  pin(digests: Digest[]): () => void {
    for (const d of digests) this.pins.set(d.hash, (this.pins.get(d.hash) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      for (const d of digests) {
        const n = (this.pins.get(d.hash) ?? 1) - 1;
        if (n <= 0) this.pins.delete(d.hash);
        else this.pins.set(d.hash, n);
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
    return new FileChunkReader(fh, start, end, digest, verify, (why) => this.removeCorrupt(digest, why));
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
        this.forget(digest.hash);
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
        if (createHash('sha256').update(data).digest('hex') !== digest.hash) {
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
    if (isEmptyDigest(digest) || this.index.get(digest.hash)?.size === digest.size_bytes) {
      return new ExistingBlobWriter(digest);
    }
    if (digest.size_bytes > this.opts.maxBytes) {
      throw resourceExhausted(
        `blob ${digest.hash} of ${digest.size_bytes} bytes is larger than the whole CAS (${this.opts.maxBytes} bytes)`,
      );
    }
    const tmpPath = join(this.tmpDir, `${digest.hash}.${randomUUID()}`);
    return new DiskBlobWriter(digest, tmpPath, async () => {
      await rename(tmpPath, this.pathOf(digest));
      this.added(digest);
    });
  }

  private async init(): Promise<void> {
    await rm(this.tmpDir, { recursive: true, force: true });
    await mkdir(this.tmpDir, { recursive: true });
    const found: Array<{ hash: string; size: number; mtime: number }> = [];
    for (let i = 0; i < 256; i++) {
      const dir = join(this.casDir, i.toString(16).padStart(2, '0'));
      await mkdir(dir, { recursive: true });
      for (const name of await readdir(dir)) {
        const m = /^([0-9a-f]{64})-(\d+)$/.exec(name);
        if (!m) {
          this.log.warn({ file: join(dir, name) }, 'ignoring a file that is not a blob');
          continue;
        }
        const st = await stat(join(dir, name)).catch(() => undefined);
        if (!st) continue;
        found.push({ hash: m[1]!, size: Number(m[2]), mtime: st.mtimeMs });
      }
    }
    found.sort((a, b) => a.mtime - b.mtime);
    for (const f of found) {
      this.index.set(f.hash, { size: f.size, touchedAt: f.mtime });
      this.bytes += f.size;
    }
    this.updateGauges();
    this.log.info({ blobs: this.index.size, bytes: this.bytes, root: this.opts.root }, 'disk CAS opened');
    await this.evict();
  }

  private pathOf(d: Digest): string {
    return join(this.casDir, d.hash.slice(0, 2), `${d.hash}-${d.size_bytes}`);
  }

  private touch(d: Digest, path: string): void {
    const entry = this.index.get(d.hash);
    if (!entry) return;
    this.index.delete(d.hash);
    this.index.set(d.hash, entry);
    const now = Date.now();
    if (now - entry.touchedAt > TOUCH_INTERVAL_MS) {
      entry.touchedAt = now;
      utimes(path, now / 1000, now / 1000).catch(() => {});
    }
  }

  private added(d: Digest): void {
    if (this.index.has(d.hash)) return;
    this.index.set(d.hash, { size: d.size_bytes, touchedAt: Date.now() });
    this.bytes += d.size_bytes;
    this.updateGauges();
    if (this.bytes > this.opts.maxBytes) void this.evict();
  }

  private forget(hash: string): Entry | undefined {
    const entry = this.index.get(hash);
    if (!entry) return undefined;
    this.index.delete(hash);
    this.bytes -= entry.size;
    this.updateGauges();
    return entry;
  }

  private async evict(): Promise<void> {
    const victims: Digest[] = [];
    for (const [hash, entry] of this.index) {
      if (this.bytes <= this.opts.maxBytes) break;
      if (this.pins.has(hash)) continue;
      this.forget(hash);
      victims.push({ hash, size_bytes: entry.size });
    }
    if (this.bytes > this.opts.maxBytes) {
      this.log.warn({ bytes: this.bytes, maxBytes: this.opts.maxBytes }, 'CAS over its size cap: the rest is pinned by running actions');
    }
    for (const v of victims) {
      this.opts.metrics?.casEvictions.inc();
      this.opts.metrics?.casEvictedBytes.inc(v.size_bytes);
      await unlink(this.pathOf(v)).catch(() => {});
    }
  }

  private async removeCorrupt(d: Digest, why: string): Promise<void> {
    this.log.error({ digest: `${d.hash}/${d.size_bytes}`, why }, 'corrupt blob found on read; removing it');
    this.opts.metrics?.casCorruptBlobs.inc();
    this.forget(d.hash);
    await unlink(this.pathOf(d)).catch(() => {});
  }

  private verifier(d: Digest, source: Readable): Transform {
    const hash = createHash('sha256');
    return new Transform({
      transform(chunk: Buffer, _enc, done) {
        hash.update(chunk);
        done(null, chunk);
      },
      flush: (done) => {
        if (hash.digest('hex') === d.hash) return done();
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
    this.opts.metrics?.casStoredBytes.set(this.bytes);
    this.opts.metrics?.casStoredBlobs.set(this.index.size);
  }
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
  private readonly hash?: Hash;
  private closed?: Promise<void>;

  constructor(
    private readonly fh: FileHandle,
    start: number,
    private readonly end: number,
    private readonly digest: Digest,
    /** Set when the whole blob is read: its hash is checked before the last bytes are returned. */
    verify: boolean,
    private readonly onCorrupt: (why: string) => Promise<void>,
  ) {
    this.pos = start;
    if (verify) this.hash = createHash('sha256');
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
      if (this.pos === this.end && this.hash.digest('hex') !== this.digest.hash) {
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
    private readonly tmpPath: string,
    private readonly onCommit: () => Promise<void>,
  ) {
    super(digest);
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
