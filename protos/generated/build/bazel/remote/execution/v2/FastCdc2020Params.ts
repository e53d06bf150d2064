// Original file: protos/build/bazel/remote/execution/v2/remote_execution.proto

import type { Long } from '@grpc/proto-loader';

export interface FastCdc2020Params {
  'avg_chunk_size_bytes'?: (number | string | Long);
  'seed'?: (number);
}

export interface FastCdc2020Params__Output {
  'avg_chunk_size_bytes': (number);
  'seed': (number);
}
