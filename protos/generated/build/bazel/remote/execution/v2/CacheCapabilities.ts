// Original file: protos/build/bazel/remote/execution/v2/remote_execution.proto

import type { _build_bazel_remote_execution_v2_DigestFunction_Value, _build_bazel_remote_execution_v2_DigestFunction_Value__Output } from '../../../../../build/bazel/remote/execution/v2/DigestFunction';
import type { ActionCacheUpdateCapabilities as _build_bazel_remote_execution_v2_ActionCacheUpdateCapabilities, ActionCacheUpdateCapabilities__Output as _build_bazel_remote_execution_v2_ActionCacheUpdateCapabilities__Output } from '../../../../../build/bazel/remote/execution/v2/ActionCacheUpdateCapabilities';
import type { PriorityCapabilities as _build_bazel_remote_execution_v2_PriorityCapabilities, PriorityCapabilities__Output as _build_bazel_remote_execution_v2_PriorityCapabilities__Output } from '../../../../../build/bazel/remote/execution/v2/PriorityCapabilities';
import type { _build_bazel_remote_execution_v2_SymlinkAbsolutePathStrategy_Value, _build_bazel_remote_execution_v2_SymlinkAbsolutePathStrategy_Value__Output } from '../../../../../build/bazel/remote/execution/v2/SymlinkAbsolutePathStrategy';
import type { _build_bazel_remote_execution_v2_Compressor_Value, _build_bazel_remote_execution_v2_Compressor_Value__Output } from '../../../../../build/bazel/remote/execution/v2/Compressor';
import type { FastCdc2020Params as _build_bazel_remote_execution_v2_FastCdc2020Params, FastCdc2020Params__Output as _build_bazel_remote_execution_v2_FastCdc2020Params__Output } from '../../../../../build/bazel/remote/execution/v2/FastCdc2020Params';
import type { RepMaxCdcParams as _build_bazel_remote_execution_v2_RepMaxCdcParams, RepMaxCdcParams__Output as _build_bazel_remote_execution_v2_RepMaxCdcParams__Output } from '../../../../../build/bazel/remote/execution/v2/RepMaxCdcParams';
import type { Long } from '@grpc/proto-loader';

export interface CacheCapabilities {
  'digest_functions'?: (_build_bazel_remote_execution_v2_DigestFunction_Value)[];
  'action_cache_update_capabilities'?: (_build_bazel_remote_execution_v2_ActionCacheUpdateCapabilities | null);
  'cache_priority_capabilities'?: (_build_bazel_remote_execution_v2_PriorityCapabilities | null);
  'max_batch_total_size_bytes'?: (number | string | Long);
  'symlink_absolute_path_strategy'?: (_build_bazel_remote_execution_v2_SymlinkAbsolutePathStrategy_Value);
  'supported_compressors'?: (_build_bazel_remote_execution_v2_Compressor_Value)[];
  'supported_batch_update_compressors'?: (_build_bazel_remote_execution_v2_Compressor_Value)[];
  'max_cas_blob_size_bytes'?: (number | string | Long);
  'split_blob_support'?: (boolean);
  'splice_blob_support'?: (boolean);
  'fast_cdc_2020_params'?: (_build_bazel_remote_execution_v2_FastCdc2020Params | null);
  'rep_max_cdc_params'?: (_build_bazel_remote_execution_v2_RepMaxCdcParams | null);
}

export interface CacheCapabilities__Output {
  'digest_functions': (_build_bazel_remote_execution_v2_DigestFunction_Value__Output)[];
  'action_cache_update_capabilities': (_build_bazel_remote_execution_v2_ActionCacheUpdateCapabilities__Output | null);
  'cache_priority_capabilities': (_build_bazel_remote_execution_v2_PriorityCapabilities__Output | null);
  'max_batch_total_size_bytes': (number);
  'symlink_absolute_path_strategy': (_build_bazel_remote_execution_v2_SymlinkAbsolutePathStrategy_Value__Output);
  'supported_compressors': (_build_bazel_remote_execution_v2_Compressor_Value__Output)[];
  'supported_batch_update_compressors': (_build_bazel_remote_execution_v2_Compressor_Value__Output)[];
  'max_cas_blob_size_bytes': (number);
  'split_blob_support': (boolean);
  'splice_blob_support': (boolean);
  'fast_cdc_2020_params': (_build_bazel_remote_execution_v2_FastCdc2020Params__Output | null);
  'rep_max_cdc_params': (_build_bazel_remote_execution_v2_RepMaxCdcParams__Output | null);
}
