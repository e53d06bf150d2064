// Original file: protos/build/bazel/remote/asset/v1/remote_asset.proto

import type { Qualifier as _build_bazel_remote_asset_v1_Qualifier, Qualifier__Output as _build_bazel_remote_asset_v1_Qualifier__Output } from '../../../../../build/bazel/remote/asset/v1/Qualifier';
import type { Timestamp as _google_protobuf_Timestamp, Timestamp__Output as _google_protobuf_Timestamp__Output } from '../../../../../google/protobuf/Timestamp';
import type { Digest as _build_bazel_remote_execution_v2_Digest, Digest__Output as _build_bazel_remote_execution_v2_Digest__Output } from '../../../../../build/bazel/remote/execution/v2/Digest';
import type { _build_bazel_remote_execution_v2_DigestFunction_Value, _build_bazel_remote_execution_v2_DigestFunction_Value__Output } from '../../../../../build/bazel/remote/execution/v2/DigestFunction';

export interface PushDirectoryRequest {
  'instance_name'?: (string);
  'uris'?: (string)[];
  'qualifiers'?: (_build_bazel_remote_asset_v1_Qualifier)[];
  'expire_at'?: (_google_protobuf_Timestamp | null);
  'root_directory_digest'?: (_build_bazel_remote_execution_v2_Digest | null);
  'references_blobs'?: (_build_bazel_remote_execution_v2_Digest)[];
  'references_directories'?: (_build_bazel_remote_execution_v2_Digest)[];
  'digest_function'?: (_build_bazel_remote_execution_v2_DigestFunction_Value);
}

export interface PushDirectoryRequest__Output {
  'instance_name': (string);
  'uris': (string)[];
  'qualifiers': (_build_bazel_remote_asset_v1_Qualifier__Output)[];
  'expire_at': (_google_protobuf_Timestamp__Output | null);
  'root_directory_digest': (_build_bazel_remote_execution_v2_Digest__Output | null);
  'references_blobs': (_build_bazel_remote_execution_v2_Digest__Output)[];
  'references_directories': (_build_bazel_remote_execution_v2_Digest__Output)[];
  'digest_function': (_build_bazel_remote_execution_v2_DigestFunction_Value__Output);
}
