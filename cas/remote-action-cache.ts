// An ActionCache on a storage node (`reapi cas`) over gRPC: GetActionResult (NOT_FOUND = miss) and
// UpdateActionResult, with the caller's instance name passed through.
//
// `remove`: the REAPI has no call that deletes an ActionCache entry, so a removed entry is
// overwritten with a marker (see cas/provenance.ts) that every reader treats as a miss.
import type * as grpc from '@grpc/grpc-js';
import type { Digest } from '../common/digest.ts';
import { SHA256, type DigestFunction } from '../common/digest-function.ts';
import { Status } from '../common/errors.ts';
import { isRemoved, removedEntry } from './provenance.ts';
import type { MessageOutput } from '../protos/index.ts';
import type { ActionCache, ActionResult, ActionResultInput } from './action-cache.ts';
import { unaryCall, type StorageClients } from './grpc-clients.ts';

export interface RemoteActionCacheOptions {
  /** Deadline of each call in ms (default 60 s). */
  callTimeoutMs?: number;
  /** The digest function of the action digests, sent with every call (default SHA-256). */
  digestFunction?: DigestFunction;
}

export class RemoteActionCache implements ActionCache {
  readonly address: string;
  private readonly callTimeoutMs: number;
  private readonly digestFunction: DigestFunction;

  constructor(private readonly clients: StorageClients, opts: RemoteActionCacheOptions = {}) {
    this.address = clients.address;
    this.callTimeoutMs = opts.callTimeoutMs ?? 60_000;
    this.digestFunction = opts.digestFunction ?? SHA256;
  }

  private options(): grpc.CallOptions {
    return { deadline: Date.now() + this.callTimeoutMs };
  }

  async get(instanceName: string, actionDigest: Digest): Promise<ActionResult | undefined> {
    try {
      const result = await unaryCall<MessageOutput<'ActionResult'>>(this.address, (cb) =>
        this.clients.actionCache.GetActionResult(
          { instance_name: instanceName, action_digest: actionDigest, inline_stdout: false, inline_stderr: false, digest_function: this.digestFunction.name },
          this.options(),
          cb,
        ),
      );
      return isRemoved(result) ? undefined : result;
    } catch (err) {
      if ((err as { code?: unknown }).code === Status.NOT_FOUND) return undefined;
      throw err;
    }
  }

  async put(instanceName: string, actionDigest: Digest, result: ActionResultInput): Promise<void> {
    await unaryCall<MessageOutput<'ActionResult'>>(this.address, (cb) =>
      this.clients.actionCache.UpdateActionResult(
        { instance_name: instanceName, action_digest: actionDigest, action_result: result, digest_function: this.digestFunction.name },
        this.options(),
        cb,
      ),
    );
  }

  async remove(instanceName: string, actionDigest: Digest): Promise<void> {
    await this.put(instanceName, actionDigest, removedEntry());
  }
}
