// What the storage services share.
import type { Config } from '../../common/config.ts';
import type { ServiceContext } from '../../common/grpc.ts';
import type { Digest } from '../../common/digest.ts';
import type { RequestLabels } from '../../common/grpc.ts';
import type { ActionResult } from '../action-cache.ts';
import type { Storage } from '../storage-factory.ts';
import type { DigestFunction } from '../../common/digest-function.ts';
import type { ClientWrites } from '../../common/storage-config.ts';

/** The chains of each digest function, and which one a request uses. */
export type StoresByFunction = Pick<Storage, 'functions' | 'forFunction' | 'resolve'>;

export interface StorageContext {
  stores: StoresByFunction;
  config: Config;
  service: (name: string) => ServiceContext;
  /** What the chain's write policy does with client writes (Capabilities announces it). */
  clientWrites: ClientWrites;
  /** Told about every cache hit served by GetActionResult (feedback, audits). */
  onServed?: (instanceName: string, actionDigest: Digest, result: ActionResult, labels: RequestLabels, fn: DigestFunction) => void;
}
