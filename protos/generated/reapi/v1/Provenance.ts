// Original file: protos/reapi/v1/reapi.proto

import type { Long } from '@grpc/proto-loader';

export interface Provenance {
  'source'?: (string);
  'worker'?: (string);
  'verified'?: (boolean);
  'written_at_ms'?: (number | string | Long);
  'tool_invocation_id'?: (string);
}

export interface Provenance__Output {
  'source': (string);
  'worker': (string);
  'verified': (boolean);
  'written_at_ms': (number);
  'tool_invocation_id': (string);
}
