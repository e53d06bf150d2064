// The part every BlobWriter shares: refuse bytes past the declared size, hash as bytes arrive,
// and check size and SHA-256 before the storage-specific publish step.
import { createHash, type Hash } from 'node:crypto';
import type { Digest } from '../common/digest.ts';
import { invalidArgument, outOfRange } from '../common/errors.ts';
import type { BlobWriter } from './blob-store.ts';

export abstract class CheckedBlobWriter implements BlobWriter {
  private readonly hash: Hash = createHash('sha256');
  private state: 'open' | 'committed' | 'aborted' = 'open';
  written = 0;
  readonly alreadyExists: boolean = false;

  constructor(readonly digest: Digest) {}

  protected abstract store(chunk: Buffer): Promise<void>;
  protected abstract publish(): Promise<void>;
  protected abstract discard(): Promise<void>;

  async append(chunk: Buffer): Promise<void> {
    if (this.state !== 'open') throw invalidArgument(`write of ${this.digest.hash} is already ${this.state}`);
    if (this.written + chunk.length > this.digest.size_bytes) {
      throw outOfRange(
        `write of ${this.digest.hash}/${this.digest.size_bytes} goes past the declared size ` +
          `(${this.written + chunk.length} bytes sent)`,
      );
    }
    this.hash.update(chunk);
    this.written += chunk.length;
    await this.store(chunk);
  }

  async commit(): Promise<void> {
    if (this.state === 'committed') return;
    if (this.state === 'aborted') throw invalidArgument(`write of ${this.digest.hash} was aborted`);
    if (this.written !== this.digest.size_bytes) {
      throw invalidArgument(
        `blob ${this.digest.hash}: declared size ${this.digest.size_bytes} but ${this.written} bytes were sent`,
      );
    }
    const actual = this.hash.digest('hex');
    if (actual !== this.digest.hash) {
      await this.abort();
      throw invalidArgument(`blob content hashes to ${actual}, not to the declared ${this.digest.hash}`);
    }
    await this.publish();
    this.state = 'committed';
  }

  async abort(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    await this.discard();
  }
}

/** The writer for a blob that is already stored: accepts and ignores bytes, commits at once. */
export class ExistingBlobWriter implements BlobWriter {
  readonly alreadyExists = true;
  written: number;
  constructor(readonly digest: Digest) {
    this.written = digest.size_bytes;
  }
  async append(): Promise<void> {}
  async commit(): Promise<void> {}
  async abort(): Promise<void> {}
}
