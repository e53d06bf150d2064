// ActionCache: GetActionResult (with inlining on request) and UpdateActionResult.
import type { Metadata } from '@grpc/grpc-js';
import { principalOf } from '../../common/auth/index.ts';
import { may } from '../../common/auth/permissions.ts';
import { digestKey, validateDigest, type Digest } from '../../common/digest.ts';
import { invalidArgument, notFound } from '../../common/errors.ts';
import { requestLabels, unary } from '../../common/grpc.ts';
import { isRemoved } from '../provenance.ts';
import type { ActionCacheHandlers } from '../../protos/index.ts';
import type { ActionResult, CacheCaller } from '../action-cache.ts';
import type { BlobStore } from '../blob-store.ts';
import { putBlob, readBlob } from '../blob-io.ts';
import type { StorageContext } from './storage-context.ts';

export function actionCacheService(storage: StorageContext): ActionCacheHandlers {
  const ctx = storage.service('ActionCache');
  const { config } = storage;

  return {
    // An entry is served only after the chain's completeness check found all its blobs, which
    // also renews their leases (Build without the Bytes; cas/disk-blob-store.ts).
    GetActionResult: unary(ctx, 'GetActionResult', async (req, call) => {
      const { actionCache, blobs, digestFunction } = storage.stores.resolve(req.instance_name, req.digest_function);
      const digest = validateDigest(req.action_digest, 'action_digest', digestFunction);
      const stored = await actionCache.get(req.instance_name, digest, callerOf(call));
      const result = stored && !isRemoved(stored) ? stored : undefined;
      ctx.metrics.actionCacheRequests.inc({ instance: ctx.metrics.labels.instance.of(req.instance_name), result: result ? 'hit' : 'miss' });
      if (!result) throw notFound(`no action result for ${digestKey(digest)} in instance "${req.instance_name}"`);
      storage.onServed?.(req.instance_name, digest, result, requestLabels(call.metadata), digestFunction);
      await inline(blobs, result, {
        stdout: req.inline_stdout,
        stderr: req.inline_stderr,
        files: new Set(req.inline_output_files),
        budget: config.actionCache.maxInlineBytes,
      });
      return result;
    }),

    UpdateActionResult: unary(ctx, 'UpdateActionResult', async (req, call) => {
      const { actionCache, blobs, digestFunction } = storage.stores.resolve(req.instance_name, req.digest_function);
      const digest = validateDigest(req.action_digest, 'action_digest', digestFunction);
      const result = req.action_result;
      if (!result) throw invalidArgument('action_result is missing');
      // The chain's write policy decides (cas/write-policy-action-cache.ts): fleet members write,
      // clients as configured.
      const writer = callerOf(call);
      // Inline data may arrive with the result; keep it in the CAS so the entry stays small.
      if (writer.kind === 'fleet' || storage.clientWrites !== 'deny') {
        if (result.stdout_raw.length > 0 && !result.stdout_digest) result.stdout_digest = await putBlob(blobs, result.stdout_raw);
        if (result.stderr_raw.length > 0 && !result.stderr_digest) result.stderr_digest = await putBlob(blobs, result.stderr_raw);
      }
      await actionCache.put(req.instance_name, digest, { ...result, stdout_raw: Buffer.alloc(0), stderr_raw: Buffer.alloc(0) }, writer);
      return result;
    }),
  };
}

/** Fill stdout_raw / stderr_raw / output file contents when asked, within a byte budget. */
async function inline(
  blobs: BlobStore,
  result: ActionResult,
  want: { stdout: boolean; stderr: boolean; files: Set<string>; budget: number },
): Promise<void> {
  let budget = want.budget;
  const take = async (d: Digest | null): Promise<Buffer | undefined> => {
    if (!d || d.size_bytes > budget) return undefined;
    try {
      const data = await readBlob(blobs, d);
      budget -= data.length;
      return data;
    } catch {
      return undefined; // inlining is best effort; the digest is still there
    }
  };
  if (want.stdout) result.stdout_raw = (await take(result.stdout_digest)) ?? Buffer.alloc(0);
  if (want.stderr) result.stderr_raw = (await take(result.stderr_digest)) ?? Buffer.alloc(0);
  for (const f of result.output_files) {
    if (want.files.has(f.path)) f.contents = (await take(f.digest)) ?? Buffer.alloc(0);
  }
}

/**
 * Who calls: a fleet member (a principal the guard admitted with the 'worker' permission, e.g. by
 * the fleet token), else a client.
 */
function callerOf(call: { metadata: Metadata }): CacheCaller {
  const principal = principalOf(call);
  const fleet = principal !== undefined && may(principal, 'worker');
  return { kind: fleet ? 'fleet' : 'client', labels: requestLabels(call.metadata) };
}
