// Original file: protos/build/bazel/remote/asset/v1/remote_asset.proto

import type { Status as _google_rpc_Status, Status__Output as _google_rpc_Status__Output } from '../../../../../google/rpc/Status';
import type { Qualifier as _build_bazel_remote_asset_v1_Qualifier, Qualifier__Output as _build_bazel_remote_asset_v1_Qualifier__Output } from '../../../../../build/bazel/remote/asset/v1/Qualifier';
import type { Timestamp as _google_protobuf_Timestamp, Timestamp__Output as _google_protobuf_Timestamp__Output } from '../../../../../google/protobuf/Timestamp';
import type { Digest as _build_bazel_remote_execution_v2_Digest, Digest__Output as _build_bazel_remote_execution_v2_Digest__Output } from '../../../../../build/bazel/remote/execution/v2/Digest';
import type { _build_bazel_remote_execution_v2_DigestFunction_Value, _build_bazel_remote_execution_v2_DigestFunction_Value__Output } from '../../../../../build/bazel/remote/execution/v2/DigestFunction';

export interface FetchDirectoryResponse {
  'status'?: (_google_rpc_Status | null);
  'uri'?: (string);
  'qualifiers'?: (_build_bazel_remote_asset_v1_Qualifier)[];
  'expires_at'?: (_google_protobuf_Timestamp | null);
  'root_directory_digest'?: (_build_bazel_remote_execution_v2_Digest | null);
  'digest_function'?: (_build_bazel_remote_execution_v2_DigestFunction_Value);
}

export interface FetchDirectoryResponse__Output {
  'status': (_google_rpc_Status__Output | null);
  'uri': (string);
  'qualifiers': (_build_bazel_remote_asset_v1_Qualifier__Output)[];
  'expires_at': (_google_protobuf_Timestamp__Output | null);
  'root_directory_digest': (_build_bazel_remote_execution_v2_Digest__Output | null);
  'digest_function': (_build_bazel_remote_execution_v2_DigestFunction_Value__Output);
}
