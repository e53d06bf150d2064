// Original file: protos/google/longrunning/operations.proto

import type { Operation as _google_longrunning_Operation, Operation__Output as _google_longrunning_Operation__Output } from '../../google/longrunning/Operation';

export interface ListOperationsResponse {
  'operations'?: (_google_longrunning_Operation)[];
  'next_page_token'?: (string);
  'unreachable'?: (string)[];
}

export interface ListOperationsResponse__Output {
  'operations': (_google_longrunning_Operation__Output)[];
  'next_page_token': (string);
  'unreachable': (string)[];
}
