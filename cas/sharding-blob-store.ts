// A BlobStore spread over several backends (e.g. RemoteBlobStores of the storage nodes of a fleet)
// by rendezvous (highest-random-weight) hashing of the digest's hash: every blob has one owning
// shard, every process that knows the same shards (names and weights) picks the same one, and
// adding or removing a shard moves only the blobs it gains or held (about 1/N of them).
//
// Weighted HRW: shard score = -weight / ln(u), u in (0,1) a hash of (shard name, blob hash); the
// highest score owns the blob, so a shard's share is proportional to its weight. The shard
// *name* (e.g. the node's address) is what places blobs: keep it stable across restarts.
import type { Readable } from 'node:stream';
import { createHash } from 'node:crypto';
import { digestKey, type Digest } from '../common/digest.ts';
import { invalidArgument } from '../common/errors.ts';
import type { BlobStore, BlobWriter } from './blob-store.ts';

export interface Shard {
  /** Stable identity that places blobs (e.g. "cas-1:8980"); unique among shards. */
  name: string;
  store: BlobStore;
  /** Relative capacity (default 1). */
  weight?: number;
}

interface PreparedShard {
  name: string;
  store: BlobStore;
  weight: number;
  seed0: number;
  seed1: number;
}

export class ShardingBlobStore implements BlobStore {
  private readonly shards: PreparedShard[];

  constructor(shards: Shard[]) {
    if (shards.length === 0) throw invalidArgument('ShardingBlobStore needs at least one shard');
    const names = new Set<string>();
    this.shards = shards.map((s) => {
      if (names.has(s.name)) throw invalidArgument(`shard name "${s.name}" is used twice`);
      names.add(s.name);
      const weight = s.weight ?? 1;
      if (!(weight > 0) || !Number.isFinite(weight)) throw invalidArgument(`shard "${s.name}": weight ${weight} is not a positive number`);
      const seed = createHash('sha256').update(s.name).digest();
      return { name: s.name, store: s.store, weight, seed0: seed.readUInt32BE(0), seed1: seed.readUInt32BE(4) };
    });
  }

  /** The shard that owns `digest`. */
  shardFor(digest: Digest): Shard {
    const s = this.owner(digest.hash);
    return { name: s.name, store: s.store, weight: s.weight };
  }

  private owner(hash: string): PreparedShard {
    if (this.shards.length === 1) return this.shards[0]!;
    // The hash is SHA-256 hex: its first 64 bits are already uniform.
    const k0 = parseInt(hash.slice(0, 8), 16) >>> 0;
    const k1 = parseInt(hash.slice(8, 16), 16) >>> 0;
    let best = this.shards[0]!;
    let bestScore = -Infinity;
    for (const s of this.shards) {
      const score = -s.weight / Math.log(unitHash(k0, k1, s.seed0, s.seed1));
      if (score > bestScore || (score === bestScore && s.name < best.name)) {
        best = s;
        bestScore = score;
      }
    }
    return best;
  }

  async findMissing(digests: Digest[]): Promise<Digest[]> {
    const groups = new Map<PreparedShard, Digest[]>();
    for (const d of digests) {
      const s = this.owner(d.hash);
      const list = groups.get(s);
      if (list) list.push(d);
      else groups.set(s, [d]);
    }
    const answers = await Promise.all([...groups].map(([s, list]) => s.store.findMissing(list)));
    const missing = new Set<string>();
    for (const a of answers) for (const d of a) missing.add(digestKey(d));
    return digests.filter((d) => missing.has(digestKey(d)));
  }

  read(digest: Digest, offset?: number, limit?: number): Promise<Readable> {
    return this.owner(digest.hash).store.read(digest, offset, limit);
  }

  write(digest: Digest): Promise<BlobWriter> {
    return this.owner(digest.hash).store.write(digest);
  }
}

function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

/** A hash of (key, seed) as a number strictly between 0 and 1, with 52 bits. */
function unitHash(k0: number, k1: number, s0: number, s1: number): number {
  const a = mix32(k0 ^ s0);
  const b = mix32((k1 ^ s1 ^ Math.imul(a, 0x9e3779b1)) >>> 0);
  const c = mix32((a ^ Math.imul(b, 0x27d4eb2f)) >>> 0);
  return (c * 0x100000 + (b >>> 12) + 0.5) / 2 ** 52;
}
