// Original file: protos/google/bytestream/bytestream.proto

import type { Long } from '@grpc/proto-loader';

export interface WriteResponse {
  'committed_size'?: (number | string | Long);
}

export interface WriteResponse__Output {
  'committed_size': (number);
}
