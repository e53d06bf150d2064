// Original file: protos/build/bazel/remote/execution/v2/remote_execution.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { GetCapabilitiesRequest as _build_bazel_remote_execution_v2_GetCapabilitiesRequest, GetCapabilitiesRequest__Output as _build_bazel_remote_execution_v2_GetCapabilitiesRequest__Output } from '../../../../../build/bazel/remote/execution/v2/GetCapabilitiesRequest';
import type { ServerCapabilities as _build_bazel_remote_execution_v2_ServerCapabilities, ServerCapabilities__Output as _build_bazel_remote_execution_v2_ServerCapabilities__Output } from '../../../../../build/bazel/remote/execution/v2/ServerCapabilities';

export interface CapabilitiesClient extends grpc.Client {
  GetCapabilities(argument: _build_bazel_remote_execution_v2_GetCapabilitiesRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_build_bazel_remote_execution_v2_ServerCapabilities__Output>): grpc.ClientUnaryCall;
  GetCapabilities(argument: _build_bazel_remote_execution_v2_GetCapabilitiesRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_build_bazel_remote_execution_v2_ServerCapabilities__Output>): grpc.ClientUnaryCall;
  GetCapabilities(argument: _build_bazel_remote_execution_v2_GetCapabilitiesRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_build_bazel_remote_execution_v2_ServerCapabilities__Output>): grpc.ClientUnaryCall;
  GetCapabilities(argument: _build_bazel_remote_execution_v2_GetCapabilitiesRequest, callback: grpc.requestCallback<_build_bazel_remote_execution_v2_ServerCapabilities__Output>): grpc.ClientUnaryCall;
  getCapabilities(argument: _build_bazel_remote_execution_v2_GetCapabilitiesRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_build_bazel_remote_execution_v2_ServerCapabilities__Output>): grpc.ClientUnaryCall;
  getCapabilities(argument: _build_bazel_remote_execution_v2_GetCapabilitiesRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_build_bazel_remote_execution_v2_ServerCapabilities__Output>): grpc.ClientUnaryCall;
  getCapabilities(argument: _build_bazel_remote_execution_v2_GetCapabilitiesRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_build_bazel_remote_execution_v2_ServerCapabilities__Output>): grpc.ClientUnaryCall;
  getCapabilities(argument: _build_bazel_remote_execution_v2_GetCapabilitiesRequest, callback: grpc.requestCallback<_build_bazel_remote_execution_v2_ServerCapabilities__Output>): grpc.ClientUnaryCall;
  
}

export interface CapabilitiesHandlers extends grpc.UntypedServiceImplementation {
  GetCapabilities: grpc.handleUnaryCall<_build_bazel_remote_execution_v2_GetCapabilitiesRequest__Output, _build_bazel_remote_execution_v2_ServerCapabilities>;
  
}

export interface CapabilitiesDefinition extends grpc.ServiceDefinition {
  GetCapabilities: MethodDefinition<_build_bazel_remote_execution_v2_GetCapabilitiesRequest, _build_bazel_remote_execution_v2_ServerCapabilities, _build_bazel_remote_execution_v2_GetCapabilitiesRequest__Output, _build_bazel_remote_execution_v2_ServerCapabilities__Output>
}
