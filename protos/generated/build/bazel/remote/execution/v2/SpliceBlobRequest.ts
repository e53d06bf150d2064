// Original file: protos/build/bazel/remote/execution/v2/remote_execution.proto

import type { Digest as _build_bazel_remote_execution_v2_Digest, Digest__Output as _build_bazel_remote_execution_v2_Digest__Output } from '../../../../../build/bazel/remote/execution/v2/Digest';
import type { _build_bazel_remote_execution_v2_DigestFunction_Value, _build_bazel_remote_execution_v2_DigestFunction_Value__Output } from '../../../../../build/bazel/remote/execution/v2/DigestFunction';
import type { _build_bazel_remote_execution_v2_ChunkingFunction_Value, _build_bazel_remote_execution_v2_ChunkingFunction_Value__Output } from '../../../../../build/bazel/remote/execution/v2/ChunkingFunction';

export interface SpliceBlobRequest {
  'instance_name'?: (string);
  'blob_digest'?: (_build_bazel_remote_execution_v2_Digest | null);
  'chunk_digests'?: (_build_bazel_remote_execution_v2_Digest)[];
  'digest_function'?: (_build_bazel_remote_execution_v2_DigestFunction_Value);
  'chunking_function'?: (_build_bazel_remote_execution_v2_ChunkingFunction_Value);
}

export interface SpliceBlobRequest__Output {
  'instance_name': (string);
  'blob_digest': (_build_bazel_remote_execution_v2_Digest__Output | null);
  'chunk_digests': (_build_bazel_remote_execution_v2_Digest__Output)[];
  'digest_function': (_build_bazel_remote_execution_v2_DigestFunction_Value__Output);
  'chunking_function': (_build_bazel_remote_execution_v2_ChunkingFunction_Value__Output);
}
