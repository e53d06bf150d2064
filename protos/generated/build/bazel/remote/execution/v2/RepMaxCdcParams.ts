// Original file: protos/build/bazel/remote/execution/v2/remote_execution.proto

import type { Long } from '@grpc/proto-loader';

export interface RepMaxCdcParams {
  'min_chunk_size_bytes'?: (number | string | Long);
  'horizon_size_bytes'?: (number | string | Long);
}

export interface RepMaxCdcParams__Output {
  'min_chunk_size_bytes': (number);
  'horizon_size_bytes': (number);
}
