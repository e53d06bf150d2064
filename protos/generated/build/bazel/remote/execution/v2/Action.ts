// Original file: protos/build/bazel/remote/execution/v2/remote_execution.proto

import type { Digest as _build_bazel_remote_execution_v2_Digest, Digest__Output as _build_bazel_remote_execution_v2_Digest__Output } from '../../../../../build/bazel/remote/execution/v2/Digest';
import type { Duration as _google_protobuf_Duration, Duration__Output as _google_protobuf_Duration__Output } from '../../../../../google/protobuf/Duration';
import type { Platform as _build_bazel_remote_execution_v2_Platform, Platform__Output as _build_bazel_remote_execution_v2_Platform__Output } from '../../../../../build/bazel/remote/execution/v2/Platform';

export interface Action {
  'command_digest'?: (_build_bazel_remote_execution_v2_Digest | null);
  'input_root_digest'?: (_build_bazel_remote_execution_v2_Digest | null);
  'timeout'?: (_google_protobuf_Duration | null);
  'do_not_cache'?: (boolean);
  'salt'?: (Buffer | Uint8Array | string);
  'platform'?: (_build_bazel_remote_execution_v2_Platform | null);
}

export interface Action__Output {
  'command_digest': (_build_bazel_remote_execution_v2_Digest__Output | null);
  'input_root_digest': (_build_bazel_remote_execution_v2_Digest__Output | null);
  'timeout': (_google_protobuf_Duration__Output | null);
  'do_not_cache': (boolean);
  'salt': (Buffer);
  'platform': (_build_bazel_remote_execution_v2_Platform__Output | null);
}
