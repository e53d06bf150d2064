// The part every BlobWriter shares: one state machine (open, committed, aborted), bytes past the
// declared size refused, the size checked before the storage-specific publish step, and a failed
// publish discarding the upload. CheckedBlobWriter adds the hash check (the store's digest function) for stores that keep
// blobs themselves; a remote store leaves that to the node it uploads to.
import type { Digest } from '../common/digest.ts';
import type { DigestFunction, Hasher } from '../common/digest-function.ts';
import { invalidArgument, outOfRange } from '../common/errors.ts';
import type { BlobWriter } from './blob-store.ts';

export abstract class SizeCheckedBlobWriter implements BlobWriter {
  protected state: 'open' | 'committed' | 'aborted' = 'open';
  written = 0;
  readonly alreadyExists: boolean = false;

  constructor(readonly digest: Digest) {}

  /** Keep one accepted chunk (`written` already counts it). */
  protected abstract store(chunk: Buffer): Promise<void>;
  /** Make the blob visible. */
  protected abstract publish(): Promise<void>;
  /** Drop what was stored; called once. */
  protected abstract discard(): void | Promise<void>;
  /** Sees each accepted chunk before it is stored (e.g. to hash it). */
  protected observe(_chunk: Buffer): void {}
  /** The last check before publishing; throw to refuse. */
  protected async verify(): Promise<void> {}

  async append(chunk: Buffer): Promise<void> {
    if (this.state !== 'open') throw invalidArgument(`write of ${this.digest.hash} is already ${this.state}`);
    if (this.written + chunk.length > this.digest.size_bytes) {
      throw outOfRange(
        `write of ${this.digest.hash}/${this.digest.size_bytes} goes past the declared size ` +
          `(${this.written + chunk.length} bytes sent)`,
      );
    }
    this.observe(chunk);
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
    await this.verify();
    try {
      await this.publish();
    } catch (err) {
      // A failed publish (storage full, a node that refused or vanished) leaves nothing to resume.
      await this.abort();
      throw err;
    }
    this.state = 'committed';
  }

  async abort(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    await this.discard();
  }
}

/** A writer that also hashes what it receives and refuses content that does not match the digest. */
export abstract class CheckedBlobWriter extends SizeCheckedBlobWriter {
  private readonly hash: Hasher;

  constructor(digest: Digest, fn: DigestFunction) {
    super(digest);
    this.hash = fn.hasher();
  }

  protected override observe(chunk: Buffer): void {
    this.hash.update(chunk);
  }

  protected override async verify(): Promise<void> {
    const actual = this.hash.hex();
    if (actual !== this.digest.hash) {
      await this.abort();
      throw invalidArgument(`blob content hashes to ${actual}, not to the declared ${this.digest.hash}`);
    }
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
