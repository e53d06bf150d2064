// Original file: protos/google/bytestream/bytestream.proto


export interface QueryWriteStatusRequest {
  'resource_name'?: (string);
}

export interface QueryWriteStatusRequest__Output {
  'resource_name': (string);
}
