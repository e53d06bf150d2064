// Original file: protos/build/bazel/remote/execution/v2/remote_execution.proto

import type { Directory as _build_bazel_remote_execution_v2_Directory, Directory__Output as _build_bazel_remote_execution_v2_Directory__Output } from '../../../../../build/bazel/remote/execution/v2/Directory';

export interface GetTreeResponse {
  'directories'?: (_build_bazel_remote_execution_v2_Directory)[];
  'next_page_token'?: (string);
}

export interface GetTreeResponse__Output {
  'directories': (_build_bazel_remote_execution_v2_Directory__Output)[];
  'next_page_token': (string);
}
