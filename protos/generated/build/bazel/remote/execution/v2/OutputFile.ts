// Original file: protos/build/bazel/remote/execution/v2/remote_execution.proto

import type { Digest as _build_bazel_remote_execution_v2_Digest, Digest__Output as _build_bazel_remote_execution_v2_Digest__Output } from '../../../../../build/bazel/remote/execution/v2/Digest';
import type { NodeProperties as _build_bazel_remote_execution_v2_NodeProperties, NodeProperties__Output as _build_bazel_remote_execution_v2_NodeProperties__Output } from '../../../../../build/bazel/remote/execution/v2/NodeProperties';

export interface OutputFile {
  'path'?: (string);
  'digest'?: (_build_bazel_remote_execution_v2_Digest | null);
  'is_executable'?: (boolean);
  'contents'?: (Buffer | Uint8Array | string);
  'node_properties'?: (_build_bazel_remote_execution_v2_NodeProperties | null);
}

export interface OutputFile__Output {
  'path': (string);
  'digest': (_build_bazel_remote_execution_v2_Digest__Output | null);
  'is_executable': (boolean);
  'contents': (Buffer);
  'node_properties': (_build_bazel_remote_execution_v2_NodeProperties__Output | null);
}
