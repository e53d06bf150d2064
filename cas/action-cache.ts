// The ActionCache seam: action digest -> ActionResult, separately per instance name.
import type { Digest } from '../common/digest.ts';
import type { MessageInput, MessageOutput } from '../protos/index.ts';

export type ActionResult = MessageOutput<'ActionResult'>;
export type ActionResultInput = MessageInput<'ActionResult'>;

export interface ActionCache {
  get(instanceName: string, actionDigest: Digest): Promise<ActionResult | undefined>;
  put(instanceName: string, actionDigest: Digest, result: ActionResultInput): Promise<void>;
  /** Remove an entry (e.g. one found incomplete or contradicted); no error when absent. */
  remove(instanceName: string, actionDigest: Digest): Promise<void>;
}
