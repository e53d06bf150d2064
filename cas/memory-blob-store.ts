// A BlobStore in process memory with a size cap (least recently used evicted first). For tests,
// caches in front of slower stores, and throwaway servers.
import { Readable } from 'node:stream';
import { isEmptyDigest, type Digest } from '../common/digest.ts';
import { notFound, outOfRange, resourceExhausted } from '../common/errors.ts';
import { SHA256, type DigestFunction } from '../common/digest-function.ts';
import type { BlobStore, BlobWriter } from './blob-store.ts';
import { CheckedBlobWriter, ExistingBlobWriter } from './checked-writer.ts';

export class MemoryBlobStore implements BlobStore {
  /** Map iteration order is the LRU order: oldest first. */
  private readonly blobs = new Map<string, Buffer>();
  private bytes = 0;

  constructor(
    private readonly maxBytes: number = Number.MAX_SAFE_INTEGER,
    readonly digestFunction: DigestFunction = SHA256,
  ) {}

  get storedBytes(): number {
    return this.bytes;
  }

  async findMissing(digests: Digest[]): Promise<Digest[]> {
    return digests.filter((d) => !isEmptyDigest(d) && !this.blobs.has(d.hash));
  }

  async read(digest: Digest, offset = 0, limit = 0): Promise<Readable> {
    const data = isEmptyDigest(digest) ? Buffer.alloc(0) : this.blobs.get(digest.hash);
    if (!data) throw notFound(`blob ${digest.hash}/${digest.size_bytes} not found`);
    if (offset > data.length) throw outOfRange(`offset ${offset} is past the end of ${digest.hash} (${data.length} bytes)`);
    this.touch(digest.hash, data);
    const end = limit > 0 ? Math.min(data.length, offset + limit) : data.length;
    return Readable.from([data.subarray(offset, end)], { objectMode: false });
  }

  async write(digest: Digest): Promise<BlobWriter> {
    if (isEmptyDigest(digest) || this.blobs.has(digest.hash)) return new ExistingBlobWriter(digest);
    if (digest.size_bytes > this.maxBytes) {
      throw resourceExhausted(`blob of ${digest.size_bytes} bytes is larger than the whole store (${this.maxBytes})`);
    }
    return new MemoryBlobWriter(digest, this.digestFunction, (data) => this.insert(digest.hash, data));
  }

  private touch(hash: string, data: Buffer): void {
    this.blobs.delete(hash);
    this.blobs.set(hash, data);
  }

  private insert(hash: string, data: Buffer): void {
    if (this.blobs.has(hash)) return;
    this.blobs.set(hash, data);
    this.bytes += data.length;
    for (const [oldHash, old] of this.blobs) {
      if (this.bytes <= this.maxBytes) break;
      if (oldHash === hash) continue;
      this.blobs.delete(oldHash);
      this.bytes -= old.length;
    }
  }
}

class MemoryBlobWriter extends CheckedBlobWriter {
  private chunks: Buffer[] = [];

  constructor(digest: Digest, fn: DigestFunction, private readonly onPublish: (data: Buffer) => void) {
    super(digest, fn);
  }

  protected async store(chunk: Buffer): Promise<void> {
    // Copy: gRPC may reuse the buffer it handed us.
    this.chunks.push(Buffer.from(chunk));
  }

  protected async publish(): Promise<void> {
    this.onPublish(Buffer.concat(this.chunks));
    this.chunks = [];
  }

  protected async discard(): Promise<void> {
    this.chunks = [];
  }
}
