// Original file: protos/build/bazel/remote/execution/v2/remote_execution.proto

import type { Timestamp as _google_protobuf_Timestamp, Timestamp__Output as _google_protobuf_Timestamp__Output } from '../../../../../google/protobuf/Timestamp';
import type { Any as _google_protobuf_Any, Any__Output as _google_protobuf_Any__Output } from '../../../../../google/protobuf/Any';
import type { Duration as _google_protobuf_Duration, Duration__Output as _google_protobuf_Duration__Output } from '../../../../../google/protobuf/Duration';

export interface ExecutedActionMetadata {
  'worker'?: (string);
  'queued_timestamp'?: (_google_protobuf_Timestamp | null);
  'worker_start_timestamp'?: (_google_protobuf_Timestamp | null);
  'worker_completed_timestamp'?: (_google_protobuf_Timestamp | null);
  'input_fetch_start_timestamp'?: (_google_protobuf_Timestamp | null);
  'input_fetch_completed_timestamp'?: (_google_protobuf_Timestamp | null);
  'execution_start_timestamp'?: (_google_protobuf_Timestamp | null);
  'execution_completed_timestamp'?: (_google_protobuf_Timestamp | null);
  'output_upload_start_timestamp'?: (_google_protobuf_Timestamp | null);
  'output_upload_completed_timestamp'?: (_google_protobuf_Timestamp | null);
  'auxiliary_metadata'?: (_google_protobuf_Any)[];
  'virtual_execution_duration'?: (_google_protobuf_Duration | null);
}

export interface ExecutedActionMetadata__Output {
  'worker': (string);
  'queued_timestamp': (_google_protobuf_Timestamp__Output | null);
  'worker_start_timestamp': (_google_protobuf_Timestamp__Output | null);
  'worker_completed_timestamp': (_google_protobuf_Timestamp__Output | null);
  'input_fetch_start_timestamp': (_google_protobuf_Timestamp__Output | null);
  'input_fetch_completed_timestamp': (_google_protobuf_Timestamp__Output | null);
  'execution_start_timestamp': (_google_protobuf_Timestamp__Output | null);
  'execution_completed_timestamp': (_google_protobuf_Timestamp__Output | null);
  'output_upload_start_timestamp': (_google_protobuf_Timestamp__Output | null);
  'output_upload_completed_timestamp': (_google_protobuf_Timestamp__Output | null);
  'auxiliary_metadata': (_google_protobuf_Any__Output)[];
  'virtual_execution_duration': (_google_protobuf_Duration__Output | null);
}
