// Original file: protos/build/bazel/remote/execution/v2/remote_execution.proto

import type { Digest as _build_bazel_remote_execution_v2_Digest, Digest__Output as _build_bazel_remote_execution_v2_Digest__Output } from '../../../../../build/bazel/remote/execution/v2/Digest';
import type { _build_bazel_remote_execution_v2_Compressor_Value, _build_bazel_remote_execution_v2_Compressor_Value__Output } from '../../../../../build/bazel/remote/execution/v2/Compressor';
import type { _build_bazel_remote_execution_v2_DigestFunction_Value, _build_bazel_remote_execution_v2_DigestFunction_Value__Output } from '../../../../../build/bazel/remote/execution/v2/DigestFunction';

export interface BatchReadBlobsRequest {
  'instance_name'?: (string);
  'digests'?: (_build_bazel_remote_execution_v2_Digest)[];
  'acceptable_compressors'?: (_build_bazel_remote_execution_v2_Compressor_Value)[];
  'digest_function'?: (_build_bazel_remote_execution_v2_DigestFunction_Value);
}

export interface BatchReadBlobsRequest__Output {
  'instance_name': (string);
  'digests': (_build_bazel_remote_execution_v2_Digest__Output)[];
  'acceptable_compressors': (_build_bazel_remote_execution_v2_Compressor_Value__Output)[];
  'digest_function': (_build_bazel_remote_execution_v2_DigestFunction_Value__Output);
}
