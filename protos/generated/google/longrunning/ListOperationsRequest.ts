// Original file: protos/google/longrunning/operations.proto


export interface ListOperationsRequest {
  'filter'?: (string);
  'page_size'?: (number);
  'page_token'?: (string);
  'name'?: (string);
  'return_partial_success'?: (boolean);
}

export interface ListOperationsRequest__Output {
  'filter': (string);
  'page_size': (number);
  'page_token': (string);
  'name': (string);
  'return_partial_success': (boolean);
}
