// Original file: protos/build/bazel/remote/execution/v2/remote_execution.proto

import type { NodeProperty as _build_bazel_remote_execution_v2_NodeProperty, NodeProperty__Output as _build_bazel_remote_execution_v2_NodeProperty__Output } from '../../../../../build/bazel/remote/execution/v2/NodeProperty';
import type { Timestamp as _google_protobuf_Timestamp, Timestamp__Output as _google_protobuf_Timestamp__Output } from '../../../../../google/protobuf/Timestamp';
import type { UInt32Value as _google_protobuf_UInt32Value, UInt32Value__Output as _google_protobuf_UInt32Value__Output } from '../../../../../google/protobuf/UInt32Value';

export interface NodeProperties {
  'properties'?: (_build_bazel_remote_execution_v2_NodeProperty)[];
  'mtime'?: (_google_protobuf_Timestamp | null);
  'unix_mode'?: (_google_protobuf_UInt32Value | null);
}

export interface NodeProperties__Output {
  'properties': (_build_bazel_remote_execution_v2_NodeProperty__Output)[];
  'mtime': (_google_protobuf_Timestamp__Output | null);
  'unix_mode': (_google_protobuf_UInt32Value__Output | null);
}
