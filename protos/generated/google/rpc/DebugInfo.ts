// Original file: protos/google/rpc/error_details.proto


export interface DebugInfo {
  'stack_entries'?: (string)[];
  'detail'?: (string);
}

export interface DebugInfo__Output {
  'stack_entries': (string)[];
  'detail': (string);
}
