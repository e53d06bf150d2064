import type * as grpc from '@grpc/grpc-js';
import type { MessageTypeDefinition } from '@grpc/proto-loader';

import type { ByteStreamClient as _google_bytestream_ByteStreamClient, ByteStreamDefinition as _google_bytestream_ByteStreamDefinition } from './google/bytestream/ByteStream';
import type { QueryWriteStatusRequest as _google_bytestream_QueryWriteStatusRequest, QueryWriteStatusRequest__Output as _google_bytestream_QueryWriteStatusRequest__Output } from './google/bytestream/QueryWriteStatusRequest';
import type { QueryWriteStatusResponse as _google_bytestream_QueryWriteStatusResponse, QueryWriteStatusResponse__Output as _google_bytestream_QueryWriteStatusResponse__Output } from './google/bytestream/QueryWriteStatusResponse';
import type { ReadRequest as _google_bytestream_ReadRequest, ReadRequest__Output as _google_bytestream_ReadRequest__Output } from './google/bytestream/ReadRequest';
import type { ReadResponse as _google_bytestream_ReadResponse, ReadResponse__Output as _google_bytestream_ReadResponse__Output } from './google/bytestream/ReadResponse';
import type { WriteRequest as _google_bytestream_WriteRequest, WriteRequest__Output as _google_bytestream_WriteRequest__Output } from './google/bytestream/WriteRequest';
import type { WriteResponse as _google_bytestream_WriteResponse, WriteResponse__Output as _google_bytestream_WriteResponse__Output } from './google/bytestream/WriteResponse';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  google: {
    bytestream: {
      ByteStream: SubtypeConstructor<typeof grpc.Client, _google_bytestream_ByteStreamClient> & { service: _google_bytestream_ByteStreamDefinition }
      QueryWriteStatusRequest: MessageTypeDefinition<_google_bytestream_QueryWriteStatusRequest, _google_bytestream_QueryWriteStatusRequest__Output>
      QueryWriteStatusResponse: MessageTypeDefinition<_google_bytestream_QueryWriteStatusResponse, _google_bytestream_QueryWriteStatusResponse__Output>
      ReadRequest: MessageTypeDefinition<_google_bytestream_ReadRequest, _google_bytestream_ReadRequest__Output>
      ReadResponse: MessageTypeDefinition<_google_bytestream_ReadResponse, _google_bytestream_ReadResponse__Output>
      WriteRequest: MessageTypeDefinition<_google_bytestream_WriteRequest, _google_bytestream_WriteRequest__Output>
      WriteResponse: MessageTypeDefinition<_google_bytestream_WriteResponse, _google_bytestream_WriteResponse__Output>
    }
  }
}

