// A BlobWriter that passes every call to another one: decorators extend it and override what
// they watch (usually `commit`).
import type { Digest } from '../common/digest.ts';
import type { BlobWriter } from './blob-store.ts';

export class ForwardingBlobWriter implements BlobWriter {
  readonly spill?: () => Promise<void>;

  constructor(protected readonly inner: BlobWriter) {
    const spill = inner.spill?.bind(inner);
    if (spill) this.spill = spill;
  }

  get digest(): Digest {
    return this.inner.digest;
  }

  get written(): number {
    return this.inner.written;
  }

  get alreadyExists(): boolean {
    return this.inner.alreadyExists;
  }

  append(chunk: Buffer): Promise<void> {
    return this.inner.append(chunk);
  }

  commit(): Promise<void> {
    return this.inner.commit();
  }

  abort(): Promise<void> {
    return this.inner.abort();
  }
}
