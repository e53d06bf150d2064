// Original file: protos/google/bytestream/bytestream.proto

import type { Long } from '@grpc/proto-loader';

export interface QueryWriteStatusResponse {
  'committed_size'?: (number | string | Long);
  'complete'?: (boolean);
}

export interface QueryWriteStatusResponse__Output {
  'committed_size': (number);
  'complete': (boolean);
}
