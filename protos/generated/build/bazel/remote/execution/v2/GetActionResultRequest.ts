// Original file: protos/build/bazel/remote/execution/v2/remote_execution.proto

import type { Digest as _build_bazel_remote_execution_v2_Digest, Digest__Output as _build_bazel_remote_execution_v2_Digest__Output } from '../../../../../build/bazel/remote/execution/v2/Digest';
import type { _build_bazel_remote_execution_v2_DigestFunction_Value, _build_bazel_remote_execution_v2_DigestFunction_Value__Output } from '../../../../../build/bazel/remote/execution/v2/DigestFunction';

export interface GetActionResultRequest {
  'instance_name'?: (string);
  'action_digest'?: (_build_bazel_remote_execution_v2_Digest | null);
  'inline_stdout'?: (boolean);
  'inline_stderr'?: (boolean);
  'inline_output_files'?: (string)[];
  'digest_function'?: (_build_bazel_remote_execution_v2_DigestFunction_Value);
}

export interface GetActionResultRequest__Output {
  'instance_name': (string);
  'action_digest': (_build_bazel_remote_execution_v2_Digest__Output | null);
  'inline_stdout': (boolean);
  'inline_stderr': (boolean);
  'inline_output_files': (string)[];
  'digest_function': (_build_bazel_remote_execution_v2_DigestFunction_Value__Output);
}
