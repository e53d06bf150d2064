// A BlobStore spread over several backends (e.g. RemoteBlobStores of the storage nodes of a fleet)
// by rendezvous hashing of the digest's hash (cas/rendezvous.ts): every blob has one owning shard,
// every process that knows the same shards (names and weights) picks the same one, and adding or
// removing a shard moves only the blobs it gains or held (about 1/N of them).
import type { Readable } from 'node:stream';
import { digestKey, type Digest } from '../common/digest.ts';
import { sameFunction, type DigestFunction } from '../common/digest-function.ts';
import type { BlobStore, BlobWriter } from './blob-store.ts';
import { Rendezvous } from './rendezvous.ts';

export interface Shard {
  /** Stable identity that places blobs (e.g. "cas-1:8980"); unique among shards. */
  name: string;
  store: BlobStore;
  /** Relative capacity (default 1). */
  weight?: number;
}

export class ShardingBlobStore implements BlobStore {
  readonly digestFunction: DigestFunction;
  private readonly shards: Rendezvous<BlobStore>;

  constructor(shards: Shard[]) {
    this.digestFunction = sameFunction(shards.map((s) => s.store));
    this.shards = new Rendezvous(
      shards.map((s) => ({ name: s.name, value: s.store, ...(s.weight !== undefined ? { weight: s.weight } : {}) })),
      'shard',
    );
  }

  /** The shard that owns `digest`. */
  shardFor(digest: Digest): Shard {
    const s = this.shards.owner(digest.hash);
    return { name: s.name, store: s.value, weight: s.weight };
  }

  async findMissing(digests: Digest[]): Promise<Digest[]> {
    const groups = new Map<BlobStore, Digest[]>();
    for (const d of digests) {
      const s = this.shards.owner(d.hash).value;
      const list = groups.get(s);
      if (list) list.push(d);
      else groups.set(s, [d]);
    }
    const answers = await Promise.all([...groups].map(([s, list]) => s.findMissing(list)));
    const missing = new Set<string>();
    for (const a of answers) for (const d of a) missing.add(digestKey(d));
    return digests.filter((d) => missing.has(digestKey(d)));
  }

  read(digest: Digest, offset?: number, limit?: number): Promise<Readable> {
    return this.shards.owner(digest.hash).value.read(digest, offset, limit);
  }

  write(digest: Digest): Promise<BlobWriter> {
    return this.shards.owner(digest.hash).value.write(digest);
  }
}
