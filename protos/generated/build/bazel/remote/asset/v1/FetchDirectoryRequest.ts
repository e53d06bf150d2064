// Original file: protos/build/bazel/remote/asset/v1/remote_asset.proto

import type { Duration as _google_protobuf_Duration, Duration__Output as _google_protobuf_Duration__Output } from '../../../../../google/protobuf/Duration';
import type { Timestamp as _google_protobuf_Timestamp, Timestamp__Output as _google_protobuf_Timestamp__Output } from '../../../../../google/protobuf/Timestamp';
import type { Qualifier as _build_bazel_remote_asset_v1_Qualifier, Qualifier__Output as _build_bazel_remote_asset_v1_Qualifier__Output } from '../../../../../build/bazel/remote/asset/v1/Qualifier';
import type { _build_bazel_remote_execution_v2_DigestFunction_Value, _build_bazel_remote_execution_v2_DigestFunction_Value__Output } from '../../../../../build/bazel/remote/execution/v2/DigestFunction';

export interface FetchDirectoryRequest {
  'instance_name'?: (string);
  'timeout'?: (_google_protobuf_Duration | null);
  'oldest_content_accepted'?: (_google_protobuf_Timestamp | null);
  'uris'?: (string)[];
  'qualifiers'?: (_build_bazel_remote_asset_v1_Qualifier)[];
  'digest_function'?: (_build_bazel_remote_execution_v2_DigestFunction_Value);
}

export interface FetchDirectoryRequest__Output {
  'instance_name': (string);
  'timeout': (_google_protobuf_Duration__Output | null);
  'oldest_content_accepted': (_google_protobuf_Timestamp__Output | null);
  'uris': (string)[];
  'qualifiers': (_build_bazel_remote_asset_v1_Qualifier__Output)[];
  'digest_function': (_build_bazel_remote_execution_v2_DigestFunction_Value__Output);
}
