// What the storage services share.
import type { Config } from '../../common/config.ts';
import type { ServiceContext } from '../../common/grpc.ts';
import type { Digest } from '../../common/digest.ts';
import type { RequestLabels } from '../../common/grpc.ts';
import type { ActionCache, ActionResult } from '../action-cache.ts';
import type { BlobStore } from '../blob-store.ts';

export interface StorageContext {
  blobs: BlobStore;
  actionCache: ActionCache;
  config: Config;
  service: (name: string) => ServiceContext;
  /**
   * Storage nodes: the fleet token. A caller presenting it (a scheduler or worker) writes the
   * ActionCache whatever `clientWrites` says, and the provenance it records is kept; every other
   * write is a client's (`clientWrites`, provenance "client").
   */
  fleetToken?: string;
  /** A storage node (whose writers are fleet members), for messages. */
  trustsFleet?: boolean;
  /** The write policy for UpdateActionResult from clients, resolved for this role. */
  clientWrites: 'allow' | 'deny' | 'quarantine';
  /** Told about every cache hit served by GetActionResult (feedback, audits). */
  onServed?: (instanceName: string, actionDigest: Digest, result: ActionResult, labels: RequestLabels) => void;
  /** Told about a quarantined client write (its ActionResult stored in the CAS as `entry`). */
  onQuarantinedWrite?: (instanceName: string, actionDigest: Digest, entry: Digest, labels: RequestLabels) => Promise<void>;
}
