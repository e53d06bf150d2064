// An ActionCache on a storage node (`reapi cas`) over gRPC: GetActionResult (NOT_FOUND = miss) and
// UpdateActionResult, with the caller's instance name passed through.
//
// `remove` is not possible: the REAPI has no call that deletes an ActionCache entry, and the
// storage node owns its entries (it already serves only complete ones: its ActionCache is behind
// completeness checking against its own CAS). It throws UNIMPLEMENTED rather than pretending.
import type * as grpc from '@grpc/grpc-js';
import type { Digest } from '../common/digest.ts';
import { digestKey } from '../common/digest.ts';
import { Status, unimplemented } from '../common/errors.ts';
import type { MessageOutput } from '../protos/index.ts';
import type { ActionCache, ActionResult, ActionResultInput } from './action-cache.ts';
import { unaryCall, type StorageClients } from './grpc-clients.ts';

export interface RemoteActionCacheOptions {
  /** Deadline of each call in ms (default 60 s). */
  callTimeoutMs?: number;
}

export class RemoteActionCache implements ActionCache {
  readonly address: string;
  private readonly callTimeoutMs: number;

  constructor(private readonly clients: StorageClients, opts: RemoteActionCacheOptions = {}) {
    this.address = clients.address;
    this.callTimeoutMs = opts.callTimeoutMs ?? 60_000;
  }

  private options(): grpc.CallOptions {
    return { deadline: Date.now() + this.callTimeoutMs };
  }

  async get(instanceName: string, actionDigest: Digest): Promise<ActionResult | undefined> {
    try {
      return await unaryCall<MessageOutput<'ActionResult'>>(this.address, (cb) =>
        this.clients.actionCache.GetActionResult(
          { instance_name: instanceName, action_digest: actionDigest, inline_stdout: false, inline_stderr: false },
          this.options(),
          cb,
        ),
      );
    } catch (err) {
      if ((err as { code?: unknown }).code === Status.NOT_FOUND) return undefined;
      throw err;
    }
  }

  async put(instanceName: string, actionDigest: Digest, result: ActionResultInput): Promise<void> {
    await unaryCall<MessageOutput<'ActionResult'>>(this.address, (cb) =>
      this.clients.actionCache.UpdateActionResult(
        { instance_name: instanceName, action_digest: actionDigest, action_result: result },
        this.options(),
        cb,
      ),
    );
  }

  async remove(instanceName: string, actionDigest: Digest): Promise<void> {
    throw unimplemented(
      `cannot remove action cache entry ${digestKey(actionDigest)} (instance "${instanceName}") on storage node ` +
        `${this.address}: the REAPI has no delete call; the storage node owns its entries and drops incomplete ones itself`,
    );
  }
}
