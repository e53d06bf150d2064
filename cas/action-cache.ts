// The ActionCache seam: action digest -> ActionResult, separately per instance name.
import type { Digest } from '../common/digest.ts';
import type { RequestLabels } from '../common/grpc.ts';
import type { MessageInput, MessageOutput } from '../protos/index.ts';

export type ActionResult = MessageOutput<'ActionResult'>;
export type ActionResultInput = MessageInput<'ActionResult'>;

/**
 * Who reads or writes an entry: a worker of this process (its result carries its own provenance),
 * a fleet member that presented the fleet token to a storage node (a scheduler or worker), or a
 * client. The write policy (cas/write-policy-action-cache.ts) decides writes by it; completeness
 * checking leaves fleet members to check across all shards themselves; other layers pass it on.
 */
export interface CacheCaller {
  kind: 'worker' | 'fleet' | 'client';
  /** The caller's request metadata, for provenance and reports. */
  labels?: RequestLabels;
}

export const WORKER_CALLER: CacheCaller = { kind: 'worker' };

export interface ActionCache {
  /** The entry, if any; `reader` defaults to a worker of this process. */
  get(instanceName: string, actionDigest: Digest, reader?: CacheCaller): Promise<ActionResult | undefined>;
  /** Store an entry; `writer` defaults to a worker of this process. */
  put(instanceName: string, actionDigest: Digest, result: ActionResultInput, writer?: CacheCaller): Promise<void>;
  /** Remove an entry (e.g. one found incomplete or contradicted); no error when absent. */
  remove(instanceName: string, actionDigest: Digest): Promise<void>;
}
