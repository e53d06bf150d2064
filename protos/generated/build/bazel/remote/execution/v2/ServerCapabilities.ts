// Original file: protos/build/bazel/remote/execution/v2/remote_execution.proto

import type { CacheCapabilities as _build_bazel_remote_execution_v2_CacheCapabilities, CacheCapabilities__Output as _build_bazel_remote_execution_v2_CacheCapabilities__Output } from '../../../../../build/bazel/remote/execution/v2/CacheCapabilities';
import type { ExecutionCapabilities as _build_bazel_remote_execution_v2_ExecutionCapabilities, ExecutionCapabilities__Output as _build_bazel_remote_execution_v2_ExecutionCapabilities__Output } from '../../../../../build/bazel/remote/execution/v2/ExecutionCapabilities';
import type { SemVer as _build_bazel_semver_SemVer, SemVer__Output as _build_bazel_semver_SemVer__Output } from '../../../../../build/bazel/semver/SemVer';

export interface ServerCapabilities {
  'cache_capabilities'?: (_build_bazel_remote_execution_v2_CacheCapabilities | null);
  'execution_capabilities'?: (_build_bazel_remote_execution_v2_ExecutionCapabilities | null);
  'deprecated_api_version'?: (_build_bazel_semver_SemVer | null);
  'low_api_version'?: (_build_bazel_semver_SemVer | null);
  'high_api_version'?: (_build_bazel_semver_SemVer | null);
}

export interface ServerCapabilities__Output {
  'cache_capabilities': (_build_bazel_remote_execution_v2_CacheCapabilities__Output | null);
  'execution_capabilities': (_build_bazel_remote_execution_v2_ExecutionCapabilities__Output | null);
  'deprecated_api_version': (_build_bazel_semver_SemVer__Output | null);
  'low_api_version': (_build_bazel_semver_SemVer__Output | null);
  'high_api_version': (_build_bazel_semver_SemVer__Output | null);
}
