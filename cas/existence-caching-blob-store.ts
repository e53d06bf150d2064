// A BlobStore decorator that remembers, for `ttlMs`, which blobs its backend has: FindMissingBlobs
// of inputs a build uploads again and again (Bazel asks before every action) is answered here
// without a round trip to the storage nodes. Only presence is remembered, and only for blobs the
// backend said it has or that were written through here; a blob evicted within `ttlMs` may be
// reported present, which a client recovers from as from any later eviction.
import type { Readable } from 'node:stream';
import { LRUCache } from 'lru-cache';
import { digestKey, type Digest } from '../common/digest.ts';
import type { DigestFunction } from '../common/digest-function.ts';
import type { BlobChunkReader, BlobStore, BlobWriter } from './blob-store.ts';
import { ForwardingBlobWriter } from './forwarding-blob-writer.ts';

export class ExistenceCachingBlobStore implements BlobStore {
  private readonly present: LRUCache<string, true>;
  readonly digestFunction: DigestFunction;
  readonly openReader?: (digest: Digest, offset?: number, limit?: number) => Promise<BlobChunkReader>;

  constructor(
    private readonly inner: BlobStore,
    opts: { ttlMs: number; maxEntries: number },
  ) {
    this.present = new LRUCache({ max: opts.maxEntries, ttl: opts.ttlMs });
    this.digestFunction = inner.digestFunction;
    const openReader = inner.openReader?.bind(inner);
    if (openReader) this.openReader = openReader;
  }

  async findMissing(digests: Digest[]): Promise<Digest[]> {
    const unknown = digests.filter((d) => !this.present.has(digestKey(d)));
    if (unknown.length === 0) return [];
    const missing = await this.inner.findMissing(unknown);
    const absent = new Set(missing.map(digestKey));
    for (const d of unknown) if (!absent.has(digestKey(d))) this.present.set(digestKey(d), true);
    return missing;
  }

  read(digest: Digest, offset?: number, limit?: number): Promise<Readable> {
    return this.inner.read(digest, offset, limit);
  }

  async write(digest: Digest): Promise<BlobWriter> {
    return new RememberingWriter(await this.inner.write(digest), () => this.present.set(digestKey(digest), true));
  }
}

/** Once committed, the blob is remembered as present. */
class RememberingWriter extends ForwardingBlobWriter {
  constructor(
    inner: BlobWriter,
    private readonly committed: () => void,
  ) {
    super(inner);
  }

  override async commit(): Promise<void> {
    await this.inner.commit();
    this.committed();
  }
}
