// A BlobStore decorator that counts what passes through one node of the CAS chain: operations by
// result, bytes, and how long finding, opening and committing take. The factory wraps every node,
// so a worker's direct uploads and each shard of a sharded CAS are counted too.
import type { DigestFunction } from '../common/digest-function.ts';
import type { Readable } from 'node:stream';
import type { Digest } from '../common/digest.ts';
import { Status } from '../common/errors.ts';
import type { Metrics } from '../common/metrics.ts';
import type { BlobChunkReader, BlobStore, BlobWriter } from './blob-store.ts';
import { ForwardingBlobWriter } from './forwarding-blob-writer.ts';

function resultOf(err: unknown): string {
  return (err as { code?: unknown } | null)?.code === Status.NOT_FOUND ? 'missing' : 'error';
}

/** Bytes a read of [offset, offset+limit) asks for (limit 0: to the end). */
function requested(digest: Digest, offset = 0, limit = 0): number {
  const rest = Math.max(0, digest.size_bytes - offset);
  return limit > 0 ? Math.min(limit, rest) : rest;
}

export class MetricsBlobStore implements BlobStore {
  readonly digestFunction: DigestFunction;
  readonly openReader?: (digest: Digest, offset?: number, limit?: number) => Promise<BlobChunkReader>;

  constructor(
    private readonly inner: BlobStore,
    private readonly metrics: Metrics,
    private readonly backend: string,
  ) {
    this.digestFunction = inner.digestFunction;
    const openReader = inner.openReader?.bind(inner);
    if (openReader) this.openReader = (digest, offset, limit) => this.timedRead(digest, offset, limit, () => openReader(digest, offset, limit));
  }

  async findMissing(digests: Digest[]): Promise<Digest[]> {
    const end = this.metrics.blobStoreDuration.startTimer({ backend: this.backend, operation: 'find_missing' });
    try {
      const missing = await this.inner.findMissing(digests);
      this.count('find_missing', 'ok');
      return missing;
    } catch (err) {
      this.count('find_missing', 'error');
      throw err;
    } finally {
      end();
    }
  }

  read(digest: Digest, offset?: number, limit?: number): Promise<Readable> {
    return this.timedRead(digest, offset, limit, () => this.inner.read(digest, offset, limit));
  }

  async write(digest: Digest): Promise<BlobWriter> {
    try {
      return new MetricsBlobWriter(await this.inner.write(digest), this);
    } catch (err) {
      this.count('write', 'error');
      throw err;
    }
  }

  count(operation: string, result: string): void {
    this.metrics.blobStoreOperations.inc({ backend: this.backend, operation, result });
  }

  bytes(direction: 'read' | 'write', n: number): void {
    if (n > 0) this.metrics.blobStoreBytes.inc({ backend: this.backend, direction }, n);
  }

  timer(operation: string): () => void {
    const end = this.metrics.blobStoreDuration.startTimer({ backend: this.backend, operation });
    return () => void end();
  }

  private async timedRead<T>(digest: Digest, offset: number | undefined, limit: number | undefined, open: () => Promise<T>): Promise<T> {
    const end = this.timer('read');
    try {
      const r = await open();
      this.count('read', 'ok');
      this.bytes('read', requested(digest, offset, limit));
      return r;
    } catch (err) {
      this.count('read', resultOf(err));
      throw err;
    } finally {
      end();
    }
  }
}

class MetricsBlobWriter extends ForwardingBlobWriter {
  constructor(
    inner: BlobWriter,
    private readonly store: MetricsBlobStore,
  ) {
    super(inner);
  }

  override async commit(): Promise<void> {
    if (this.inner.alreadyExists) {
      await this.inner.commit();
      this.store.count('write', 'exists');
      return;
    }
    const end = this.store.timer('write');
    try {
      await this.inner.commit();
      this.store.count('write', 'ok');
      this.store.bytes('write', this.inner.digest.size_bytes);
    } catch (err) {
      this.store.count('write', 'error');
      throw err;
    } finally {
      end();
    }
  }
}
