// Capabilities: what this server supports. Bazel calls it first and refuses to go on unless its
// digest function and API version are within what we announce. We speak API 2.0 to 2.11: the
// per-request digest_function (2.3+), BLAKE3, zstd on ByteStream and batch calls, SplitBlob and
// SpliceBlob (with chunks of our own cutting, so no FastCDC parameters are announced); the legacy single `digest_function` is the instance's default, for clients that
// send none (Buck2, Bazel before 7).
import type { CapabilitiesHandlers, MessageInput } from '../../protos/index.ts';
import { unary, type ServiceContext } from '../../common/grpc.ts';
import type { DigestFunction } from '../../common/digest-function.ts';

export interface CapabilitiesOptions {
  maxBatchTotalSizeBytes: number;
  /** Whether clients may write the ActionCache (UpdateActionResult). */
  actionCacheUpdateEnabled: boolean;
  /** Whether this endpoint runs actions (Execute). */
  execEnabled: boolean;
  /** The offered digest functions. */
  digestFunctions: readonly DigestFunction[];
  /** The function of the asking instance's requests that name none. */
  defaultDigestFunction: DigestFunction;
}

export function serverCapabilities(opts: CapabilitiesOptions): MessageInput<'ServerCapabilities'> {
  // The instance's default first: a client that takes the first entry gets what it would get by sending none.
  const functions = [opts.defaultDigestFunction, ...opts.digestFunctions.filter((f) => f !== opts.defaultDigestFunction)].map((f) => f.name);
  return {
    cache_capabilities: {
      digest_functions: functions,
      action_cache_update_capabilities: { update_enabled: opts.actionCacheUpdateEnabled },
      cache_priority_capabilities: { priorities: [{ min_priority: 0, max_priority: 0 }] },
      max_batch_total_size_bytes: opts.maxBatchTotalSizeBytes,
      symlink_absolute_path_strategy: 'DISALLOWED',
      supported_compressors: ['ZSTD'],
      supported_batch_update_compressors: ['ZSTD'],
      split_blob_support: true,
      splice_blob_support: true,
    },
    execution_capabilities: {
      digest_function: opts.defaultDigestFunction.name,
      digest_functions: functions,
      exec_enabled: opts.execEnabled,
      execution_priority_capabilities: { priorities: [{ min_priority: -1000, max_priority: 1000 }] },
    },
    deprecated_api_version: { major: 2, minor: 0 },
    low_api_version: { major: 2, minor: 0 },
    high_api_version: { major: 2, minor: 11 },
  };
}

export function capabilitiesService(ctx: ServiceContext, opts: (instanceName: string) => CapabilitiesOptions): CapabilitiesHandlers {
  return {
    GetCapabilities: unary(ctx, 'GetCapabilities', async (req) => serverCapabilities(opts(req.instance_name))),
  };
}
