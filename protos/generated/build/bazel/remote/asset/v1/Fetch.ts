// Original file: protos/build/bazel/remote/asset/v1/remote_asset.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { FetchBlobRequest as _build_bazel_remote_asset_v1_FetchBlobRequest, FetchBlobRequest__Output as _build_bazel_remote_asset_v1_FetchBlobRequest__Output } from '../../../../../build/bazel/remote/asset/v1/FetchBlobRequest';
import type { FetchBlobResponse as _build_bazel_remote_asset_v1_FetchBlobResponse, FetchBlobResponse__Output as _build_bazel_remote_asset_v1_FetchBlobResponse__Output } from '../../../../../build/bazel/remote/asset/v1/FetchBlobResponse';
import type { FetchDirectoryRequest as _build_bazel_remote_asset_v1_FetchDirectoryRequest, FetchDirectoryRequest__Output as _build_bazel_remote_asset_v1_FetchDirectoryRequest__Output } from '../../../../../build/bazel/remote/asset/v1/FetchDirectoryRequest';
import type { FetchDirectoryResponse as _build_bazel_remote_asset_v1_FetchDirectoryResponse, FetchDirectoryResponse__Output as _build_bazel_remote_asset_v1_FetchDirectoryResponse__Output } from '../../../../../build/bazel/remote/asset/v1/FetchDirectoryResponse';

export interface FetchClient extends grpc.Client {
  FetchBlob(argument: _build_bazel_remote_asset_v1_FetchBlobRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_build_bazel_remote_asset_v1_FetchBlobResponse__Output>): grpc.ClientUnaryCall;
  FetchBlob(argument: _build_bazel_remote_asset_v1_FetchBlobRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_build_bazel_remote_asset_v1_FetchBlobResponse__Output>): grpc.ClientUnaryCall;
  FetchBlob(argument: _build_bazel_remote_asset_v1_FetchBlobRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_build_bazel_remote_asset_v1_FetchBlobResponse__Output>): grpc.ClientUnaryCall;
  FetchBlob(argument: _build_bazel_remote_asset_v1_FetchBlobRequest, callback: grpc.requestCallback<_build_bazel_remote_asset_v1_FetchBlobResponse__Output>): grpc.ClientUnaryCall;
  fetchBlob(argument: _build_bazel_remote_asset_v1_FetchBlobRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_build_bazel_remote_asset_v1_FetchBlobResponse__Output>): grpc.ClientUnaryCall;
  fetchBlob(argument: _build_bazel_remote_asset_v1_FetchBlobRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_build_bazel_remote_asset_v1_FetchBlobResponse__Output>): grpc.ClientUnaryCall;
  fetchBlob(argument: _build_bazel_remote_asset_v1_FetchBlobRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_build_bazel_remote_asset_v1_FetchBlobResponse__Output>): grpc.ClientUnaryCall;
  fetchBlob(argument: _build_bazel_remote_asset_v1_FetchBlobRequest, callback: grpc.requestCallback<_build_bazel_remote_asset_v1_FetchBlobResponse__Output>): grpc.ClientUnaryCall;
  
  FetchDirectory(argument: _build_bazel_remote_asset_v1_FetchDirectoryRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_build_bazel_remote_asset_v1_FetchDirectoryResponse__Output>): grpc.ClientUnaryCall;
  FetchDirectory(argument: _build_bazel_remote_asset_v1_FetchDirectoryRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_build_bazel_remote_asset_v1_FetchDirectoryResponse__Output>): grpc.ClientUnaryCall;
  FetchDirectory(argument: _build_bazel_remote_asset_v1_FetchDirectoryRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_build_bazel_remote_asset_v1_FetchDirectoryResponse__Output>): grpc.ClientUnaryCall;
  FetchDirectory(argument: _build_bazel_remote_asset_v1_FetchDirectoryRequest, callback: grpc.requestCallback<_build_bazel_remote_asset_v1_FetchDirectoryResponse__Output>): grpc.ClientUnaryCall;
  fetchDirectory(argument: _build_bazel_remote_asset_v1_FetchDirectoryRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_build_bazel_remote_asset_v1_FetchDirectoryResponse__Output>): grpc.ClientUnaryCall;
  fetchDirectory(argument: _build_bazel_remote_asset_v1_FetchDirectoryRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_build_bazel_remote_asset_v1_FetchDirectoryResponse__Output>): grpc.ClientUnaryCall;
  fetchDirectory(argument: _build_bazel_remote_asset_v1_FetchDirectoryRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_build_bazel_remote_asset_v1_FetchDirectoryResponse__Output>): grpc.ClientUnaryCall;
  fetchDirectory(argument: _build_bazel_remote_asset_v1_FetchDirectoryRequest, callback: grpc.requestCallback<_build_bazel_remote_asset_v1_FetchDirectoryResponse__Output>): grpc.ClientUnaryCall;
  
}

export interface FetchHandlers extends grpc.UntypedServiceImplementation {
  FetchBlob: grpc.handleUnaryCall<_build_bazel_remote_asset_v1_FetchBlobRequest__Output, _build_bazel_remote_asset_v1_FetchBlobResponse>;
  
  FetchDirectory: grpc.handleUnaryCall<_build_bazel_remote_asset_v1_FetchDirectoryRequest__Output, _build_bazel_remote_asset_v1_FetchDirectoryResponse>;
  
}

export interface FetchDefinition extends grpc.ServiceDefinition {
  FetchBlob: MethodDefinition<_build_bazel_remote_asset_v1_FetchBlobRequest, _build_bazel_remote_asset_v1_FetchBlobResponse, _build_bazel_remote_asset_v1_FetchBlobRequest__Output, _build_bazel_remote_asset_v1_FetchBlobResponse__Output>
  FetchDirectory: MethodDefinition<_build_bazel_remote_asset_v1_FetchDirectoryRequest, _build_bazel_remote_asset_v1_FetchDirectoryResponse, _build_bazel_remote_asset_v1_FetchDirectoryRequest__Output, _build_bazel_remote_asset_v1_FetchDirectoryResponse__Output>
}
