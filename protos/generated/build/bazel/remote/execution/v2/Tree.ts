// Original file: protos/build/bazel/remote/execution/v2/remote_execution.proto

import type { Directory as _build_bazel_remote_execution_v2_Directory, Directory__Output as _build_bazel_remote_execution_v2_Directory__Output } from '../../../../../build/bazel/remote/execution/v2/Directory';

export interface Tree {
  'root'?: (_build_bazel_remote_execution_v2_Directory | null);
  'children'?: (_build_bazel_remote_execution_v2_Directory)[];
}

export interface Tree__Output {
  'root': (_build_bazel_remote_execution_v2_Directory__Output | null);
  'children': (_build_bazel_remote_execution_v2_Directory__Output)[];
}
