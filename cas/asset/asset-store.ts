// Where fetched and pushed assets are remembered: URI + identifying qualifiers -> a blob or a
// Directory in the CAS. Entries live in the ActionCache of the request's digest function, under
// a key derived from the asset's name (as Buildbarn's bb-remote-asset can keep them): so they
// persist, are shared by every scheduler of a fleet, and an entry whose content was evicted is a
// miss (the chain's completeness check) and the asset is fetched again.
//
// The ActionResult of an entry: output_files[0] = {path: 'blob' | 'directory', digest}; in
// execution_metadata, worker 'remote-asset', queued_timestamp when it was stored and
// worker_completed_timestamp when it expires (unset: never).
import { millisOf, toTimestamp } from '../../common/proto-time.ts';
import type { Digest } from '../../common/digest.ts';
import type { DigestFunction } from '../../common/digest-function.ts';
import type { MessageInput } from '../../protos/index.ts';
import type { StoresByFunction } from '../services/storage-context.ts';
import type { Qualifier } from './qualifiers.ts';

export type AssetKind = 'blob' | 'directory';

export interface StoredAsset {
  uri: string;
  digest: Digest;
  storedAt: number;
  expiresAt?: number;
}

export class AssetStore {
  constructor(private readonly stores: StoresByFunction) {}

  private key(fn: DigestFunction, kind: AssetKind, uri: string, identity: readonly Qualifier[]): Digest {
    return fn.digestOf(Buffer.from(JSON.stringify(['reapi-asset-v1', kind, uri, identity.map((q) => [q.name, q.value])])));
  }

  /** The first of `uris` stored with these qualifiers, not expired and not older than `oldestAccepted`. */
  async get(instance: string, fn: DigestFunction, kind: AssetKind, uris: readonly string[], identity: readonly Qualifier[], oldestAccepted = 0): Promise<StoredAsset | undefined> {
    const { actionCache } = this.stores.forFunction(fn);
    const now = Date.now();
    for (const uri of uris) {
      const entry = await actionCache.get(instance, this.key(fn, kind, uri, identity));
      const file = entry?.output_files.find((f) => f.path === kind);
      if (!entry || !file?.digest) continue;
      const storedAt = millisOf(entry.execution_metadata?.queued_timestamp) ?? 0;
      const expiresAt = millisOf(entry.execution_metadata?.worker_completed_timestamp);
      if (storedAt < oldestAccepted || (expiresAt !== undefined && expiresAt > 0 && expiresAt <= now)) continue;
      return { uri, digest: { hash: file.digest.hash, size_bytes: Number(file.digest.size_bytes) }, storedAt, ...(expiresAt ? { expiresAt } : {}) };
    }
    return undefined;
  }

  async put(instance: string, fn: DigestFunction, kind: AssetKind, uris: readonly string[], identity: readonly Qualifier[], digest: Digest, expiresAt?: number): Promise<void> {
    const { actionCache } = this.stores.forFunction(fn);
    const metadata: MessageInput<'ExecutedActionMetadata'> = { worker: 'remote-asset', queued_timestamp: toTimestamp(Date.now()) };
    if (expiresAt) metadata.worker_completed_timestamp = toTimestamp(expiresAt);
    const entry: MessageInput<'ActionResult'> = { output_files: [{ path: kind, digest }], execution_metadata: metadata };
    for (const uri of uris) await actionCache.put(instance, this.key(fn, kind, uri, identity), entry);
  }
}
