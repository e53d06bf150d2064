// The ActionCache seam: action digest -> ActionResult, separately per instance name.
import type { Digest } from '../common/digest.ts';
import type { RequestLabels } from '../common/grpc.ts';
import type { MessageInput, MessageOutput } from '../protos/index.ts';

export type ActionResult = MessageOutput<'ActionResult'>;
export type ActionResultInput = MessageInput<'ActionResult'>;

/**
 * Who writes an entry: a worker of this process (its result carries its own provenance), a fleet
 * member that presented the fleet token to a storage node, or a client (UpdateActionResult). The
 * write policy (cas/write-policy-action-cache.ts) decides by it; other layers pass it on.
 */
export interface CacheWriter {
  kind: 'worker' | 'fleet' | 'client';
  /** The caller's request metadata, for provenance and reports. */
  labels?: RequestLabels;
}

export const WORKER_WRITE: CacheWriter = { kind: 'worker' };

export interface ActionCache {
  get(instanceName: string, actionDigest: Digest): Promise<ActionResult | undefined>;
  /** Store an entry; `writer` defaults to a worker of this process. */
  put(instanceName: string, actionDigest: Digest, result: ActionResultInput, writer?: CacheWriter): Promise<void>;
  /** Remove an entry (e.g. one found incomplete or contradicted); no error when absent. */
  remove(instanceName: string, actionDigest: Digest): Promise<void>;
}
