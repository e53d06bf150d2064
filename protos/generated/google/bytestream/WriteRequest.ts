// Original file: protos/google/bytestream/bytestream.proto

import type { Long } from '@grpc/proto-loader';

export interface WriteRequest {
  'resource_name'?: (string);
  'write_offset'?: (number | string | Long);
  'finish_write'?: (boolean);
  'data'?: (Buffer | Uint8Array | string);
}

export interface WriteRequest__Output {
  'resource_name': (string);
  'write_offset': (number);
  'finish_write': (boolean);
  'data': (Buffer);
}
