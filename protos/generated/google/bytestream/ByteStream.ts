// Original file: protos/google/bytestream/bytestream.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { QueryWriteStatusRequest as _google_bytestream_QueryWriteStatusRequest, QueryWriteStatusRequest__Output as _google_bytestream_QueryWriteStatusRequest__Output } from '../../google/bytestream/QueryWriteStatusRequest';
import type { QueryWriteStatusResponse as _google_bytestream_QueryWriteStatusResponse, QueryWriteStatusResponse__Output as _google_bytestream_QueryWriteStatusResponse__Output } from '../../google/bytestream/QueryWriteStatusResponse';
import type { ReadRequest as _google_bytestream_ReadRequest, ReadRequest__Output as _google_bytestream_ReadRequest__Output } from '../../google/bytestream/ReadRequest';
import type { ReadResponse as _google_bytestream_ReadResponse, ReadResponse__Output as _google_bytestream_ReadResponse__Output } from '../../google/bytestream/ReadResponse';
import type { WriteRequest as _google_bytestream_WriteRequest, WriteRequest__Output as _google_bytestream_WriteRequest__Output } from '../../google/bytestream/WriteRequest';
import type { WriteResponse as _google_bytestream_WriteResponse, WriteResponse__Output as _google_bytestream_WriteResponse__Output } from '../../google/bytestream/WriteResponse';

export interface ByteStreamClient extends grpc.Client {
  QueryWriteStatus(argument: _google_bytestream_QueryWriteStatusRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_google_bytestream_QueryWriteStatusResponse__Output>): grpc.ClientUnaryCall;
  QueryWriteStatus(argument: _google_bytestream_QueryWriteStatusRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_google_bytestream_QueryWriteStatusResponse__Output>): grpc.ClientUnaryCall;
  QueryWriteStatus(argument: _google_bytestream_QueryWriteStatusRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_google_bytestream_QueryWriteStatusResponse__Output>): grpc.ClientUnaryCall;
  QueryWriteStatus(argument: _google_bytestream_QueryWriteStatusRequest, callback: grpc.requestCallback<_google_bytestream_QueryWriteStatusResponse__Output>): grpc.ClientUnaryCall;
  queryWriteStatus(argument: _google_bytestream_QueryWriteStatusRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_google_bytestream_QueryWriteStatusResponse__Output>): grpc.ClientUnaryCall;
  queryWriteStatus(argument: _google_bytestream_QueryWriteStatusRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_google_bytestream_QueryWriteStatusResponse__Output>): grpc.ClientUnaryCall;
  queryWriteStatus(argument: _google_bytestream_QueryWriteStatusRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_google_bytestream_QueryWriteStatusResponse__Output>): grpc.ClientUnaryCall;
  queryWriteStatus(argument: _google_bytestream_QueryWriteStatusRequest, callback: grpc.requestCallback<_google_bytestream_QueryWriteStatusResponse__Output>): grpc.ClientUnaryCall;
  
  Read(argument: _google_bytestream_ReadRequest, metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientReadableStream<_google_bytestream_ReadResponse__Output>;
  Read(argument: _google_bytestream_ReadRequest, options?: grpc.CallOptions): grpc.ClientReadableStream<_google_bytestream_ReadResponse__Output>;
  read(argument: _google_bytestream_ReadRequest, metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientReadableStream<_google_bytestream_ReadResponse__Output>;
  read(argument: _google_bytestream_ReadRequest, options?: grpc.CallOptions): grpc.ClientReadableStream<_google_bytestream_ReadResponse__Output>;
  
  Write(metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_google_bytestream_WriteResponse__Output>): grpc.ClientWritableStream<_google_bytestream_WriteRequest>;
  Write(metadata: grpc.Metadata, callback: grpc.requestCallback<_google_bytestream_WriteResponse__Output>): grpc.ClientWritableStream<_google_bytestream_WriteRequest>;
  Write(options: grpc.CallOptions, callback: grpc.requestCallback<_google_bytestream_WriteResponse__Output>): grpc.ClientWritableStream<_google_bytestream_WriteRequest>;
  Write(callback: grpc.requestCallback<_google_bytestream_WriteResponse__Output>): grpc.ClientWritableStream<_google_bytestream_WriteRequest>;
  write(metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_google_bytestream_WriteResponse__Output>): grpc.ClientWritableStream<_google_bytestream_WriteRequest>;
  write(metadata: grpc.Metadata, callback: grpc.requestCallback<_google_bytestream_WriteResponse__Output>): grpc.ClientWritableStream<_google_bytestream_WriteRequest>;
  write(options: grpc.CallOptions, callback: grpc.requestCallback<_google_bytestream_WriteResponse__Output>): grpc.ClientWritableStream<_google_bytestream_WriteRequest>;
  write(callback: grpc.requestCallback<_google_bytestream_WriteResponse__Output>): grpc.ClientWritableStream<_google_bytestream_WriteRequest>;
  
}

export interface ByteStreamHandlers extends grpc.UntypedServiceImplementation {
  QueryWriteStatus: grpc.handleUnaryCall<_google_bytestream_QueryWriteStatusRequest__Output, _google_bytestream_QueryWriteStatusResponse>;
  
  Read: grpc.handleServerStreamingCall<_google_bytestream_ReadRequest__Output, _google_bytestream_ReadResponse>;
  
  Write: grpc.handleClientStreamingCall<_google_bytestream_WriteRequest__Output, _google_bytestream_WriteResponse>;
  
}

export interface ByteStreamDefinition extends grpc.ServiceDefinition {
  QueryWriteStatus: MethodDefinition<_google_bytestream_QueryWriteStatusRequest, _google_bytestream_QueryWriteStatusResponse, _google_bytestream_QueryWriteStatusRequest__Output, _google_bytestream_QueryWriteStatusResponse__Output>
  Read: MethodDefinition<_google_bytestream_ReadRequest, _google_bytestream_ReadResponse, _google_bytestream_ReadRequest__Output, _google_bytestream_ReadResponse__Output>
  Write: MethodDefinition<_google_bytestream_WriteRequest, _google_bytestream_WriteResponse, _google_bytestream_WriteRequest__Output, _google_bytestream_WriteResponse__Output>
}
