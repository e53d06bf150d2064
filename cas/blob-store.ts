// The BlobStore seam: content-addressed blobs keyed by digest. Implementations (memory, disk,
// remote) and decorators (metrics, sharding, ...) all speak this interface. A store holds the
// blobs of one digest function (the storage factory builds one chain per function), so whoever
// hashes for it (uploads, the worker's outputs) takes its `digestFunction`.
import type { Readable } from 'node:stream';
import type { Digest } from '../common/digest.ts';
import type { DigestFunction } from '../common/digest-function.ts';

export interface BlobStore {
  /** How this store's blobs are hashed: commits and reads are checked with it. */
  readonly digestFunction: DigestFunction;

  /** The digests among `digests` that are not stored. The empty blob is always present. */
  findMissing(digests: Digest[]): Promise<Digest[]>;

  /**
   * A stream of `limit` bytes (0 = to the end) starting at `offset`. Rejects with NOT_FOUND when
   * the blob is absent and OUT_OF_RANGE when `offset` is past its end.
   */
  read(digest: Digest, offset?: number, limit?: number): Promise<Readable>;

  /** Start writing one blob; nothing is visible until `commit()` has checked size and hash. */
  write(digest: Digest): Promise<BlobWriter>;

  /**
   * Optional, for stores on local files: open a blob to be read into the caller's buffers (the
   * fast path of ByteStream.Read). Same errors as `read`.
   */
  openReader?(digest: Digest, offset?: number, limit?: number): Promise<BlobChunkReader>;
}

/** A blob opened for reading into the caller's buffers (BlobStore.openReader). */
export interface BlobChunkReader {
  /** Bytes still to read. */
  readonly remaining: number;
  /** Read the next min(length, remaining) bytes into `buf` at `offset`; resolves to that count. */
  read(buf: Buffer, offset: number, length: number): Promise<number>;
  /** Release the file; safe to call more than once. */
  close(): Promise<void>;
}

export interface BlobWriter {
  readonly digest: Digest;
  /** Bytes accepted so far. */
  readonly written: number;
  /** True when the blob was already stored at `write()` time; `commit()` is then a no-op. */
  readonly alreadyExists: boolean;
  /** Append bytes; rejects with OUT_OF_RANGE past the declared size. */
  append(chunk: Buffer): Promise<void>;
  /** Check size and hash and make the blob visible atomically; INVALID_ARGUMENT on mismatch. */
  commit(): Promise<void>;
  /** Drop everything written; safe to call more than once and after commit. */
  abort(): Promise<void>;
  /**
   * Optional: move what the writer holds in memory to where the blob is being written (a temp
   * file), for a write that waits to be resumed. Further appends continue it.
   */
  spill?(): Promise<void>;
}
