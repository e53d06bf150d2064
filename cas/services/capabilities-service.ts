// Capabilities: what this server supports. Bazel calls it first and refuses to go on unless
// SHA-256 and API 2.0 are within what we announce.
import type { CapabilitiesHandlers, MessageInput } from '../../protos/index.ts';
import { unary, type ServiceContext } from '../../common/grpc.ts';

export interface CapabilitiesOptions {
  maxBatchTotalSizeBytes: number;
  /** Whether clients may write the ActionCache (UpdateActionResult). */
  actionCacheUpdateEnabled: boolean;
  /** Whether this endpoint runs actions (Execute). */
  execEnabled: boolean;
}

export function serverCapabilities(opts: CapabilitiesOptions): MessageInput<'ServerCapabilities'> {
  return {
    cache_capabilities: {
      digest_functions: ['SHA256'],
      action_cache_update_capabilities: { update_enabled: opts.actionCacheUpdateEnabled },
      max_batch_total_size_bytes: opts.maxBatchTotalSizeBytes,
      symlink_absolute_path_strategy: 'DISALLOWED',
      supported_compressors: ['ZSTD'],
      supported_batch_update_compressors: ['ZSTD'],
    },
    execution_capabilities: {
      digest_function: 'SHA256',
      digest_functions: ['SHA256'],
      exec_enabled: opts.execEnabled,
      execution_priority_capabilities: { priorities: [{ min_priority: -1000, max_priority: 1000 }] },
    },
    low_api_version: { major: 2, minor: 0 },
    high_api_version: { major: 2, minor: 3 },
  };
}

export function capabilitiesService(ctx: ServiceContext, opts: () => CapabilitiesOptions): CapabilitiesHandlers {
  return {
    GetCapabilities: unary(ctx, 'GetCapabilities', async () => serverCapabilities(opts())),
  };
}
