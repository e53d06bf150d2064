// Original file: protos/google/longrunning/operations.proto


export interface OperationInfo {
  'response_type'?: (string);
  'metadata_type'?: (string);
}

export interface OperationInfo__Output {
  'response_type': (string);
  'metadata_type': (string);
}
