// The storage of a role as a tree, the way Buildbarn describes a BlobAccess chain: each node is an
// implementation (disk, memory, remote) or a decorator around other nodes (sharding, mirroring,
// existence caching; for the ActionCache completeness checking, mirroring and the write policy). cas/storage-factory.ts
// builds the tree into BlobStore and ActionCache chains. A config file may give the trees
// (`storage.contentAddressableStorage`, `storage.actionCache`); without them, the flags
// (`--storage`, `--data-dir`, `--cas`) expand to the default tree of the role.
import { z } from 'zod';
import { parseSize } from './sizes.ts';

export const sizeBytes = z.union([z.number().int().nonnegative(), z.string()]).transform((v, ctx) => {
  if (typeof v === 'number') return v;
  const n = parseSize(v);
  if (n === undefined) {
    ctx.addIssue({ code: 'custom', message: `"${v}" is not a size (e.g. 10GiB, 512MiB, 1000000)` });
    return z.NEVER;
  }
  return n;
});

type Size = number | string;

export type BlobStoreConfig =
  /** Files under `path` (default: the data directory), LRU-evicted past `maxBytes`. */
  | { disk: { path?: string; maxBytes?: number; verifyBeforeServeBytes?: number; leaseSeconds?: number } }
  | { memory: { maxBytes?: number } }
  /** A storage node (`reapi cas`) at host:port. */
  | { remote: { address: string } }
  /** Blobs spread over the shards by rendezvous hashing of their digest; `name` places blobs. */
  | { sharding: { shards: Array<{ name: string; weight: number; backend: BlobStoreConfig }> } }
  /** Remembers for `ttlMs` which blobs the backend has, so FindMissingBlobs asks it less. */
  | { existenceCaching: { ttlMs: number; maxEntries: number; backend: BlobStoreConfig } }
  /** Each blob on `replicas` of the backends (rendezvous hashing); reads fall back, writes repair. */
  | { mirrored: { replicas: number; backends: Array<{ name: string; weight: number; backend: BlobStoreConfig }> } };

export type BlobStoreConfigInput =
  | { disk: { path?: string; maxBytes?: Size; verifyBeforeServeBytes?: Size; leaseSeconds?: number } }
  | { memory: { maxBytes?: Size } }
  | { remote: { address: string } }
  | { sharding: { shards: Array<{ name?: string; weight?: number; backend: BlobStoreConfigInput }> } }
  | { existenceCaching: { ttlMs?: number; maxEntries?: number; backend: BlobStoreConfigInput } }
  | { mirrored: { replicas?: number; backends: Array<{ name?: string; weight?: number; backend: BlobStoreConfigInput }> } };

export type ClientWrites = 'allow' | 'deny' | 'quarantine';

export type ActionCacheConfig =
  /** One file per entry under `path` (default: `ac` in the data directory). */
  | { disk: { path?: string } }
  | { memory: Record<string, never> }
  | { remote: { address: string } }
  /** Serves an entry only while every blob it names is in the chain's CAS. */
  | { completenessChecking: { backend: ActionCacheConfig } }
  /** What UpdateActionResult from a client does; workers and fleet members always write. */
  | { writePolicy: { clientWrites: ClientWrites; backend: ActionCacheConfig } }
  /** Each entry on `replicas` of the backends (rendezvous hashing of the action digest). */
  | { mirrored: { replicas: number; backends: Array<{ name: string; backend: ActionCacheConfig }> } };

const strict = <T extends z.ZodRawShape>(shape: T) => z.object(shape).strict();

/** The shard's name: what places blobs, so it must stay the same across restarts. */
function shardName(backend: BlobStoreConfig, i: number): string {
  return 'remote' in backend ? backend.remote.address : `shard-${i}`;
}

export const blobStoreConfigSchema: z.ZodType<BlobStoreConfig, BlobStoreConfigInput> = z.lazy(() =>
  z.union([
    strict({ disk: strict({ path: z.string().optional(), maxBytes: sizeBytes.optional(), verifyBeforeServeBytes: sizeBytes.optional(), leaseSeconds: z.number().min(0).optional() }) }),
    strict({ memory: strict({ maxBytes: sizeBytes.optional() }) }),
    strict({ remote: strict({ address: z.string().min(1) }) }),
    strict({
      sharding: strict({
        shards: z
          .array(strict({ name: z.string().min(1).optional(), weight: z.number().positive().default(1), backend: blobStoreConfigSchema }))
          .min(1, 'sharding needs at least one shard')
          .transform((shards) => shards.map((s, i) => ({ ...s, name: s.name ?? shardName(s.backend, i) }))),
      }),
    }),
    strict({
      existenceCaching: strict({ ttlMs: z.number().int().positive().default(60_000), maxEntries: z.number().int().positive().default(1_000_000), backend: blobStoreConfigSchema }),
    }),
    strict({
      mirrored: strict({
        replicas: z.number().int().min(1).default(2),
        backends: z
          .array(strict({ name: z.string().min(1).optional(), weight: z.number().positive().default(1), backend: blobStoreConfigSchema }))
          .min(1, 'mirrored needs at least one backend')
          .transform((backends) => backends.map((b, i) => ({ ...b, name: b.name ?? shardName(b.backend, i) }))),
      }).refine((m) => m.replicas <= m.backends.length, 'replicas cannot exceed the number of backends'),
    }),
  ]),
);

export const actionCacheConfigSchema: z.ZodType<ActionCacheConfig> = z.lazy(() =>
  z.union([
    strict({ disk: strict({ path: z.string().optional() }) }),
    strict({ memory: strict({}) }),
    strict({ remote: strict({ address: z.string().min(1) }) }),
    strict({ completenessChecking: strict({ backend: actionCacheConfigSchema }) }),
    strict({ writePolicy: strict({ clientWrites: z.enum(['allow', 'deny', 'quarantine']), backend: actionCacheConfigSchema }) }),
    strict({
      mirrored: strict({
        replicas: z.number().int().min(1).default(2),
        backends: z.array(strict({ name: z.string().min(1), backend: actionCacheConfigSchema })).min(1, 'mirrored needs at least one backend'),
      }).refine((m) => m.replicas <= m.backends.length, 'replicas cannot exceed the number of backends'),
    }),
  ]),
) as z.ZodType<ActionCacheConfig>;
