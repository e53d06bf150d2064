// Original file: protos/build/bazel/remote/execution/v2/remote_execution.proto

import type { Digest as _build_bazel_remote_execution_v2_Digest, Digest__Output as _build_bazel_remote_execution_v2_Digest__Output } from '../../../../../build/bazel/remote/execution/v2/Digest';
import type { ExecutionPolicy as _build_bazel_remote_execution_v2_ExecutionPolicy, ExecutionPolicy__Output as _build_bazel_remote_execution_v2_ExecutionPolicy__Output } from '../../../../../build/bazel/remote/execution/v2/ExecutionPolicy';
import type { ResultsCachePolicy as _build_bazel_remote_execution_v2_ResultsCachePolicy, ResultsCachePolicy__Output as _build_bazel_remote_execution_v2_ResultsCachePolicy__Output } from '../../../../../build/bazel/remote/execution/v2/ResultsCachePolicy';
import type { _build_bazel_remote_execution_v2_DigestFunction_Value, _build_bazel_remote_execution_v2_DigestFunction_Value__Output } from '../../../../../build/bazel/remote/execution/v2/DigestFunction';

export interface ExecuteRequest {
  'instance_name'?: (string);
  'skip_cache_lookup'?: (boolean);
  'action_digest'?: (_build_bazel_remote_execution_v2_Digest | null);
  'execution_policy'?: (_build_bazel_remote_execution_v2_ExecutionPolicy | null);
  'results_cache_policy'?: (_build_bazel_remote_execution_v2_ResultsCachePolicy | null);
  'digest_function'?: (_build_bazel_remote_execution_v2_DigestFunction_Value);
  'inline_stdout'?: (boolean);
  'inline_stderr'?: (boolean);
  'inline_output_files'?: (string)[];
}

export interface ExecuteRequest__Output {
  'instance_name': (string);
  'skip_cache_lookup': (boolean);
  'action_digest': (_build_bazel_remote_execution_v2_Digest__Output | null);
  'execution_policy': (_build_bazel_remote_execution_v2_ExecutionPolicy__Output | null);
  'results_cache_policy': (_build_bazel_remote_execution_v2_ResultsCachePolicy__Output | null);
  'digest_function': (_build_bazel_remote_execution_v2_DigestFunction_Value__Output);
  'inline_stdout': (boolean);
  'inline_stderr': (boolean);
  'inline_output_files': (string)[];
}
