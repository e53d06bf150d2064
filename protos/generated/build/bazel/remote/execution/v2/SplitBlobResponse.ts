// Original file: protos/build/bazel/remote/execution/v2/remote_execution.proto

import type { Digest as _build_bazel_remote_execution_v2_Digest, Digest__Output as _build_bazel_remote_execution_v2_Digest__Output } from '../../../../../build/bazel/remote/execution/v2/Digest';
import type { _build_bazel_remote_execution_v2_ChunkingFunction_Value, _build_bazel_remote_execution_v2_ChunkingFunction_Value__Output } from '../../../../../build/bazel/remote/execution/v2/ChunkingFunction';

export interface SplitBlobResponse {
  'chunk_digests'?: (_build_bazel_remote_execution_v2_Digest)[];
  'chunking_function'?: (_build_bazel_remote_execution_v2_ChunkingFunction_Value);
}

export interface SplitBlobResponse__Output {
  'chunk_digests': (_build_bazel_remote_execution_v2_Digest__Output)[];
  'chunking_function': (_build_bazel_remote_execution_v2_ChunkingFunction_Value__Output);
}
